"""Intrinsic dimension of embeddings and the overlap of weak and strong subspaces, in float64.

Spectral estimates come from the D x D second-moment matrix, accumulated in row chunks, so m x m matrices
are never formed and m can be large.
"""

from __future__ import annotations

import numpy as np

from w2s_cli.errors import W2SError

CHUNK_ROWS = 4096


def covariance_spectrum(X: np.ndarray, center: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues (descending, = squared singular values of the (centred) matrix), eigenvectors, mean."""
    X = np.asarray(X)
    m, d = X.shape
    mean = X.mean(axis=0, dtype=np.float64) if center else np.zeros(d)
    gram = np.zeros((d, d))
    for start in range(0, m, CHUNK_ROWS):
        block = np.array(X[start : start + CHUNK_ROWS], dtype=np.float64)
        block -= mean
        gram += block.T @ block
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1]
    return np.clip(evals[order], 0.0, None), evecs[:, order], mean


def energy_dimension(spectrum: np.ndarray, energy: float = 0.99) -> int:
    """Smallest k whose top-k eigenvalues hold at least `energy` of the total."""
    if not 0.0 < energy <= 1.0:
        raise W2SError(f"--energy must be in (0, 1], got {energy}")
    total = spectrum.sum()
    if total <= 0:
        return 0
    cumulative = np.cumsum(spectrum) / total
    return int(min(np.searchsorted(cumulative, energy - 1e-12) + 1, len(spectrum)))


def participation_ratio(spectrum: np.ndarray) -> float:
    """(sum lambda)^2 / sum lambda^2: an effective number of directions."""
    s2 = float((spectrum**2).sum())
    return float(spectrum.sum() ** 2 / s2) if s2 > 0 else 0.0


def parse_subspace(spec: str | int | None) -> str | int | None:
    """'none' -> None, 'auto' -> 'auto', 'K' -> K."""
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        return "auto"
    try:
        k = int(spec)
    except (TypeError, ValueError):
        raise W2SError(f"--subspace must be none, auto or a positive integer, not '{spec}'") from None
    if k <= 0:
        raise W2SError(f"--subspace must be positive, got {k}")
    return k


Eig = tuple  # (eigenvalues descending, eigenvectors, mean) as returned by covariance_spectrum


def _left_singular_factor(X: np.ndarray, k: int, center: bool, eig: Eig | None) -> tuple[np.ndarray, np.ndarray, int]:
    """V (D, k) and 1/sigma (k,) with U_k = (X - mean) V diag(1/sigma); k capped at the rank."""
    evals, evecs, _ = eig if eig is not None else covariance_spectrum(X, center)
    rank = int((evals > evals[0] * 1e-12).sum()) if evals[0] > 0 else 0
    k = min(k, rank)
    return evecs[:, :k], 1.0 / np.sqrt(evals[:k]), k


def _cross(A: np.ndarray, B: np.ndarray, center: bool) -> np.ndarray:
    """(A - mean_A)^T (B - mean_B) in float64, in row chunks."""
    mean_a = A.mean(axis=0, dtype=np.float64) if center else np.zeros(A.shape[1])
    mean_b = B.mean(axis=0, dtype=np.float64) if center else np.zeros(B.shape[1])
    out = np.zeros((A.shape[1], B.shape[1]))
    for start in range(0, len(A), CHUNK_ROWS):
        a = np.array(A[start : start + CHUNK_ROWS], np.float64)
        a -= mean_a
        b = np.array(B[start : start + CHUNK_ROWS], np.float64)
        b -= mean_b
        out += a.T @ b
    return out


def subspace_overlap(
    strong: np.ndarray,
    weak: np.ndarray,
    d_s: int,
    d_w: int,
    center: bool = True,
    eig_s: Eig | None = None,
    eig_w: Eig | None = None,
) -> dict:
    """d_sw = ||U_s^T U_w||_F^2 for the top-d_s / top-d_w left singular subspaces of the centred embeddings
    of the same m samples (sum of squared canonical correlations), with the null value d_s d_w / m.

    Sample-space quantity: the two models' coordinates never need to be aligned. No m x m matrix is formed:
    U_s^T U_w = diag(1/sigma_s) V_s^T (S^T W) V_w diag(1/sigma_w). eig_s / eig_w: covariance_spectrum results
    already computed with the same `center`.
    """
    if strong.shape[0] != weak.shape[0]:
        raise W2SError(f"overlap needs the same samples: {strong.shape[0]} strong rows vs {weak.shape[0]} weak rows")
    m = strong.shape[0]
    v_s, inv_s, d_s = _left_singular_factor(strong, d_s, center, eig_s)
    v_w, inv_w, d_w = _left_singular_factor(weak, d_w, center, eig_w)
    cross = (inv_s[:, None] * (v_s.T @ _cross(strong, weak, center) @ v_w)) * inv_w[None, :]
    cosines = np.clip(np.linalg.svd(cross, compute_uv=False), 0.0, 1.0)
    d_sw, null = float((cosines**2).sum()), d_s * d_w / m
    return {
        "d_s": d_s,
        "d_w": d_w,
        "d_sw": d_sw,
        "d_sw_null": null,
        "d_sw_corrected": null_corrected(d_sw, null, min(d_s, d_w)),
        "m": m,
        "canonical_correlations": cosines.tolist(),
    }


def null_corrected(d_sw: float, null: float, top: float) -> float:
    """Rescale d_sw so that the random-subspace value maps to 0 and full overlap (top) stays top."""
    if top <= null:
        return float("nan")
    return float(np.clip((d_sw - null) / (1.0 - null / top), 0.0, top))


ESTIMATORS = {
    "spectral": "spectral: smallest k holding the energy fraction of the centred covariance spectrum",
    "pr": "participation ratio (sum lambda)^2 / sum lambda^2",
    "twonn": "TwoNN (Facco et al. 2017), scikit-dimension",
    "mle": "MLE (Levina & Bickel 2005; Haro et al. 2008 form), scikit-dimension, K=20 neighbours",
}
REPORTED_ENERGIES = (0.90, 0.95, 0.99)


def nearest_neighbour_dimension(X: np.ndarray, estimator: str, max_samples: int, seed: int) -> float:
    """TwoNN or MLE through scikit-dimension, on at most max_samples rows drawn with `seed`."""
    import warnings

    import skdim

    if len(X) > max_samples:
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), max_samples, replace=False))]
    X = np.asarray(X, np.float64)
    # duplicated rows give zero nearest-neighbour distances, on which both estimators divide
    X = np.unique(X, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = skdim.id.TwoNN() if estimator == "twonn" else skdim.id.MLE(K=20)
        return float(est.fit(X).dimension_)


def describe(
    X: np.ndarray,
    energy: float = 0.99,
    center: bool = True,
    estimators: tuple[str, ...] = ("spectral",),
    max_samples: int = 5000,
    seed: int = 0,
) -> tuple[dict, Eig]:
    """Intrinsic-dimension estimates of one embedding matrix, and its covariance eigendecomposition."""
    eig = covariance_spectrum(X, center)
    spectrum = eig[0]
    out = {
        "m": int(X.shape[0]),
        "width": int(X.shape[1]),
        "d": energy_dimension(spectrum, energy),
        "energy": energy,
        "d_at": {f"{e:.2f}": energy_dimension(spectrum, e) for e in REPORTED_ENERGIES},
        "participation_ratio": participation_ratio(spectrum),
        "rank": int((spectrum > spectrum[0] * 1e-12).sum()) if spectrum[0] > 0 else 0,
    }
    for name in estimators:
        if name in ("twonn", "mle"):
            out[name] = nearest_neighbour_dimension(X, name, max_samples, seed)
    return out, eig


def authors_overlap(strong: np.ndarray, weak: np.ndarray, d_s: int, d_w: int, seed: int = 0) -> dict:
    """The authors' scripts' overlap, for parity: a Gaussian random projection of the wider embedding down to
    the narrower width, then ||V_s^T V_w||_F^2 for the top covariance eigenvectors of the two. It compares two
    unrelated coordinate systems, so it sits near the chance value d_s d_w / width."""
    rng = np.random.default_rng(seed)
    width = min(strong.shape[1], weak.shape[1])

    def reduce(X: np.ndarray) -> np.ndarray:
        if X.shape[1] == width:
            return X
        return np.asarray(X, np.float64) @ (rng.normal(size=(X.shape[1], width)) / np.sqrt(width))

    v_s = covariance_spectrum(reduce(strong))[1][:, :d_s]
    v_w = covariance_spectrum(reduce(weak))[1][:, :d_w]
    return {
        "d_sw": float(np.linalg.norm(v_s.T @ v_w) ** 2),
        "d_sw_null": d_s * d_w / width,
        "method": "authors: covariance eigenvectors after a random projection (coordinate space)",
    }


def plot_spectra(spectra: dict[str, np.ndarray], dims: dict[str, int], energy: float, path) -> None:
    """Cumulative energy of each spectrum against k, with the cut-off at `energy` marked."""
    import matplotlib

    from w2s_cli.artifacts import atomic_output

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, spectrum), color in zip(spectra.items(), ("tab:red", "tab:blue"), strict=False):
        k = np.arange(1, len(spectrum) + 1)
        ax.plot(k, np.cumsum(spectrum) / spectrum.sum(), color=color, label=f"{name} (d = {dims[name]})")
        ax.axvline(dims[name], color=color, ls="--", lw=0.8)
    ax.axhline(energy, color="gray", ls=":", lw=0.8, label=f"energy {energy}")
    ax.set_xscale("log")
    ax.set_xlabel("k (principal directions)")
    ax.set_ylabel("cumulative energy")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
