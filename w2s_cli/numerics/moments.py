"""Row moments in float64: count, mean and centred cross-product matrix, accumulated chunk by chunk.

Every fit, spectrum, overlap and variance coefficient in w2s needs only these, so a stage streams the rows
of an artifact through `Moments.of` and `merge` and holds O(p^2) numbers, never the rows. Merging uses
Chan, Golub and LeVeque's pairwise update, exact and stable whatever the order; that is also how moments
from several processes are combined (see `w2s_cli.distributed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np


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
        X = np.asarray(X, dtype=np.float64)
        if len(X) == 0:
            return cls.empty(X.shape[1])
        mean = X.mean(axis=0)
        Xc = X - mean
        return cls(len(X), mean, Xc.T @ Xc)

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

    def block(self, a: slice, b: slice | None = None) -> np.ndarray:
        return self.cross[a, a if b is None else b]


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


Reducer = Callable[[Moments], Moments]


def local(m: Moments) -> Moments:
    """The reducer of a single process: nothing to combine."""
    return m


def select(m: Moments, columns: np.ndarray | list[int]) -> Moments:
    """The moments of a subset of the columns (in the given order)."""
    idx = np.asarray(columns, dtype=np.int64)
    return Moments(m.count, m.mean[idx], m.cross[np.ix_(idx, idx)])
