"""Intrinsic dimension of embeddings and the overlap of weak and strong subspaces, in float64.

Spectral estimates come from the D x D second-moment matrix, accumulated in row chunks, so m x m matrices
are never formed and m can be large.
"""

from __future__ import annotations

import numpy as np

from w2s_cli.errors import W2SError

CHUNK_ROWS = 8192


def covariance_spectrum(X: np.ndarray, center: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues (descending, = squared singular values of the (centred) matrix), eigenvectors, mean."""
    X = np.asarray(X)
    m, d = X.shape
    mean = X.mean(axis=0, dtype=np.float64) if center else np.zeros(d)
    gram = np.zeros((d, d))
    for start in range(0, m, CHUNK_ROWS):
        block = np.asarray(X[start : start + CHUNK_ROWS], dtype=np.float64) - mean
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


def subspace_dim(spec: str | int | None, X_train: np.ndarray, energy: float) -> int | None:
    """The K to project on for these training samples (auto = spectral dimension at `energy`)."""
    spec = parse_subspace(spec)
    if spec is None:
        return None
    if spec == "auto":
        return max(1, energy_dimension(covariance_spectrum(X_train)[0], energy))
    if spec > X_train.shape[1]:
        raise W2SError(f"--subspace {spec} exceeds the embedding width {X_train.shape[1]}")
    return spec


def _left_singular_factor(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """For centred X (m, D): V (D, k) and 1/sigma (k,) with U_k = (X - mean) V diag(1/sigma); k capped at rank."""
    evals, evecs, mean = covariance_spectrum(X)
    rank = int((evals > evals[0] * 1e-12).sum()) if evals[0] > 0 else 0
    k = min(k, rank)
    return evecs[:, :k], 1.0 / np.sqrt(evals[:k]), k


def _cross(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(A - mean_A)^T (B - mean_B) in float64, in row chunks."""
    mean_a = A.mean(axis=0, dtype=np.float64)
    mean_b = B.mean(axis=0, dtype=np.float64)
    out = np.zeros((A.shape[1], B.shape[1]))
    for start in range(0, len(A), CHUNK_ROWS):
        a = np.asarray(A[start : start + CHUNK_ROWS], np.float64) - mean_a
        b = np.asarray(B[start : start + CHUNK_ROWS], np.float64) - mean_b
        out += a.T @ b
    return out


def subspace_overlap(strong: np.ndarray, weak: np.ndarray, d_s: int, d_w: int) -> dict:
    """d_sw = ||U_s^T U_w||_F^2 for the top-d_s / top-d_w left singular subspaces of the centred embeddings
    of the same m samples (sum of squared canonical correlations), with the null value d_s d_w / m.

    Sample-space quantity: the two models' coordinates never need to be aligned. No m x m matrix is formed:
    U_s^T U_w = diag(1/sigma_s) V_s^T (S^T W) V_w diag(1/sigma_w).
    """
    if strong.shape[0] != weak.shape[0]:
        raise W2SError(f"overlap needs the same samples: {strong.shape[0]} strong rows vs {weak.shape[0]} weak rows")
    m = strong.shape[0]
    v_s, inv_s, d_s = _left_singular_factor(strong, d_s)
    v_w, inv_w, d_w = _left_singular_factor(weak, d_w)
    cross = (inv_s[:, None] * (v_s.T @ _cross(strong, weak) @ v_w)) * inv_w[None, :]
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
