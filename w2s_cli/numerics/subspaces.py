"""The paper's V_w and V_s on real embeddings, and their overlap d_sw.

A backbone's intrinsic subspace is spanned by the top-K principal directions of its centred embeddings over
the experiment's n + N training rows (labels unused); it is fitted once per backbone and shared by every
fit on that backbone. d_sw is the sum of squared canonical correlations between the two projected
embeddings over the same rows, i.e. ||U_s^T U_w||_F^2 for the two sample-space bases: a sample-space
quantity, so the models' coordinates never need to be aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize

from w2s_cli.errors import BadValue
from w2s_cli.numerics.moments import Moments, above_cutoff
from w2s_cli.numerics.spectra import Spectrum, energy_dimension


@dataclass
class PrincipalBasis:
    """mean (D,) and components (D, K): z = (x - mean) @ components. `components=None` is the identity
    (no subspace: the full embedding, still centred)."""

    mean: np.ndarray
    components: np.ndarray | None
    energy_held: float = 1.0

    @property
    def dim(self) -> int | None:
        return None if self.components is None else self.components.shape[1]

    def transform(self, X: np.ndarray) -> np.ndarray:
        Xc = np.asarray(X, dtype=np.float64) - self.mean
        return Xc if self.components is None else Xc @ self.components


def choose_dimension(spec: str | int | None, spectrum: Spectrum, energy: float, cap: int | None) -> tuple[int, str]:
    """K for `--subspace auto|K` and the rule that gave it. auto: the energy dimension, capped at `cap`."""
    width, rank = len(spectrum.values), max(spectrum.signal_rank, 1)
    if spec == "auto":
        k = max(1, energy_dimension(spectrum.values, energy))
        rule = f"energy {energy:g}"
        if cap is not None and k > cap:
            k, rule = max(1, cap), f"energy {energy:g} (capped at n/2 = {cap})"
    else:
        k, rule = int(spec), "fixed"
        if not 1 <= k <= width:
            raise BadValue("subspace", f"{k}: must be between 1 and the embedding width {width}")
    if k > rank:
        k, rule = rank, f"{rule}, capped at the embeddings' numerical rank {rank}"
    return k, rule


def fit_basis(
    spec: str | int | None, moments: Moments, energy: float, cap: int | None
) -> tuple[PrincipalBasis, dict, Spectrum]:
    """The shared basis of one backbone from the moments of its training rows, its record and spectrum."""
    spectrum = Spectrum.of(moments)
    record = {"energy": energy, "width": len(spectrum.values), "rank": spectrum.rank, "rows": moments.count}
    if spec is None:
        return PrincipalBasis(moments.mean, None), {"dim": None, "rule": "none (full embedding)", **record}, spectrum
    k, rule = choose_dimension(spec, spectrum, energy, cap)
    total = float(spectrum.values.sum())
    held = float(spectrum.values[:k].sum() / total) if total > 0 else 1.0
    basis = PrincipalBasis(moments.mean, spectrum.vectors[:, :k].copy(), held)
    return basis, {"dim": k, "rule": rule, **record, "energy_held": held}, spectrum


def _index(cols: slice | np.ndarray, size: int) -> np.ndarray:
    return np.arange(size)[cols] if isinstance(cols, slice) else np.asarray(cols, dtype=np.int64)


def canonical_correlations(
    cross: np.ndarray, a: slice | np.ndarray, b: slice | np.ndarray, *, rows: int = 0
) -> np.ndarray:
    """Canonical correlations between column groups a and b from their joint centred cross-product matrix
    over `rows` rows (directions below `rank_tolerance` left out)."""
    a, b = _index(a, len(cross)), _index(b, len(cross))
    A, B, AB = cross[np.ix_(a, a)], cross[np.ix_(b, b)], cross[np.ix_(a, b)]

    def inv_sqrt(M: np.ndarray) -> np.ndarray:
        w, V = np.linalg.eigh(M)
        keep = above_cutoff(w, rows=rows, cols=len(w))
        return (V[:, keep] / np.sqrt(w[keep])) @ V[:, keep].T

    return np.clip(np.linalg.svd(inv_sqrt(A) @ AB @ inv_sqrt(B), compute_uv=False), 0.0, 1.0)


def _rank(G: np.ndarray, rows: int) -> int:
    return int(above_cutoff(np.linalg.eigvalsh(G), rows=rows, cols=len(G)).sum()) if G.size else 0


def chance_overlap(k: float, d_s: float, d_w: float, m: float) -> float:
    """Expected d_sw of two subspaces of dimensions d_s, d_w of an m-dimensional sample space that share
    exactly k directions, the rest drawn at random: k + (d_s - k)(d_w - k)/(m - k)."""
    return k + (d_s - k) * (d_w - k) / (m - k)


def null_corrected(d_sw: float, d_s: float, d_w: float, m: float) -> float:
    """The shared dimension k whose expected chance overlap equals the measured d_sw (solved exactly, since
    chance_overlap is not linear in k); 0 at or below the null value d_s d_w / m, min(d_s, d_w) at the top."""
    top = min(d_s, d_w)
    if m <= top:
        return float("nan")
    if d_sw <= chance_overlap(0.0, d_s, d_w, m):
        return 0.0
    if d_sw >= top:
        return float(top)
    return float(scipy.optimize.brentq(lambda k: chance_overlap(k, d_s, d_w, m) - d_sw, 0.0, top, xtol=1e-10))


def overlap(cross: np.ndarray, count: int, s: slice | np.ndarray, w: slice | np.ndarray, centred: bool = True) -> dict:
    """d_sw between column groups s (strong) and w (weak) of one joint moments matrix over `count` rows:
    the sum of squared canonical correlations, its chance value and the null-corrected shared dimension.
    Centred rows live in an (m - 1)-dimensional sample space."""
    s, w = _index(s, len(cross)), _index(w, len(cross))
    rho = canonical_correlations(cross, s, w, rows=count)
    d_s = _rank(cross[np.ix_(s, s)], count)
    d_w = _rank(cross[np.ix_(w, w)], count)
    m = count - 1 if centred else count
    d_sw = float((rho**2).sum())
    return {
        "d_s": d_s,
        "d_w": d_w,
        "d_sw": d_sw,
        "d_sw_null": d_s * d_w / m,
        "d_sw_corrected": null_corrected(d_sw, d_s, d_w, m),
        "m": int(count),
        "canonical_correlations": rho.tolist(),
    }


def authors_overlap(strong: Spectrum, weak: Spectrum, d_s: int, d_w: int, seed: int = 0) -> dict:
    """The authors' scripts' overlap, for parity: ||V_s^T V_w||_F^2 for the top covariance eigenvectors of the
    two embeddings in their own coordinates, the wider one first cut to the narrower width by a Gaussian
    random projection. It compares unrelated coordinate systems, so it sits near d_s d_w / width."""
    rng = np.random.default_rng(seed)
    width = min(len(strong.values), len(weak.values))

    def top(sp: Spectrum, k: int) -> np.ndarray:
        cov = (sp.vectors * sp.values) @ sp.vectors.T
        if cov.shape[0] != width:
            R = rng.normal(size=(cov.shape[0], width)) / np.sqrt(width)
            cov = R.T @ cov @ R
        values, vectors = np.linalg.eigh(cov)
        return vectors[:, np.argsort(values)[::-1][:k]]

    return {
        "d_sw": float(np.linalg.norm(top(strong, d_s).T @ top(weak, d_w)) ** 2),
        "d_sw_null": d_s * d_w / width,
        "method": "authors: covariance eigenvectors after a random projection (coordinate space)",
    }
