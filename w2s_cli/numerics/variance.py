"""What the variance law explains on real embeddings: exact-design variance of the four linear fits,
label-light (leave-one-out) predictions of their test errors, and the bias-variance decomposition of the
measured ones. docs/theory.md ("Exact-design variance", "Bias") gives the formulas.

Every fit here is least squares with an intercept on the coordinates of a shared basis, so its test outputs
are H y for a matrix H built from the embeddings alone; everything below comes from (p x p) moment
matrices, never from the (n_test x N) or (N x n) maps themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from w2s_cli.numerics.moments import Moments
from w2s_cli.numerics.solvers import LinearFit


def sub(m: Moments, s: slice) -> Moments:
    return Moments(m.count, m.mean[s], m.cross[s, s])


def variance_coefficient(fit: LinearFit, test: Moments) -> float:
    """Mean over test rows of ||h(x)||^2, the output variance per unit noise variance on the training labels:
    1/rows + tr(G^+ E_test[(z - z_train)(z - z_train)^T])."""
    mu = test.mean - fit.x_mean
    second = test.cross / test.count + np.outer(mu, mu)
    return 1.0 / fit.rows + float(np.sum(fit.gram_pinv * second))


@dataclass
class Ensemble:
    """Several ridgeless teachers, each on its own block of the weak coordinates of the same n labelled rows,
    combined with fixed weights summing to one: f(z) = sum_k w_k f_k(z_k).

    Its output is linear in the shared labels, h(x) = (1/n) 1 + sum_k w_k Zc_k G_k^+ u_k(x) (u_k = z_k less
    its mean over the n rows; the cross terms with 1 vanish), so ||h(x)||^2 = 1/n + u(x)^T Q u(x) with
    Q = B C B, B = blockdiag(w_k G_k^+) and C the centred scatter of all weak coordinates over the n rows:
    Q, the stacked means and the stacked weighted coefficients stand in for one fit's gram_pinv, x_mean and
    coef wherever the variance law reads them (one teacher: Q = G^+ G G^+ = G^+).
    """

    members: list[LinearFit]
    weights: np.ndarray
    blocks: list[slice]
    scatter: np.ndarray  # (d_w, d_w)

    def __post_init__(self) -> None:
        if abs(float(np.sum(self.weights)) - 1.0) > 1e-9:
            raise ValueError("an ensemble's weights sum to one")

    @property
    def rows(self) -> int:
        return self.members[0].rows

    @property
    def x_mean(self) -> np.ndarray:
        return np.concatenate([f.x_mean for f in self.members])

    @property
    def y_mean(self) -> np.ndarray:
        return sum(w * f.y_mean for w, f in zip(self.weights, self.members, strict=False))

    @property
    def coef(self) -> np.ndarray:
        return np.vstack([w * f.coef for w, f in zip(self.weights, self.members, strict=False)])

    @cached_property
    def gram_pinv(self) -> np.ndarray:
        d = self.scatter.shape[0]
        B = np.zeros((d, d))
        for w, f, b in zip(self.weights, self.members, self.blocks, strict=False):
            B[b, b] = w * f.gram_pinv
        return B @ self.scatter @ B

    @property
    def rank(self) -> int:
        return sum(f.rank for f in self.members)

    @property
    def ill_determined(self) -> bool:
        return any(f.ill_determined for f in self.members)

    def predict(self, Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z, np.float64)
        return sum(w * f.predict(Z[:, b]) for w, f, b in zip(self.weights, self.members, self.blocks, strict=False))

    def sigma2(self) -> float | None:
        """The noise variance of the shared labels: the least biased (smallest) member estimate."""
        found = [s for s in (f.sigma2() for f in self.members) if s is not None]
        return min(found) if found else None

    def near_interpolation(self) -> bool:
        return any(f.near_interpolation() for f in self.members)

    def record(self) -> dict:
        return {
            "rows": self.rows,
            "rank": self.rank,
            "condition_number": max(f.condition_number for f in self.members),
            "ill_determined": self.ill_determined,
            "solved_from": "moments",
        }

    def parts(self) -> list[tuple[float, LinearFit, slice]]:
        return list(zip(self.weights, self.members, self.blocks, strict=False))


@dataclass
class W2SMap:
    """The W2S student as a function of the teacher's training labels.

    The student regresses the teacher's outputs on the strong coordinates over the pseudo rows P, so its
    output is y_mean_L + a(x)^T theta_w with a(x) = delta + M (z_s - mean_s,P), M = C_ws,P G_s,P^+ and
    delta = mean_w,P - mean_w,L: linear in the teacher's labels through theta_w.
    """

    teacher: LinearFit
    student: LinearFit
    M: np.ndarray  # (d_w, d_s)
    delta: np.ndarray  # (d_w,)

    @classmethod
    def build(cls, teacher: LinearFit, student: LinearFit, cross_ws_P: np.ndarray, mean_w_P: np.ndarray) -> W2SMap:
        return cls(teacher, student, cross_ws_P @ student.gram_pinv, mean_w_P - teacher.x_mean)

    def a(self, Z_s: np.ndarray) -> np.ndarray:
        return self.delta + (np.asarray(Z_s, np.float64) - self.student.x_mean) @ self.M.T

    def variance_coefficient(self, test_s: Moments) -> float:
        mu = self.delta + self.M @ (test_s.mean - self.student.x_mean)
        second = np.outer(mu, mu) + self.M @ (test_s.cross / test_s.count) @ self.M.T
        return 1.0 / self.teacher.rows + float(np.sum(self.teacher.gram_pinv * second))


def loo_residuals(fit: LinearFit, Z: np.ndarray, Y: np.ndarray) -> np.ndarray | None:
    """Leave-one-out residuals y_i - f^(-i)(x_i) = r_i / (1 - h_ii) of a fit on its own training rows
    (exact for least squares); None when a row has leverage ~1 (the fit interpolates)."""
    Zc = np.asarray(Z, np.float64) - fit.x_mean
    h = 1.0 / fit.rows + np.einsum("ij,jk,ik->i", Zc, fit.gram_pinv, Zc)
    if h.max() > 1 - 1e-6:
        return None
    return (np.asarray(Y, np.float64) - fit.predict(Z)) / (1.0 - h)[:, None]


def w2s_loo_residuals(w2s: W2SMap, Z_w: np.ndarray, Z_s: np.ndarray, Y: np.ndarray) -> np.ndarray | None:
    """y_i - f_w2s^(-i)(x_i) on the teacher's n labelled rows, where f_w2s^(-i) is the student of a teacher
    fitted without row i (exact: the student never trains on these rows, and it is linear in the teacher;
    an Ensemble teacher: each member refitted without row i, its shift weighted)."""
    t = w2s.teacher
    parts = t.parts() if isinstance(t, Ensemble) else [(None, t, slice(None))]
    A = w2s.a(Z_s)
    out = Y - w2s.student.predict(Z_s)
    for w, fit, b in parts:
        Zb = np.asarray(Z_w, np.float64)[:, b]
        Wc = Zb - fit.x_mean
        h = 1.0 / fit.rows + np.einsum("ij,jk,ik->i", Wc, fit.gram_pinv, Wc)
        if h.max() > 1 - 1e-6:
            return None
        r = np.asarray(Y, np.float64) - fit.predict(Zb)
        c = 1.0 / fit.rows + np.einsum("ij,jk,ik->i", A[:, b], fit.gram_pinv, Wc)
        shift = (c / (1.0 - h))[:, None] * r
        out = out + (shift if w is None else w * shift)
    return out


@dataclass
class LabelNoise:
    """Training labels flipped at `rate` to another class (classification, C classes) or perturbed by
    Gaussian noise of std `rate` (regression); test labels are clean."""

    rate: float
    n_classes: int | None

    def clean_error(self, sq: np.ndarray, Y_noisy: np.ndarray, f: np.ndarray) -> float:
        """Unbiased estimate of mean ||t - f||^2 / C from noisy labels y and predictions f independent of
        each row's own noise (leave-one-out): E||y - f||^2 - ||t - f||^2 = 2(1 - a) t.f - 2 b sum(f),
        with E[y | t] = a t + b 1, and t.f estimated by (y.f - b sum f) / a."""
        if self.rate == 0:
            return float(sq.mean())
        C = Y_noisy.shape[1]
        if self.n_classes is None:
            return float(sq.mean() - self.rate**2)
        a = 1 - self.rate * self.n_classes / (self.n_classes - 1)
        b = self.rate / (self.n_classes - 1)
        if a <= 1e-6:
            return float("nan")
        s = f.sum(axis=1)
        tf = ((Y_noisy * f).sum(axis=1) - b * s) / a
        correction = 2 * (1 - a) * tf - 2 * b * s
        return float((sq.sum(axis=1) - correction).mean() / C)


def label_light(
    teacher_loo: np.ndarray | None,
    sft_loo: np.ndarray | None,
    w2s_loo: np.ndarray | None,
    sft: LinearFit,
    v_ceiling: float,
    Y_L: np.ndarray,
    noise: LabelNoise | None = None,
    misfit: float | None = None,
) -> dict:
    """Predicted test errors, PGR and OPR from the n labelled rows and unlabelled embeddings only.

    teacher, SFT, W2S: mean squared leave-one-out residual on the n labelled rows (PRESS; heteroscedasticity
    and bias included). Ceiling (it would need the N labels): sigma_s^2 (1 + v_c), sigma_s^2 the strong
    SFT's residual variance RSS / (n - d_s - 1), v_c its exact-design coefficient on n + N rows.
    With label noise the estimates are corrected to clean test labels (LabelNoise.clean_error). PGR is
    undefined (None) when its denominator is within noise of zero over the n rows (`_gap_within_noise`).
    """

    def err(res: np.ndarray | None) -> float | None:
        if res is None:
            return None
        if noise is None or noise.rate == 0:
            return float((res**2).mean())
        return noise.clean_error(res**2, Y_L, Y_L - res)

    e = {"weak": err(teacher_loo), "w2s": err(w2s_loo), "strong_sft": err(sft_loo)}
    s2 = sft.sigma2()
    e["ceiling"] = None if s2 is None else s2 * (1 + v_ceiling)
    if e["ceiling"] is not None and noise is not None and noise.rate > 0 and sft_loo is not None:
        # the same correction as for SFT's leave-one-out predictions, which estimate the same function
        e["ceiling"] -= float((sft_loo**2).mean()) - (e["strong_sft"] or 0.0)
    from w2s_cli.numerics.stats import opr, pgr

    ok = all(v is not None and math.isfinite(v) for v in e.values())
    determined = ok and not _gap_within_noise(e["weak"] - e["ceiling"], teacher_loo, sft_loo, e["ceiling"])
    out: dict = {
        "error": e,
        "pgr": pgr(e["weak"], e["w2s"], e["ceiling"]) if determined else None,
        "opr": opr(e["strong_sft"], e["w2s"]) if ok else None,
        "method": "leave-one-out on the n labelled rows (teacher, SFT, W2S); ceiling sigma_s^2 (1 + v_c)",
    }
    if misfit is not None:
        out["misfit"] = misfit
        out["error_w2s_by_misfit"] = None if e["weak"] is None else e["weak"] - misfit
    return out


def _gap_within_noise(gap: float, teacher_loo: np.ndarray, sft_loo: np.ndarray | None, ceiling: float) -> bool:
    """Whether the predicted err_weak - err_ceiling (PGR's denominator) is within NOISE_Z standard errors of
    zero over the n labelled rows, as the measured PGR's is judged over the test rows: per row, the teacher's
    squared leave-one-out residual less the ceiling's estimate spread over the rows as the strong SFT's squared
    leave-one-out residuals are (their mean is the estimate; without them, the estimate on every row)."""
    from w2s_cli.numerics.stats import NOISE_Z

    t = (teacher_loo**2).mean(axis=1)
    if sft_loo is None or not float((sft_loo**2).mean()) > 0:
        c = np.full_like(t, ceiling)
    else:
        s = (sft_loo**2).mean(axis=1)
        c = s * (ceiling / s.mean())
    se = float(np.std(t - c, ddof=1) / math.sqrt(len(t))) if len(t) > 1 else math.inf
    return not abs(gap) > NOISE_Z * se


def decompose(errors: dict, variance: dict, inherited: float | None) -> dict:
    """Measured test error = noise + bias + variance for each model.

    variance: sigma^2 x exact coefficient (given). noise: the floor no fit here removes, the strong ceiling's
    error less its variance (label noise plus what V_s cannot represent). bias: the rest (approximation
    error above the floor and finite-sample effects the variance law leaves out; can be negative).
    The W2S bias is split into what it inherits from the teacher, ||P_s f_w* - f_s*||^2 (given), and the rest.
    """
    if any(variance.get(k) is None for k in errors):
        return {}
    noise = errors["ceiling"] - variance["ceiling"]
    out = {k: {"noise": noise, "bias": errors[k] - noise - variance[k], "variance": variance[k]} for k in errors}
    if inherited is not None:
        out["w2s"]["bias_inherited"] = inherited
        out["w2s"]["bias_rest"] = out["w2s"]["bias"] - inherited
    return out
