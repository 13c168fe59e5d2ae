"""The fitted heads of the four models and the shared bases they live in, as the stages build them.

A head is fitted on the coordinates of its backbone's shared basis: ridgeless from the float64 moments of
its training rows (or, with fewer rows than coordinates, from the rows: the minimum-norm solution), ridge
and logistic from the rows themselves. Its linear map is stored in the embedding's own coordinates so that
`X @ coef + intercept` (then softmax for logistic) gives its outputs whatever the basis.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.special

from w2s_cli.distributed import CHUNK_ROWS
from w2s_cli.numerics.moments import Moments, accumulate
from w2s_cli.numerics.solvers import LinearFit, LogisticClassifier, fit_ridgeless, make_solver
from w2s_cli.numerics.subspaces import PrincipalBasis, fit_basis
from w2s_cli.options import Solver
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.records import FitRecord


def my_blocks(emb: EmbeddingSet, rows: np.ndarray):
    """(row indices, embeddings) of this process's chunks of the sorted `rows` (all of them in a single
    process; every world-size-th chunk under torchrun)."""
    from w2s_cli.distributed import mine

    rows = np.sort(rows)
    for k, start in enumerate(range(0, len(rows), CHUNK_ROWS)):
        if mine(k):
            idx = rows[start : start + CHUNK_ROWS]
            yield idx, emb.rows(idx)


def train_moments(emb: EmbeddingSet, rows: np.ndarray) -> Moments:
    """Moments of the embeddings over `rows`, read in chunks (split over torchrun ranks, then combined)."""
    from w2s_cli.distributed import all_reduce_moments

    return all_reduce_moments(accumulate((block for _, block in my_blocks(emb, rows)), emb.width))


_BASES: dict[tuple, tuple[PrincipalBasis, dict, np.ndarray]] = {}  # the last few, by what they depend on
_KEEP = 4


def shared_basis(
    emb: EmbeddingSet, rows: np.ndarray, spec: str | int | None, energy: float, n_labeled: int
) -> tuple[PrincipalBasis, dict, np.ndarray]:
    """A backbone's basis over the n + N training rows (labels unused), its record and its eigenvalues.
    `auto` is capped at n/2 so that no fit on n rows nears its interpolation threshold. The last few are kept
    in this process by the embeddings' artifact_id and the rows (rank-teachers' proxies, one per teacher on
    one split, share the strong one)."""
    rows = np.asarray(rows)
    key = (emb.meta.get("artifact_id"), hashlib.sha256(rows.tobytes()).hexdigest(), str(spec), energy, n_labeled)
    if key[0] is None or key not in _BASES:
        basis, record, spectrum = basis_of(train_moments(emb, rows), spec, energy, n_labeled)
        if key[0] is None:
            return basis, record, spectrum.values
        _BASES[key] = (basis, record, spectrum.values)
        while len(_BASES) > _KEEP:
            _BASES.pop(next(iter(_BASES)))
    basis, record, values = _BASES[key]
    return basis, copy.deepcopy(record), values


def basis_of(moments: Moments, spec: str | int | None, energy: float, n_labeled: int):
    """`shared_basis` from the moments of the training rows: (basis, record, spectrum)."""
    return fit_basis(spec, moments, energy, cap=max(1, n_labeled // 2))


@dataclass
class FittedHead:
    """A fitted head: `fit` (ridgeless, with what its variance needs) or a scikit-learn `estimator`."""

    solver: Solver
    fit: LinearFit | None = None
    estimator: Any = None

    def outputs(self, Z: np.ndarray) -> np.ndarray:
        if self.fit is not None:
            return self.fit.predict(Z)
        if isinstance(self.estimator, LogisticClassifier):
            return self.estimator.predict_proba(Z)
        return self.estimator.predict(Z).reshape(len(Z), -1)

    def linear(self) -> tuple[np.ndarray, np.ndarray]:
        """(coef (p, C), intercept (C,)) on the basis coordinates; the logistic head's are logits."""
        if self.fit is not None:
            return self.fit.coef, self.fit.y_mean - self.fit.x_mean @ self.fit.coef
        coef = np.asarray(self.estimator.coef_, np.float64)
        return coef.reshape(coef.shape[0], -1), np.atleast_1d(np.asarray(self.estimator.intercept_, np.float64))

    def record(self) -> FitRecord:
        if self.fit is not None:
            return FitRecord(self.solver.value, **self.fit.record())
        extra = {"alpha": self.estimator.alpha_} if hasattr(self.estimator, "alpha_") else {}
        return FitRecord(self.solver.value, int(getattr(self.estimator, "n_rows_", 0)) or None, extra=extra)


def fit_head(
    solver: Solver, Z: np.ndarray | None, Y: np.ndarray | None, moments: Moments | None = None, p: int | None = None
) -> FittedHead:
    """Fit a head on coordinates Z (n, p) and targets Y (n, C); ridgeless may take the moments of [Z | Y]
    instead of (or besides) the rows: `fit_ridgeless`, which uses the moments when they hold more rows than
    coordinates and the rows otherwise, or where the moments cannot resolve the design."""
    solver = Solver(solver)
    if solver == Solver.ridgeless:
        rows = None if Z is None or Y is None else (Z, Y)
        return FittedHead(solver, fit=fit_ridgeless(moments, Z.shape[1] if p is None else p, rows=rows))
    est = make_solver(solver.value)
    if solver == Solver.logistic:
        est.fit(Z, Y if not _one_hot(Y) else Y.argmax(axis=1))
        if _one_hot(Y) and len(est.classes_) != Y.shape[1]:  # classes absent from the training labels
            est = _pad_classes(est, Y.shape[1])
    else:
        est.fit(Z, Y)
    est.n_rows_ = len(Z)
    return FittedHead(solver, estimator=est)


def _one_hot(Y: np.ndarray) -> bool:
    return bool(((Y == 0) | (Y == 1)).all() and (Y.sum(axis=1) == 1).all())


def _pad_classes(est: LogisticClassifier, n_classes: int) -> LogisticClassifier:
    """Give classes never seen in training a logit far below the rest (probability ~0)."""
    coef = np.zeros((est.coef_.shape[0], n_classes))
    intercept = np.full(n_classes, -1e3)
    coef[:, est.classes_], intercept[est.classes_] = est.coef_, est.intercept_
    est.coef_, est.intercept_, est.classes_ = coef, intercept, np.arange(n_classes)
    return est


def to_embedding_space(basis: PrincipalBasis, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A head on basis coordinates z = (x - mean) V as a map on the embeddings x: (V coef, intercept - mean V coef)."""
    full = coef if basis.components is None else basis.components @ coef
    return full, intercept - basis.mean @ full


def apply(coef: np.ndarray, intercept: np.ndarray, X: np.ndarray, link: str) -> np.ndarray:
    z = np.asarray(X, np.float64) @ coef + intercept
    return scipy.special.softmax(z, axis=1) if link == "softmax" else z
