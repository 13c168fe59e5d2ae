"""Closed-form W2S predictions (variance term, Gaussian design) from d_s, d_w, d_sw, n, N and sigma^2.

Exact in expectation (inverse-Wishart means; needs n > d_w + 1, n > d_s + 1, N > d_s + 1):
    ER_w   = s2 d_w / (n - d_w - 1)
    ER_s   = s2 d_s / (n - d_s - 1)
    ER_c   = s2 d_s / (n + N - d_s - 1)
    ER_w2s = s2 / (n - d_w - 1) * [d_sw + d_s / (N - d_s - 1) * (d_w - d_sw)]
Asymptotic (n >> d_w, N >> d_s): replace n - d - 1 by n, N - d_s - 1 by N.
The student inherits the teacher's error inside V_s ∩ V_w (d_sw) and keeps a d_s / N share of the rest.
See docs/theory.md for the derivation.
"""

from __future__ import annotations

from w2s_cli.errors import W2SError
from w2s_cli.numerics.stats import opr as _opr
from w2s_cli.numerics.stats import pgr as _pgr


def check_inputs(d_s: float, d_w: float, d_sw: float, n: int, N: int, exact: bool = True) -> None:
    """Refuse inputs outside the formulas' domain, with the reason."""
    if d_s <= 0 or d_w <= 0:
        raise W2SError(f"d_s and d_w must be positive (got d_s={d_s}, d_w={d_w})")
    if not -1e-9 <= d_sw <= min(d_s, d_w) + 1e-9:
        raise W2SError(f"d_sw must lie in [0, min(d_s, d_w)] = [0, {min(d_s, d_w)}], got {d_sw}")
    if exact:
        if n <= d_w + 1:
            raise W2SError(f"exact prediction needs n > d_w + 1 (n={n}, d_w={d_w})")
        if n <= d_s + 1:
            raise W2SError(f"exact prediction needs n > d_s + 1 (n={n}, d_s={d_s})")
        if N <= d_s + 1:
            raise W2SError(f"exact prediction needs N > d_s + 1 (N={N}, d_s={d_s})")
    elif n <= max(d_w, d_s) or N <= d_s:
        raise W2SError(
            f"the asymptotic form needs n > d_w, n > d_s and N > d_s (n={n}, N={N}, d_w={d_w}, d_s={d_s}): "
            "at or past the interpolation threshold it does not apply"
        )


def excess_risks(
    d_s: float, d_w: float, d_sw: float, n: int, N: int, sigma2: float = 1.0, exact: bool = True
) -> dict[str, float]:
    """Predicted excess risk of the weak teacher, W2S student, strong SFT and strong ceiling."""
    check_inputs(d_s, d_w, d_sw, n, N, exact)
    shift = 1 if exact else 0
    gap_w = n - (d_w + 1) * shift
    gap_s = n - (d_s + 1) * shift
    gap_student = N - (d_s + 1) * shift
    return {
        "weak": sigma2 * d_w / gap_w,
        "w2s": sigma2 / gap_w * (d_sw + d_s / gap_student * (d_w - d_sw)),
        "strong_sft": sigma2 * d_s / gap_s,
        "ceiling": sigma2 * d_s / (n + N - (d_s + 1) * shift),
    }


def predict(
    d_s: float, d_w: float, d_sw: float, n: int, N: int, sigma2: float = 1.0, exact: bool = True
) -> dict[str, float | None]:
    """Excess risks plus PGR = (ER_w - ER_w2s)/(ER_w - ER_c) and OPR = ER_s/ER_w2s."""
    er = excess_risks(d_s, d_w, d_sw, n, N, sigma2, exact)
    return {**er, "pgr": _pgr(er["weak"], er["w2s"], er["ceiling"]), "opr": _opr(er["strong_sft"], er["w2s"])}


def limits(d_s: float, d_w: float, d_sw: float) -> dict[str, float | None]:
    """N -> infinity (and n >> d): PGR -> 1 - d_sw/d_w, OPR -> d_s/d_sw; W2S beats the teacher iff N > 2 d_s + 1."""
    return {
        "pgr": 1.0 - d_sw / d_w,
        "opr": d_s / d_sw if d_sw > 0 else None,
        "n_pseudo_threshold": 2 * d_s + 1,
    }


def coefficients(d_s: float, d_w: float, d_sw: float, n: int, N: int) -> dict[str, float]:
    """The paper's variance coefficients (excess risk per unit noise variance) of the four fits."""
    return excess_risks(d_s, d_w, d_sw, n, N, 1.0, exact=True)
