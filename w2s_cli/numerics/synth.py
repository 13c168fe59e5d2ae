"""`w2s synth`: the ridgeless W2S experiment on synthetic Gaussian data, by Monte Carlo, against the theory.

Generator (docs/theory.md): x ~ N(0, I_D); V_s = span(U_s), V_w = span(U_w) share `shared` directions; the
rest of V_w is drawn at random (orthogonal to the shared ones) or orthogonal to V_s. f*(x) = x^T b with b a
unit vector in the shared directions (b = 0 when nothing is shared); y = f*(x) + sigma z.
teacher = pinv(X_l U_w) y_l; student = pinv(X_u U_s)(X_u U_w theta_w); strong SFT = pinv(X_l U_s) y_l;
ceiling = pinv([X_l; X_u] U_s) [y_l; y_u]; excess risk ER(f) = ||U theta - b||^2.

Trials are vectorised: only the coordinates of x in span(U_s, U_w) (r <= d_s + d_w dimensions) matter, so
each chunk of trials draws (trials, samples, r) Gaussians and solves all least-squares problems in one
batched pseudo-inverse.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from w2s_cli.errors import W2SError
from w2s_cli.numerics import theory
from w2s_cli.numerics.stats import MODELS, ratio

CHUNK_ELEMENTS = 4_000_000  # float64 entries of Gaussian draws per chunk (~32 MB)


@dataclass(frozen=True)
class SynthConfig:
    ambient: int = 50
    d_s: int = 8
    d_w: int = 24
    shared: int = 3
    n_labeled: int = 90
    n_pseudo: int = 300
    sigma: float = 0.7
    trials: int = 2000
    seed: int = 0
    rest: str = "random"  # "random" | "orthogonal"

    def check(self) -> None:
        if min(self.ambient, self.d_s, self.d_w) <= 0:
            raise W2SError("--ambient, --d-s and --d-w must be positive")
        if not 0 <= self.shared <= min(self.d_s, self.d_w):
            raise W2SError(f"--shared must be in [0, min(d_s, d_w)] = [0, {min(self.d_s, self.d_w)}]")
        if self.rest not in ("random", "orthogonal"):
            raise W2SError(f"--rest must be random or orthogonal, not '{self.rest}'")
        need = self.d_s + self.d_w - self.shared if self.rest == "orthogonal" else max(self.d_s, self.d_w)
        if self.ambient < need:
            raise W2SError(f"--ambient {self.ambient} is too small: the subspaces need {need} dimensions")
        if self.trials < 2:
            raise W2SError("--trials must be at least 2 (standard errors need two)")
        if self.sigma < 0:
            raise W2SError("--sigma must be non-negative")


def make_subspaces(cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal U_s (D, d_s), U_w (D, d_w) sharing `shared` directions, and b in V_s ∩ V_w (unit or 0)."""
    D, k = cfg.ambient, cfg.shared
    U_s = np.linalg.qr(rng.normal(size=(D, cfg.d_s)))[0]
    shared = U_s[:, :k]
    if cfg.rest == "orthogonal":
        against = U_s  # the rest of V_w avoids all of V_s
    else:
        against = shared  # the rest of V_w is random apart from the shared directions
    rest = rng.normal(size=(D, cfg.d_w - k))
    rest -= against @ (against.T @ rest)
    rest = np.linalg.qr(rest)[0] if cfg.d_w > k else rest
    U_w = np.concatenate([shared, rest], axis=1)
    b = shared.sum(axis=1) / math.sqrt(k) if k > 0 else np.zeros(D)
    return U_s, U_w, b


def _batched_min_norm(F: np.ndarray, y: np.ndarray) -> np.ndarray:
    """theta = pinv(F) y for a batch: F (T, m, d), y (T, m) -> (T, d).

    With more rows than columns (always, inside the formulas' domain) the Gaussian design has full column
    rank and pinv(F) y solves the normal equations, batched through BLAS; otherwise a batched SVD pinv.
    """
    m, d = F.shape[1], F.shape[2]
    if m > d:
        Ft = np.swapaxes(F, 1, 2)
        return np.linalg.solve(Ft @ F, (Ft @ y[..., None]))[..., 0]
    return np.einsum("tdm,tm->td", np.linalg.pinv(F), y)


def _wishart_factor(T: int, dof: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """Bartlett: lower-triangular L (T, r, r) with L L^T ~ Wishart(dof, I_r), i.e. the law of G^T G for
    G (dof, r) with i.i.d. N(0, 1) entries. Needs dof >= r."""
    L = np.zeros((T, r, r))
    rows, cols = np.tril_indices(r, k=-1)
    L[:, rows, cols] = rng.normal(size=(T, len(rows)))
    idx = np.arange(r)
    L[:, idx, idx] = np.sqrt(rng.chisquare(dof - idx, size=(T, r)))
    return L


def _solve(A: np.ndarray, W: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """theta = (A^T W A)^{-1} rhs for a batch of Gram matrices W (T, r, r); rhs (T, d)."""
    return np.linalg.solve(A.T @ W @ A, rhs[..., None])[..., 0]


def _chunk_sufficient(cfg, A_s, A_w, b_q, T, rng) -> dict[str, np.ndarray]:
    """One chunk of trials through the sufficient statistics (exact in law, far fewer random draws).

    Least squares on G A (G: m x r Gaussian) only sees W = G^T G ~ Wishart(m, I_r) and, for y = G b + s z,
    G^T y = W b + s G^T z with G^T z | G ~ N(0, W), i.e. W b + s L xi for W = L L^T.
    """
    r = A_s.shape[0]
    L_l = _wishart_factor(T, cfg.n_labeled, r, rng)
    L_u = _wishart_factor(T, cfg.n_pseudo, r, rng)
    W_l, W_u = L_l @ np.swapaxes(L_l, 1, 2), L_u @ np.swapaxes(L_u, 1, 2)
    g_l = W_l @ b_q + cfg.sigma * (L_l @ rng.normal(size=(T, r, 1)))[..., 0]  # G_l^T y_l
    g_u = W_u @ b_q + cfg.sigma * (L_u @ rng.normal(size=(T, r, 1)))[..., 0]  # G_u^T y_u
    theta_w = _solve(A_w, W_l, g_l @ A_w)
    student_rhs = (W_u @ (theta_w @ A_w.T)[..., None])[..., 0] @ A_s  # (G_u A_s)^T (G_u A_w theta_w)
    return {
        "weak": theta_w,
        "w2s": _solve(A_s, W_u, student_rhs),
        "strong_sft": _solve(A_s, W_l, g_l @ A_s),
        "ceiling": _solve(A_s, W_l + W_u, (g_l + g_u) @ A_s),
    }


def _chunk_gaussian(cfg, A_s, A_w, b_q, T, rng) -> dict[str, np.ndarray]:
    """One chunk of trials from the Gaussian design itself (used when n or N is below r)."""
    n, N, r = cfg.n_labeled, cfg.n_pseudo, A_s.shape[0]
    G_l = rng.normal(size=(T, n, r))  # coordinates of x in span(U_s, U_w): i.i.d. N(0, 1)
    G_u = rng.normal(size=(T, N, r))
    y_l = G_l @ b_q + cfg.sigma * rng.normal(size=(T, n))
    y_u = G_u @ b_q + cfg.sigma * rng.normal(size=(T, N))
    theta_w = _batched_min_norm(G_l @ A_w, y_l)
    F_u = G_u @ A_s
    return {
        "weak": theta_w,
        "w2s": _batched_min_norm(F_u, np.einsum("tmd,td->tm", G_u @ A_w, theta_w)),
        "strong_sft": _batched_min_norm(G_l @ A_s, y_l),
        "ceiling": _batched_min_norm(np.concatenate([G_l @ A_s, F_u], axis=1), np.concatenate([y_l, y_u], axis=1)),
    }


def simulate(cfg: SynthConfig, method: str = "auto") -> dict[str, np.ndarray]:
    """Per-trial excess risks of the four models, and d_sw of the drawn subspaces.

    method: "sufficient" (Wishart statistics), "gaussian" (the design matrices), or "auto" (sufficient
    whenever n and N are at least r = dim span(U_s, U_w)).
    """
    cfg.check()
    U_s, U_w, b = make_subspaces(cfg, np.random.default_rng(cfg.seed))
    rng = np.random.default_rng([cfg.seed, 1])  # the data, drawn apart from the subspaces
    Q = np.linalg.qr(np.concatenate([U_s, U_w], axis=1))[0]  # basis of span(U_s, U_w); b lies in it
    r = Q.shape[1]
    A_s, A_w, b_q = Q.T @ U_s, Q.T @ U_w, Q.T @ b
    if method == "auto":
        method = "sufficient" if min(cfg.n_labeled, cfg.n_pseudo) >= r else "gaussian"
    chunk_fn = _chunk_sufficient if method == "sufficient" else _chunk_gaussian
    per_trial = r * r if method == "sufficient" else (cfg.n_labeled + cfg.n_pseudo) * r
    chunk = max(1, CHUNK_ELEMENTS // per_trial)
    er = {k: np.empty(cfg.trials) for k in MODELS}
    for start in range(0, cfg.trials, chunk):
        T = min(chunk, cfg.trials - start)
        thetas = chunk_fn(cfg, A_s, A_w, b_q, T, rng)
        for name, theta in thetas.items():
            A = A_w if name == "weak" else A_s
            er[name][start : start + T] = ((theta @ A.T - b_q) ** 2).sum(axis=1)
    er["d_sw"] = np.array(float(np.linalg.norm(U_s.T @ U_w) ** 2))
    return er


def run_synth(cfg: SynthConfig) -> dict[str, Any]:
    """Measured (mean, stderr) vs predicted ER of the four models, PGR and OPR."""
    sim = simulate(cfg)
    d_sw_drawn = float(sim["d_sw"])
    n, N, s2 = cfg.n_labeled, cfg.n_pseudo, cfg.sigma**2
    predicted = theory.predict(cfg.d_s, cfg.d_w, d_sw_drawn, n, N, s2, exact=True)
    asymptotic = theory.predict(cfg.d_s, cfg.d_w, d_sw_drawn, n, N, s2, exact=False)
    measured = {k: float(sim[k].mean()) for k in MODELS}
    stderr = {k: float(sim[k].std(ddof=1) / math.sqrt(cfg.trials)) for k in MODELS}
    measured["pgr"], stderr["pgr"] = ratio(sim["weak"] - sim["w2s"], sim["weak"] - sim["ceiling"])
    measured["opr"], stderr["opr"] = ratio(sim["strong_sft"], sim["w2s"])
    return {
        "config": asdict(cfg),
        "d_sw": d_sw_drawn,
        "measured": measured,
        "stderr": stderr,
        "predicted": predicted,
        "asymptotic": asymptotic,
        "limits": theory.limits(cfg.d_s, cfg.d_w, d_sw_drawn),
    }


SWEEPS = {"n-pseudo": "n_pseudo", "n-labeled": "n_labeled", "sigma": "sigma", "shared": "shared"}


def default_values(cfg: SynthConfig, sweep: str) -> list[float]:
    """A range inside the formulas' domain for each swept quantity."""
    if sweep == "n-pseudo":
        lo = cfg.d_s + 4
        return sorted({int(round(v)) for v in np.geomspace(lo, max(40 * cfg.d_s, lo + 10), 12)})
    if sweep == "n-labeled":
        lo = max(cfg.d_s, cfg.d_w) + 6
        return sorted({int(round(v)) for v in np.geomspace(lo, max(10 * lo, lo + 10), 10)})
    if sweep == "sigma":
        return [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
    if sweep == "shared":
        return list(range(0, min(cfg.d_s, cfg.d_w) + 1))
    raise W2SError(f"--sweep must be one of {', '.join(SWEEPS)}, not '{sweep}'")


def run_sweep(cfg: SynthConfig, sweep: str, values: list[float] | None = None) -> list[dict[str, Any]]:
    if sweep not in SWEEPS:
        raise W2SError(f"--sweep must be one of {', '.join(SWEEPS)}, not '{sweep}'")
    field = SWEEPS[sweep]
    values = values if values else default_values(cfg, sweep)
    rows = []
    for v in values:
        v = float(v) if field == "sigma" else int(v)
        point = SynthConfig(**{**asdict(cfg), field: v})  # same seed: same subspaces, common random numbers
        rows.append({"value": v, **run_synth(point)})
    return rows
