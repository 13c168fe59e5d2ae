"""Teacher and student solvers: scikit-learn estimators in float64 (so `clone`, `get_params`, pipelines and
grid search work), plus the moment-based path the stages use to fit without holding the rows.

* `RidgelessRegressor`: minimum-norm least squares on centred data, theta = pinv(Xc) Yc (the paper's
  ridgeless regression). With more rows than columns it solves the normal equations from the float64
  Gram matrix (Cholesky, or a cut-off eigen-pseudo-inverse when rank-deficient): the same solution,
  ~3x faster than LAPACK's gelsd on the rows and computable from streamed moments. With fewer rows it
  keeps the rows and takes gelsd's minimum-norm solution.
* `RidgeRegressor`: ridge with the penalty chosen by leave-one-out CV on the training rows
  (scikit-learn's RidgeCV).
* `LogisticClassifier`: multinomial logistic regression by L-BFGS on one-hot or soft targets (the authors'
  heads: the student learns from the teacher's softmax outputs by cross-entropy). scikit-learn's
  LogisticRegression takes hard labels only, hence our own 40 lines.
"""

from __future__ import annotations

import contextlib
from numbers import Integral, Real

import numpy as np
import scipy.linalg
import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval  # scikit-learn's own parameter checks (since 1.2)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from threadpoolctl import threadpool_limits

from w2s_cli.numerics.moments import Moments, of_columns

EPS = np.finfo(np.float64).eps


def gram_pinv(G: np.ndarray, rows: int) -> tuple[np.ndarray, int, float]:
    """(G^+, rank, condition number of the rows) for a Gram matrix G = Xc^T Xc of `rows` rows.

    Eigenvalues below lambda_max * max(rows, p) * eps count as zero: the precision of a float64 Gram.
    """
    w, V = np.linalg.eigh(G)
    if len(w) == 0 or w[-1] <= 0:
        return np.zeros_like(G), 0, float("inf")
    keep = w > w[-1] * max(rows, len(w)) * EPS
    Vk = V[:, keep]
    cond = float(np.sqrt(w[-1] / w[keep][0]))
    return (Vk / w[keep]) @ Vk.T, int(keep.sum()), cond


def gram_solve(G: np.ndarray, B: np.ndarray, rows: int) -> tuple[np.ndarray, int, float]:
    """Minimum-norm solution of G theta = B (G a Gram matrix of `rows` rows), its rank and condition number.
    Cholesky when G is safely positive definite, else the cut-off eigen-pseudo-inverse."""
    p = len(G)
    if p == 0:
        return np.zeros((0, B.shape[1])), 0, float("nan")
    # p x p factorisations (tridiagonal reduction, Cholesky panels) lean on level-2 BLAS, where threads only
    # add synchronisation, and stall for seconds when another process holds the cores: one thread is steady
    with threadpool_limits(1, user_api="blas") if p >= 256 else contextlib.nullcontext():
        w = scipy.linalg.eigvalsh(G)
        if w[0] > w[-1] * max(rows, p) * EPS * 1e3:
            factor = scipy.linalg.cho_factor(G, check_finite=False)
            return scipy.linalg.cho_solve(factor, B, check_finite=False), p, float(np.sqrt(w[-1] / w[0]))
        Gp, rank, cond = gram_pinv(G, rows)
        return Gp @ B, rank, cond


class RidgelessRegressor(RegressorMixin, BaseEstimator):
    """Minimum-norm least squares in float64; intercept = target mean when `fit_intercept`.

    Fitted: coef_ (p,) or (p, C), intercept_, rank_, condition_number_ (of the centred rows).
    """

    def __init__(self, fit_intercept: bool = True) -> None:
        self.fit_intercept = fit_intercept

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> RidgelessRegressor:
        # float32 rows stay float32 here: the moments convert them to float64 chunk by chunk
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True)
        Y = y.reshape(len(y), -1)
        if len(X) > X.shape[1]:
            self._fit_moments(of_columns(X, Y) if self.fit_intercept else _raw(X, Y), X.shape[1])
        else:
            X = X.astype(np.float64, copy=False)
            x_mean = X.mean(axis=0) if self.fit_intercept else np.zeros(X.shape[1])
            y_mean = Y.mean(axis=0) if self.fit_intercept else np.zeros(Y.shape[1])
            Xc = X - x_mean
            theta, _, rank, sv = scipy.linalg.lstsq(
                Xc, Y - y_mean, cond=EPS * max(Xc.shape), lapack_driver="gelsd", check_finite=False
            )
            self.coef_, self.intercept_ = theta, y_mean - x_mean @ theta
            self.rank_ = int(rank)
            kept = sv[sv > EPS * max(Xc.shape) * sv[0]] if len(sv) and sv[0] > 0 else sv[:0]
            self.condition_number_ = float(kept[0] / kept[-1]) if len(kept) else float("inf")
        if y.ndim == 1:
            self.coef_, self.intercept_ = self.coef_[:, 0], float(self.intercept_[0])
        return self

    def fit_moments(self, moments: Moments, n_features: int) -> RidgelessRegressor:
        """Fit from the moments of [X | Y] rows (the first n_features columns are X), never seeing the rows."""
        self.n_features_in_ = n_features
        self._fit_moments(moments, n_features)
        return self

    def _fit_moments(self, m: Moments, p: int) -> None:
        x, y = slice(0, p), slice(p, None)
        theta, self.rank_, self.condition_number_ = gram_solve(m.cross[x, x], m.cross[x, y], m.count)
        self.coef_ = theta
        self.intercept_ = m.mean[y] - m.mean[x] @ theta

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_ + self.intercept_


def _raw(X: np.ndarray, Y: np.ndarray) -> Moments:
    """Uncentred moments (mean 0): least squares without an intercept."""
    Z = np.hstack([X, Y])
    return Moments(len(Z), np.zeros(Z.shape[1]), Z.T @ Z)


class RidgeRegressor(RegressorMixin, BaseEstimator):
    """Ridge; the penalty alpha_ is chosen from `alphas` by efficient leave-one-out CV (scikit-learn RidgeCV)."""

    def __init__(self, alphas: tuple[float, ...] = tuple(np.logspace(-4, 6, 21))) -> None:
        self.alphas = alphas

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> RidgeRegressor:
        from sklearn.linear_model import RidgeCV

        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        model = RidgeCV(alphas=self.alphas, fit_intercept=True).fit(X, y)
        self.alpha_ = float(model.alpha_)
        self.coef_ = np.asarray(model.coef_, np.float64).T
        self.intercept_ = model.intercept_
        self.rank_ = X.shape[1]
        self.condition_number_ = float("nan")
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_ + self.intercept_


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class LogisticClassifier(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression, L2 penalty 1/(2C) ||W||^2 on the summed cross-entropy, by L-BFGS.

    y: class labels (n,) or target probabilities (n, C) (soft labels: the W2S student on its teacher's
    softmax outputs). predict_proba gives the softmax; predict the most probable class.
    """

    _parameter_constraints: dict = {  # checked by fit, as scikit-learn's own estimators do
        "C": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-6) -> None:
        self.C, self.max_iter, self.tol = C, max_iter, tol

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogisticClassifier:
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True)
        if y.ndim == 2 and y.shape[1] > 1:
            T = np.asarray(y, dtype=np.float64)
            if (T < -1e-9).any() or not np.allclose(T.sum(axis=1), 1.0, atol=1e-6):
                raise ValueError("soft targets must be rows of class probabilities (>= 0, summing to 1)")
            self.classes_ = np.arange(T.shape[1])
        else:
            y = column_or_1d(y, warn=True)
            check_classification_targets(y)
            self.classes_, codes = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError("logistic regression needs at least two classes; the training labels hold one class")
            T = np.eye(len(self.classes_))[codes]
        n, p = X.shape
        k = T.shape[1]
        mu = X.mean(axis=0)
        Xc = X - mu  # centring only conditions the problem; the intercept is free (unpenalised)

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            W, b = w[: p * k].reshape(p, k), w[p * k :]
            Z = Xc @ W + b
            Z -= Z.max(axis=1, keepdims=True)
            logsum = np.log(np.exp(Z).sum(axis=1, keepdims=True))
            P = np.exp(Z - logsum)
            value = -(T * (Z - logsum)).sum() + 0.5 / self.C * (W * W).sum()
            G = P - T
            grad = np.concatenate([(Xc.T @ G + W / self.C).ravel(), G.sum(axis=0)])
            return float(value), grad

        res = scipy.optimize.minimize(
            loss,
            np.zeros(p * k + k),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol},
        )
        W, b = res.x[: p * k].reshape(p, k), res.x[p * k :]
        self.coef_, self.intercept_ = W, b - mu @ W
        self.n_iter_ = int(res.nit)
        self.rank_, self.condition_number_ = p, float("nan")
        return self

    def _logits(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_ + self.intercept_

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits (n, C); for two classes scikit-learn's convention, the logit difference (n,)."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self._logits(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        best = self.predict_proba(X).argmax(axis=1)
        return self.classes_[best]


def make_solver(name: str) -> BaseEstimator:
    """A solver by name: ridgeless, ridge or logistic."""
    return {"ridgeless": RidgelessRegressor, "ridge": RidgeRegressor, "logistic": LogisticClassifier}[str(name)]()


def outputs(model: BaseEstimator, X: np.ndarray) -> np.ndarray:
    """A fitted head's output vectors (n, C): regression outputs, or class probabilities."""
    if isinstance(model, LogisticClassifier):
        return model.predict_proba(X)
    out = model.predict(X)
    return out.reshape(len(X), -1)
