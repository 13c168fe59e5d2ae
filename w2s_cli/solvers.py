"""Teacher and student solvers as scikit-learn-style estimators, all in float64.

* `RidgelessRegressor`: minimum-norm least squares, theta = pinv(X) Y (the paper's ridgeless regression).
* `RidgeRegressor`: ridge with the penalty chosen by leave-one-out CV on the training samples only.
* `LogisticClassifier`: multinomial logistic regression; its output is the softmax probability vector.

Each optionally fits inside a principal subspace first: the top-K principal directions of its own training
samples (`subspace=K`, or `subspace="auto"` for K = the spectral intrinsic dimension at `energy`).
Fitted state: `coef_` (D, C) and `intercept_` (C,) in the original coordinates, so
`predict(X) = X @ coef_ + intercept_` whatever the subspace, `subspace_dim_`, and `spectrum_` (the training
samples' covariance eigendecomposition when a subspace was fitted).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.linalg

from w2s_cli.dimension import covariance_spectrum, energy_dimension
from w2s_cli.errors import W2SError

SOLVERS = ("ridgeless", "ridge", "logistic")


def _check_xy(X: np.ndarray, Y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise W2SError(f"expected a non-empty (samples, features) matrix, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise W2SError("features contain NaN or inf")
    if Y is None:
        return X, None
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape[0] != X.shape[0]:
        raise W2SError(f"{X.shape[0]} feature rows but {Y.shape[0]} targets")
    if not np.isfinite(Y).all():
        raise W2SError("targets contain NaN or inf")
    return X, Y


def principal_basis(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and the top-k principal directions (D, k) of the rows of X, from the D x D covariance."""
    _, evecs, mean = covariance_spectrum(X)
    return mean, evecs[:, :k]


class _Linear(ABC):
    """Shared fit/predict plumbing: optional principal-subspace projection, then `_solve`."""

    def __init__(self, subspace: int | str | None = None, energy: float = 0.99) -> None:
        self.subspace = subspace
        self.energy = energy

    def fit(self, X: np.ndarray, Y: np.ndarray) -> _Linear:
        """X: (n, D) features; Y: (n, C) targets (one-hot labels, soft labels or regression targets)."""
        X, Y = _check_xy(X, Y)
        if self.subspace is not None:
            evals, evecs, mean = covariance_spectrum(X)
            k = max(1, energy_dimension(evals, self.energy)) if self.subspace == "auto" else int(self.subspace)
            if not 1 <= k <= X.shape[1]:
                raise W2SError(f"subspace dimension must be in [1, {X.shape[1]}] (the embedding width), got {k}")
            basis = evecs[:, :k]
            theta, intercept = self._solve((X - mean) @ basis, Y)
            self.coef_ = basis @ theta
            self.intercept_ = intercept - mean @ self.coef_
            self.subspace_dim_ = k
            self.spectrum_ = (evals, evecs, mean)  # covariance eigendecomposition of the training samples
        else:
            self.coef_, self.intercept_ = self._solve(X, Y)
            self.subspace_dim_ = None
            self.spectrum_ = None
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(m, C) outputs."""
        X, _ = _check_xy(X)
        if X.shape[1] != self.coef_.shape[0]:
            raise W2SError(f"model expects {self.coef_.shape[0]} features, got {X.shape[1]}")
        return self._link(X @ self.coef_ + self.intercept_)

    def _link(self, z: np.ndarray) -> np.ndarray:
        return z

    @abstractmethod
    def _solve(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fitted (coef (D, C), intercept (C,)) on the (projected) training data."""


class RidgelessRegressor(_Linear):
    """Minimum-norm least squares on centred data (intercept = target mean): theta = pinv(Xc) Yc."""

    def __init__(self, subspace: int | str | None = None, energy: float = 0.99, fit_intercept: bool = True) -> None:
        super().__init__(subspace, energy)
        self.fit_intercept = fit_intercept

    def _solve(self, X, Y):
        if self.fit_intercept:
            x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
        else:
            x_mean, y_mean = np.zeros(X.shape[1]), np.zeros(Y.shape[1])
        # numpy's lstsq cut-off: singular values below eps * max(n, D) * sigma_max count as zero
        cond = np.finfo(np.float64).eps * max(X.shape)
        theta, _, rank, _ = scipy.linalg.lstsq(X - x_mean, Y - y_mean, cond=cond, lapack_driver="gelsd")
        self.rank_ = int(rank)
        return theta, y_mean - x_mean @ theta


class RidgeRegressor(_Linear):
    """Ridge; the penalty alpha_ is chosen from `alphas` by efficient leave-one-out CV (scikit-learn RidgeCV)."""

    def __init__(
        self,
        subspace: int | str | None = None,
        energy: float = 0.99,
        alphas: tuple[float, ...] = tuple(np.logspace(-4, 6, 21)),
    ) -> None:
        super().__init__(subspace, energy)
        self.alphas = alphas

    def _solve(self, X, Y):
        from sklearn.linear_model import RidgeCV

        model = RidgeCV(alphas=self.alphas, fit_intercept=True).fit(X, Y)
        self.alpha_ = float(model.alpha_)
        return np.asarray(model.coef_, np.float64).T.reshape(X.shape[1], Y.shape[1]), np.atleast_1d(
            np.asarray(model.intercept_, np.float64)
        )


class LogisticClassifier(_Linear):
    """Multinomial logistic regression (L-BFGS, L2 penalty C); Y is one-hot, the output softmax probabilities."""

    def __init__(
        self, subspace: int | str | None = None, energy: float = 0.99, C: float = 1.0, max_iter: int = 2000
    ) -> None:
        super().__init__(subspace, energy)
        self.C, self.max_iter = C, max_iter

    def _solve(self, X, Y):
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        labels = Y.argmax(axis=1)
        seen = np.unique(labels)
        if len(seen) < 2:
            raise W2SError("logistic solver needs at least two classes among the training labels")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(X, labels)
        coef = np.zeros((X.shape[1], Y.shape[1]))
        # classes never seen in training get a logit far below the rest: probability ~0
        intercept = np.full(Y.shape[1], -1e3)
        if len(seen) == 2:  # scikit-learn stores one logit for two classes
            coef[:, seen[1]], intercept[seen[0]], intercept[seen[1]] = model.coef_[0], 0.0, model.intercept_[0]
        else:
            coef[:, seen], intercept[seen] = model.coef_.T, model.intercept_
        return coef, intercept

    def _link(self, z):
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def make_solver(name: str, subspace: int | str | None = None, energy: float = 0.99) -> _Linear:
    """A solver by name; subspace None, "auto" (spectral dimension at `energy`) or K."""
    if name == "ridgeless":
        return RidgelessRegressor(subspace, energy)
    if name == "ridge":
        return RidgeRegressor(subspace, energy)
    if name == "logistic":
        return LogisticClassifier(subspace, energy)
    raise W2SError(f"unknown solver '{name}'; use one of {', '.join(SOLVERS)}")
