"""Intrinsic dimension of embeddings from their covariance spectrum (float64), and nearest-neighbour
estimators through scikit-dimension.

Spectral estimates come from the p x p covariance, accumulated from row chunks (`Moments`), so m x m
matrices are never formed and m can be large (scikit-learn's PCA needs the rows in memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from w2s_cli.errors import BadValue
from w2s_cli.numerics.moments import Moments, above_cutoff

ESTIMATORS = {
    "spectral": "spectral: smallest k holding the energy fraction of the centred covariance spectrum",
    "pr": "participation ratio (sum lambda)^2 / sum lambda^2",
    "twonn": "TwoNN (Facco et al. 2017), scikit-dimension",
    "mle": "MLE (Levina & Bickel 2005; Haro et al. 2008 form), scikit-dimension, K=20 neighbours",
}
REPORTED_ENERGIES = (0.90, 0.95, 0.99)


@dataclass
class Spectrum:
    """Eigen-decomposition of a covariance: eigenvalues descending (= squared singular values of the
    centred rows), eigenvectors as columns, the mean, and how many rows it came from."""

    values: np.ndarray
    vectors: np.ndarray
    mean: np.ndarray
    count: int

    @classmethod
    def of(cls, moments: Moments) -> Spectrum:
        values, vectors = np.linalg.eigh(moments.cross)
        order = np.argsort(values)[::-1]
        return cls(np.clip(values[order], 0.0, None), vectors[:, order], moments.mean, moments.count)

    @property
    def rank(self) -> int:
        """Directions above the float64 rounding of the covariance (`rank_tolerance`)."""
        return int(above_cutoff(self.values, rows=self.count, cols=len(self.values)).sum())

    @property
    def signal_rank(self) -> int:
        """Directions holding more than 1e-9 of the top variance: below that, float32 embeddings carry rounding
        noise (relative 6e-8 per entry), and a basis direction there would make fits ill-posed."""
        v = self.values
        return int((v > v[0] * 1e-9).sum()) if len(v) and v[0] > 0 else 0


def energy_dimension(spectrum: np.ndarray, energy: float = 0.99) -> int:
    """Smallest k whose top-k eigenvalues hold at least `energy` of the total."""
    if not 0.0 < energy <= 1.0:
        raise BadValue("energy", f"must be in (0, 1], got {energy}")
    total = spectrum.sum()
    if total <= 0:
        return 0
    cumulative = np.cumsum(spectrum) / total
    return int(min(np.searchsorted(cumulative, energy - 1e-12) + 1, len(spectrum)))


def participation_ratio(spectrum: np.ndarray) -> float:
    """(sum lambda)^2 / sum lambda^2: an effective number of directions."""
    s2 = float((spectrum**2).sum())
    return float(spectrum.sum() ** 2 / s2) if s2 > 0 else 0.0


def nearest_neighbour_dimension(X: np.ndarray, estimator: str, max_samples: int, seed: int) -> float:
    """TwoNN or MLE through scikit-dimension, on at most max_samples rows drawn with `seed`."""
    import warnings

    import skdim

    if max_samples < 3:
        raise BadValue("max_samples", f"must be at least 3 (nearest-neighbour estimators), got {max_samples}")
    if len(X) > max_samples:
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), max_samples, replace=False))]
    X = np.asarray(X, np.float64)
    # duplicated rows give zero nearest-neighbour distances, on which both estimators divide
    X = np.unique(X, axis=0)
    if len(X) < 3:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = skdim.id.TwoNN() if estimator == "twonn" else skdim.id.MLE(K=min(20, len(X) - 1))
        return float(est.fit(X).dimension_)


def describe(spectrum: Spectrum, energy: float = 0.99) -> dict:
    """The spectral estimates of one embedding matrix."""
    v = spectrum.values
    return {
        "m": int(spectrum.count),
        "width": int(len(v)),
        "d": energy_dimension(v, energy),
        "energy": energy,
        "d_at": {f"{e:.2f}": energy_dimension(v, e) for e in REPORTED_ENERGIES},
        "participation_ratio": participation_ratio(v),
        "rank": spectrum.rank,
    }
