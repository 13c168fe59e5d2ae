"""`w2s synth`: the ridgeless W2S experiment on synthetic Gaussian data, by Monte Carlo, against the theory.

Generator (docs/theory.md): x ~ N(0, I_D); V_s = span(U_s), V_w = span(U_w) share `shared` directions; the
rest of V_w is drawn at random (orthogonal to the shared ones) or orthogonal to V_s. f*(x) = x^T b with b a
unit vector in the shared directions (b = 0 when nothing is shared); y = f*(x) + sigma z.
teacher = pinv(X_l U_w) y_l; student = pinv(X_u U_s)(X_u U_w theta_w); strong SFT = pinv(X_l U_s) y_l;
ceiling = pinv([X_l; X_u] U_s) [y_l; y_u]; excess risk ER(f) = ||U theta - b||^2.

Trials are vectorised: only the coordinates of x in span(U_s, U_w) (r <= d_s + d_w dimensions) matter. When
n and N are at least r, each chunk of trials draws sufficient statistics exactly in law (Bartlett factors of
Wishart matrices of dimension at most 2 d_s, plus a few chi-square and Beta variables, see
`_chunk_sufficient`) and solves small batched triangular and d_s x d_s systems; otherwise it draws
(trials, samples, r) Gaussian designs and solves all least-squares problems in one batched pseudo-inverse.

Its records (`SynthResult`, `SynthPoint`, `SynthSweep`: what `w2s synth --json` prints, `to_json()`) live
here: numerics sits below the store, whose records it may not import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from w2s_cli.errors import BadValue
from w2s_cli.numerics import theory
from w2s_cli.numerics.stats import MODELS, ratio

CHUNK_ELEMENTS = 4_000_000  # float64 entries of Gaussian draws per chunk (~32 MB)
SUFFICIENT_CHUNK_ELEMENTS = 250_000  # float64 entries of the Bartlett factors per chunk (~2 MB, stays in cache)


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

    def __post_init__(self) -> None:  # BadValue names the field; `w2s synth` says its flag
        for name in ("ambient", "d_s", "d_w"):
            if getattr(self, name) <= 0:
                raise BadValue(name, f"must be positive, got {getattr(self, name)}")
        if not 0 <= self.shared <= min(self.d_s, self.d_w):
            raise BadValue("shared", f"must be in [0, min(d_s, d_w)] = [0, {min(self.d_s, self.d_w)}]")
        if self.rest not in ("random", "orthogonal"):
            raise BadValue("rest", f"must be random or orthogonal, not '{self.rest}'")
        need = self.d_s + self.d_w - self.shared if self.rest == "orthogonal" else max(self.d_s, self.d_w)
        if self.ambient < need:
            raise BadValue("ambient", f"{self.ambient} is too small: the subspaces need {need} dimensions")
        if self.trials < 2:
            raise BadValue("trials", "must be at least 2 (standard errors need two)")
        if self.sigma < 0:
            raise BadValue("sigma", "must be non-negative")


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


def _bartlett_upper(T: int, dof: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """Bartlett: upper-triangular R (T, r, r) with R^T R ~ Wishart(dof, I_r), i.e. the law of the R factor of
    G = O R (thin QR, positive diagonal) for G (dof, r) with i.i.d. N(0, 1) entries. Needs dof >= r."""
    R = np.zeros((T, r, r))
    z = rng.standard_normal((T, r * (r - 1) // 2))
    o = 0
    for i in range(r - 1):  # row i holds r - 1 - i normals right of the diagonal (contiguous slices)
        R[:, i, i + 1 :] = z[:, o : o + r - 1 - i]
        o += r - 1 - i
    R.reshape(T, r * r)[:, :: r + 1] = np.sqrt(rng.chisquare(dof - np.arange(r), size=(T, r)))
    return R


def _back_substitute(R: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x = R^{-1} b for a batch of upper-triangular R (T, d, d) and b (T, d), vectorised over the batch."""
    d = R.shape[1]
    x = np.empty_like(b)
    for i in range(d - 1, -1, -1):
        x[:, i] = (b[:, i] - np.einsum("tj,tj->t", R[:, i, i + 1 :], x[:, i + 1 :])) / R[:, i, i]
    return x


def _sufficient_plan(U_s: np.ndarray, U_w: np.ndarray, tol: float = 1e-10) -> dict[str, Any]:
    """Fixed geometry of the sufficient path.

    V_w splits into V_w1 (the principal directions with a non-zero cosine to V_s, dimension m1 <= d_s) and
    V_w2 = V_w ∩ V_s^⊥ (dimension p2 = d_w - m1); U_q spans the part of V_s outside V_w (dimension q). The
    strong features live in span(U_w1, U_q) (dimension r1 = m1 + q <= 2 d_s); V_w2 is orthogonal to all of it.
    """
    _, cos, Vt = np.linalg.svd(U_s.T @ U_w)
    m1 = int((cos > tol).sum())
    U_w1 = U_w @ Vt[:m1].T
    u, sv, _ = np.linalg.svd(U_s - U_w @ (U_w.T @ U_s), full_matrices=False)
    Q_a = np.concatenate([U_w1, u[:, sv > tol]], axis=1)
    C1 = U_s.T @ U_w1
    _, kv, kt = np.linalg.svd(U_w1 - U_s @ C1, full_matrices=False)
    return {
        "A": Q_a.T @ U_s,  # (r1, d_s): strong features in the coordinates Q_a = [U_w1, U_q]
        "C": C1,  # (d_s, m1): U_s^T U_w1
        "K": kv[:, None] * kt,  # ||K c|| = ||(I - P_s) U_w1 c||, without cancellation
        "m1": m1,
        "p2": U_w.shape[1] - m1,
        "r": Q_a.shape[1] + U_w.shape[1] - m1,  # dim span(U_s, U_w)
    }


def _chunk_sufficient(
    cfg: SynthConfig, plan: dict[str, Any], T: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Excess risks of one chunk of trials through sufficient statistics (exact in law, few random draws).

    Every model is unbiased (b lies in V_s ∩ V_w), so each excess risk is the squared norm of a noise term.
    Labelled data: in the coordinates Q_a = [U_w1, U_q] the design is G_a = O R (R: Bartlett factor of an
    r1-dimensional Wishart), and only xi = O^T z ~ N(0, I_r1), independent of R, reaches the fits. Strong
    SFT solves (M^T M) e_s = sigma M^T xi with M = R A. The teacher also regresses on G_b, the V_w2
    coordinates, which are independent of everything else; by Frisch-Waugh its coefficients are
    c_b = R_b^{-1} O_b^T w (w: the noise outside span(G_w1), O_b R_b: QR of G_b projected there, O_b Haar) and
    c_1 = R_11^{-1} (xi_1 - B c_b) with B = O_1^T G_b i.i.d. N(0, 1). Hence, exactly in law,
    B c_b ~ ||c_b|| eta, ||O_b^T w||^2 = ||w||^2 beta with beta ~ Beta(p2/2, (n - d_w)/2),
    ||w||^2 = ||xi_q||^2 + chi2(n - r1), and ||R_b^{-1} u||^2 = ||u||^2 / chi2(n - d_w + 1) for u of uniform
    direction independent of R_b (the inverse-Wishart quadratic form); all these draws are independent.
    Unlabelled data: only its strong coordinates H = O_u R_u (R_u a d_s-dimensional Bartlett factor) and the
    pseudo-label part outside V_s matter; the latter, x^T (I - P_s) U_w e, is independent of H and of the true
    labels' noise, so it acts as label noise of scale s = ||(I - P_s) U_w e|| (docs/theory.md, key step): the
    student's error is C e_1 + s R_u^{-1} xi_2, and the ceiling solves
    (M^T M + R_u^T R_u) e_c = sigma (M^T xi + R_u^T xi_1), with xi_1, xi_2 ~ N(0, I_{d_s}).
    """
    A, C, K, m1, p2 = plan["A"], plan["C"], plan["K"], plan["m1"], plan["p2"]
    n, r1, d_s = cfg.n_labeled, A.shape[0], A.shape[1]
    d_w = m1 + p2
    R = _bartlett_upper(T, n, r1, rng)
    xi = rng.standard_normal((T, r1))
    R_u = _bartlett_upper(T, cfg.n_pseudo, d_s, rng)
    xi_u = rng.standard_normal((T, 2, d_s))
    if p2 > 0:  # ||c_b||^2, the teacher's (noise-scale-free) squared error in V_w2
        g = rng.standard_gamma([(n - r1) / 2, p2 / 2, (n - d_w) / 2, (n - d_w + 1) / 2], size=(T, 4))
        norm_w2 = (xi[:, m1:] ** 2).sum(axis=1) + 2 * g[:, 0]
        cb2 = norm_w2 * (g[:, 1] / (g[:, 1] + g[:, 2])) / (2 * g[:, 3])
        eta = rng.standard_normal((T, m1))
        c1 = _back_substitute(R[:, :m1, :m1], xi[:, :m1] - np.sqrt(cb2)[:, None] * eta)
    else:
        cb2 = np.zeros(T)
        c1 = _back_substitute(R[:, :m1, :m1], xi[:, :m1])
    M = R @ A
    Mt = np.swapaxes(M, 1, 2)
    R_ut = np.swapaxes(R_u, 1, 2)
    S_l, g_l = Mt @ M, Mt @ xi[..., None]
    e_s = np.linalg.solve(S_l, g_l)[..., 0]
    e_c = np.linalg.solve(S_l + R_ut @ R_u, g_l + R_ut @ xi_u[:, 0, :, None])[..., 0]
    Kc = c1 @ K.T
    outside = np.sqrt(cb2 + (Kc**2).sum(axis=1))  # ||(I - P_s) U_w e|| / sigma
    e_w2s = c1 @ C.T + outside[:, None] * _back_substitute(R_u, xi_u[:, 1])
    s2 = cfg.sigma**2
    return {
        "weak": s2 * ((c1**2).sum(axis=1) + cb2),
        "w2s": s2 * (e_w2s**2).sum(axis=1),
        "strong_sft": s2 * (e_s**2).sum(axis=1),
        "ceiling": s2 * (e_c**2).sum(axis=1),
    }


def _chunk_gaussian(
    cfg: SynthConfig, plan: tuple[np.ndarray, ...], T: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Excess risks of one chunk of trials from the Gaussian design itself (used when n or N is below r)."""
    A_s, A_w, b_q = plan
    n, N, r = cfg.n_labeled, cfg.n_pseudo, A_s.shape[0]
    G_l = rng.normal(size=(T, n, r))  # coordinates of x in span(U_s, U_w): i.i.d. N(0, 1)
    G_u = rng.normal(size=(T, N, r))
    y_l = G_l @ b_q + cfg.sigma * rng.normal(size=(T, n))
    y_u = G_u @ b_q + cfg.sigma * rng.normal(size=(T, N))
    theta_w = _batched_min_norm(G_l @ A_w, y_l)
    F_u = G_u @ A_s
    thetas = {
        "weak": theta_w,
        "w2s": _batched_min_norm(F_u, np.einsum("tmd,td->tm", G_u @ A_w, theta_w)),
        "strong_sft": _batched_min_norm(G_l @ A_s, y_l),
        "ceiling": _batched_min_norm(np.concatenate([G_l @ A_s, F_u], axis=1), np.concatenate([y_l, y_u], axis=1)),
    }
    return {k: ((theta @ (A_w if k == "weak" else A_s).T - b_q) ** 2).sum(axis=1) for k, theta in thetas.items()}


def simulate(cfg: SynthConfig, method: str = "auto") -> dict[str, np.ndarray]:
    """Per-trial excess risks of the four models, and d_sw of the drawn subspaces.

    method: "sufficient" (Wishart statistics), "gaussian" (the design matrices), or "auto" (sufficient
    whenever n and N are at least r = dim span(U_s, U_w)).
    """
    U_s, U_w, b = make_subspaces(cfg, np.random.default_rng(cfg.seed))
    rng = np.random.default_rng([cfg.seed, 1])  # the data, drawn apart from the subspaces
    plan = _sufficient_plan(U_s, U_w)
    r = plan["r"]  # dim span(U_s, U_w)
    if method == "auto":
        method = "sufficient" if min(cfg.n_labeled, cfg.n_pseudo) >= r else "gaussian"
    if method == "sufficient":
        chunk = max(1, SUFFICIENT_CHUNK_ELEMENTS // (plan["A"].shape[0] ** 2 + cfg.d_s**2))
    else:
        Q = np.linalg.qr(np.concatenate([U_s, U_w], axis=1))[0]  # basis of span(U_s, U_w); b lies in it
        plan = (Q.T @ U_s, Q.T @ U_w, Q.T @ b)
        chunk = max(1, CHUNK_ELEMENTS // ((cfg.n_labeled + cfg.n_pseudo) * Q.shape[1]))
    chunk_fn = _chunk_sufficient if method == "sufficient" else _chunk_gaussian
    er = {k: np.empty(cfg.trials) for k in MODELS}
    for start in range(0, cfg.trials, chunk):
        T = min(chunk, cfg.trials - start)
        for name, values in chunk_fn(cfg, plan, T, rng).items():
            er[name][start : start + T] = values
    er["d_sw"] = np.array(float(np.linalg.norm(U_s.T @ U_w) ** 2))
    return er


QUANTITIES = (*MODELS, "pgr", "opr")  # the excess risks of the four models, PGR and OPR


def _quantities(name: str, d: Any, keys: tuple[str, ...] = QUANTITIES) -> dict[str, float | None]:
    """A number (or None: undefined) for each of `keys`, in their order; refused (ValueError) otherwise."""
    if not isinstance(d, Mapping) or any(k not in d for k in keys):
        raise ValueError(f"synth record: '{name}' is not an object with {', '.join(keys)}")
    if any(d[k] is not None and (isinstance(d[k], bool) or not isinstance(d[k], (int, float))) for k in keys):
        raise ValueError(f"synth record: '{name}' holds a value that is not a number")
    return {k: d[k] for k in keys}


@dataclass(frozen=True)
class SynthResult:
    """One Monte-Carlo check (`run_synth`): its configuration, d_sw of the drawn subspaces, the measured
    excess risks, PGR and OPR with their standard errors, the theory's exact and asymptotic predictions of
    the same, and its N -> infinity limits."""

    config: SynthConfig
    d_sw: float
    measured: dict[str, float | None]
    stderr: dict[str, float | None]
    predicted: dict[str, float | None]
    asymptotic: dict[str, float | None]
    limits: dict[str, float | None]

    def __post_init__(self) -> None:
        if not isinstance(self.config, SynthConfig):
            raise ValueError("synth record: 'config' is not a SynthConfig")
        for name in ("measured", "stderr", "predicted", "asymptotic"):
            object.__setattr__(self, name, _quantities(name, getattr(self, name)))
        object.__setattr__(self, "limits", _quantities("limits", self.limits, ("pgr", "opr", "n_pseudo_threshold")))

    def to_json(self) -> dict[str, Any]:
        out = {"config": asdict(self.config), "d_sw": self.d_sw}
        return out | {k: dict(getattr(self, k)) for k in ("measured", "stderr", "predicted", "asymptotic", "limits")}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SynthResult:
        keys = ("measured", "stderr", "predicted", "asymptotic", "limits")
        return cls(SynthConfig(**d["config"]), d["d_sw"], **{k: d[k] for k in keys})


@dataclass(frozen=True)
class SynthPoint:
    """One point of a synth sweep: the swept quantity's value and the check there."""

    value: float
    result: SynthResult

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, **self.result.to_json()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SynthPoint:
        return cls(d["value"], SynthResult.from_json(d))


@dataclass(frozen=True)
class SynthSweep:
    """`w2s synth --sweep`: the swept quantity, the figure and table written, the points."""

    sweep: str
    plot: str
    csv: str
    points: tuple[SynthPoint, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(self.points))

    def to_json(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "plot": self.plot, "csv": self.csv, "points": [p.to_json() for p in self.points]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SynthSweep:
        return cls(d["sweep"], d["plot"], d["csv"], tuple(SynthPoint.from_json(p) for p in d["points"]))


def run_synth(cfg: SynthConfig) -> SynthResult:
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
    return SynthResult(
        cfg, d_sw_drawn, measured, stderr, predicted, asymptotic, theory.limits(cfg.d_s, cfg.d_w, d_sw_drawn)
    )


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
    raise ValueError(f"no default values for sweep '{sweep}' (one of {', '.join(SWEEPS)})")


def run_sweep(cfg: SynthConfig, sweep: str, values: list[float] | None = None) -> list[SynthPoint]:
    if sweep not in SWEEPS:
        raise BadValue("sweep", f"must be one of {', '.join(SWEEPS)}, not '{sweep}'")
    field = SWEEPS[sweep]
    values = values if values else default_values(cfg, sweep)
    rows = []
    for v in values:
        v = float(v) if field == "sigma" else int(v)
        point = SynthConfig(**{**asdict(cfg), field: v})  # same seed: same subspaces, common random numbers
        rows.append(SynthPoint(v, run_synth(point)))
    return rows
