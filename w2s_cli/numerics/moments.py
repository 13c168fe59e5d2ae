"""Row moments in float64: count, mean and centred cross-product matrix, accumulated chunk by chunk.

Every fit, spectrum, overlap and variance coefficient in w2s needs only these, so a stage streams the rows
of an artifact through `Moments.of` and `merge` and holds O(p^2) numbers, never the rows. Merging uses
Chan, Golub and LeVeque's pairwise update, exact and stable whatever the order; that is also how moments
from several processes are combined (see `w2s_cli.distributed`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.linalg.blas

CHUNK_BYTES = 16 << 20  # float64 rows centred per step of the Gram accumulation: stays in cache
EPS = np.finfo(np.float64).eps


def rank_tolerance(rows: int, cols: int) -> float:
    """The one rank cut-off of w2s, relative to the largest value: max(rows, cols) x float64 eps.

    Why: a float64 matrix of `rows` x `cols` is known to about that fraction of its largest singular value
    (its entries' rounding, summed by any factorisation): LAPACK's and numpy's default for `matrix_rank`
    and `lstsq`. A Gram matrix Xc^T Xc (a covariance, the moments) is known to the same fraction of its
    largest eigenvalue, so its eigenvalues are cut at the same relative level; in the rows' singular values
    that is sqrt(tolerance) (5.4e-7 for 1,300 rows): forming the Gram squares the condition number, and
    directions between the two cuts are resolved by the rows but not by the moments (`fit_ridgeless` then
    refits from the rows). `Spectrum.signal_rank` (1e-9 of the top variance) is not a rank rule but the
    float32 embeddings' noise floor, which a basis stays above.
    """
    return max(rows, cols, 1) * EPS


def above_cutoff(values: np.ndarray, *, rows: int, cols: int) -> np.ndarray:
    """Mask of the `values` that count as non-zero under `rank_tolerance`: singular values of a rows x cols
    matrix, or eigenvalues of its Gram matrix (cols x cols). Nothing counts when the largest is <= 0."""
    values = np.asarray(values)
    top = values.max(initial=0.0)
    if top <= 0:
        return np.zeros(values.shape, dtype=bool)
    return values > top * rank_tolerance(rows, cols)


@dataclass
class Moments:
    """count rows, their mean (p,) and cross = sum (x - mean)(x - mean)^T (p, p), all float64."""

    count: int
    mean: np.ndarray
    cross: np.ndarray

    @classmethod
    def empty(cls, p: int) -> Moments:
        return cls(0, np.zeros(p), np.zeros((p, p)))

    @classmethod
    def of(cls, X: np.ndarray) -> Moments:
        return of_columns(X)

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        cross = self.cross + other.cross + np.outer(delta, delta) * (self.count * other.count / n)
        return Moments(n, mean, cross)

    def covariance(self) -> np.ndarray:
        """The population covariance cross / count."""
        return self.cross / max(self.count, 1)


def of_columns(*blocks: np.ndarray) -> Moments:
    """Moments of the rows of np.hstack(blocks) (blocks: arrays with the same rows), without forming it.

    float32 and float64 blocks are read as they are, anything else as float64. The mean is a float64
    reduction; the centred cross-products are accumulated in float64 (BLAS syrk) over row chunks, each
    converted and centred into one reused float64 buffer, so no full-size float64 copy is ever made.
    """
    blocks = tuple(np.asarray(b) for b in blocks)
    blocks = tuple(b if b.dtype in (np.float32, np.float64) else b.astype(np.float64) for b in blocks)
    n, widths = len(blocks[0]), [b.shape[1] for b in blocks]
    p = sum(widths)
    if n == 0 or p == 0:
        return Moments(n, np.zeros(p), np.zeros((p, p)))
    mean = np.concatenate([b.mean(axis=0, dtype=np.float64) for b in blocks])
    rows = min(n, max(1, CHUNK_BYTES // (8 * p)))
    buf = np.empty((rows, p))
    cross = np.zeros((p, p), order="F")
    for start in range(0, n, rows):
        m, col = min(rows, n - start), 0
        for b, w in zip(blocks, widths, strict=True):
            np.subtract(b[start : start + m], mean[col : col + w], out=buf[:m, col : col + w])
            col += w
        # cross += buf^T buf, upper triangle (buf^T is a Fortran-ordered p x m matrix: no copy)
        cross = scipy.linalg.blas.dsyrk(1.0, buf[:m].T, beta=1.0, c=cross, trans=0, lower=0, overwrite_c=1)
    upper = np.triu(cross)
    return Moments(n, mean, upper + np.triu(upper, 1).T)


def accumulate(blocks: Iterable[np.ndarray], p: int) -> Moments:
    """Moments of all rows of an iterable of (rows, p) blocks."""
    total = Moments.empty(p)
    for block in blocks:
        total = total.merge(Moments.of(block))
    return total


def merge_all(parts: Iterable[Moments]) -> Moments:
    parts = list(parts)
    total = parts[0]
    for m in parts[1:]:
        total = total.merge(m)
    return total


def project(m: Moments, p: int, mean: np.ndarray, components: np.ndarray | None) -> Moments:
    """The moments of [(x - mean) V | rest] from those of [x | rest] (x: the first p columns, V: components,
    None for the identity): the coordinates of a basis found after the pass over the rows, without a second
    pass (z is affine in x, so mean_z = (mean_x - mean) V and cross_zz = V^T cross_xx V)."""
    shift = np.concatenate([m.mean[:p] - mean, m.mean[p:]])
    if components is None:
        return Moments(m.count, shift, m.cross)
    V = components
    xx, xr = m.cross[:p, :p], m.cross[:p, p:]
    zz = V.T @ (xx @ V)
    zr = V.T @ xr
    cross = np.block([[(zz + zz.T) / 2, zr], [zr.T, m.cross[p:, p:]]])
    return Moments(m.count, np.concatenate([shift[:p] @ V, shift[p:]]), cross)


def select(m: Moments, columns: np.ndarray | list[int]) -> Moments:
    """The moments of a subset of the columns (in the given order)."""
    idx = np.asarray(columns, dtype=np.int64)
    return Moments(m.count, m.mean[idx], m.cross[np.ix_(idx, idx)])
