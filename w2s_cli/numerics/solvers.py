"""Teacher and student solvers: the ridgeless fit every stage runs, and scikit-learn estimators in float64
(so `clone`, `get_params`, pipelines and grid search work).

* `fit_ridgeless`: minimum-norm least squares with an intercept, theta = pinv(Zc) Yc (the paper's ridgeless
  regression). With more rows than columns it solves from the float64 moments of [Z | Y] (an eigen-
  pseudo-inverse of the Gram matrix, computable from streamed rows); with fewer rows, or where the moments
  cannot resolve the design (see `rank_tolerance`), from the rows by SVD (LAPACK's minimum norm, as
  `lstsq`). The stages fit every ridgeless head through it; `RidgelessRegressor` wraps it.
* `RidgeRegressor`: ridge with the penalty chosen by leave-one-out CV on the training rows
  (scikit-learn's RidgeCV).
* `LogisticClassifier`: multinomial logistic regression by L-BFGS on one-hot or soft targets (the authors'
  heads: the student learns from the teacher's softmax outputs by cross-entropy). scikit-learn's
  LogisticRegression takes hard labels only, hence our own 40 lines.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import scipy.optimize
import scipy.special
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval  # scikit-learn's own parameter checks (since 1.2)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from threadpoolctl import threadpool_limits

from w2s_cli.numerics.moments import EPS, Moments, above_cutoff, of_columns, rank_tolerance

NEAR_INTERPOLATION = 0.8  # a fit with d >= 0.8 x its training rows is flagged


def one_thread(width: int) -> contextlib.AbstractContextManager:
    """BLAS on one thread for eigen- and singular-value decompositions `width` >= 256 columns wide: they lean
    on level-2 BLAS, where threads only add synchronisation, and stall when another process holds the cores
    (p = 1,280 on the shared 2 cores: eigh 14-20 s threaded against 1.2 s on one thread; SVD of 1,300 rows
    23-30 s against 3 s)."""
    return threadpool_limits(1, user_api="blas") if width >= 256 else contextlib.nullcontext()


def gram_pinv(G: np.ndarray, rows: int) -> tuple[np.ndarray, int, float]:
    """(G^+, rank, condition number of the rows) for a Gram matrix G = Xc^T Xc of `rows` rows, eigenvalues
    cut by `above_cutoff`.

    scipy.linalg.pinvh computes the same G^+, but with LAPACK's syev hard-coded (6.7x slower than numpy's
    syevd at p = 1,280 here) and without the eigenvalues the condition number needs.
    """
    if len(G) == 0:
        return np.zeros_like(G), 0, float("inf")
    with one_thread(len(G)):
        w, V = np.linalg.eigh(G)
    keep = above_cutoff(w, rows=rows, cols=len(w))
    if not keep.any():
        return np.zeros_like(G), 0, float("inf")
    Vk = V[:, keep]
    cond = float(np.sqrt(w[-1] / w[keep][0]))
    return (Vk / w[keep]) @ Vk.T, int(keep.sum()), cond


@dataclass
class LinearFit:
    """Least squares with an intercept: f(z) = y_mean + (z - x_mean) @ coef, and what its variance needs.

    ill_determined: the design has directions the moments cannot resolve (singular values of the centred
    rows below sqrt(rank_tolerance) of the largest): a fit from the rows keeps them (lstsq's answer, fragile:
    rounding in them is amplified by the condition number); a fit from moments alone drops them, and cannot
    tell them from exact zeros. solved_from: "moments" or "rows".
    """

    x_mean: np.ndarray
    y_mean: np.ndarray
    coef: np.ndarray  # (p, C)
    gram_pinv: np.ndarray  # (Zc^T Zc)^+, (p, p)
    rows: int
    rank: int
    condition_number: float
    rss: float | None  # residual sum of squares over rows and columns; None when it is below rounding
    ill_determined: bool = False
    solved_from: str = "moments"

    def predict(self, Z: np.ndarray) -> np.ndarray:
        return self.y_mean + (np.asarray(Z, np.float64) - self.x_mean) @ self.coef

    @property
    def n_outputs(self) -> int:
        return self.coef.shape[1]

    def sigma2(self) -> float | None:
        """Residual variance per output column, RSS / (rows - rank - 1); None when the fit interpolates."""
        dof = self.rows - self.rank - 1
        if dof <= 0 or self.rss is None:
            return None
        return self.rss / (self.n_outputs * dof)

    def near_interpolation(self) -> bool:
        return self.rank >= NEAR_INTERPOLATION * self.rows

    def record(self) -> dict:
        return {
            "rows": self.rows,
            "rank": self.rank,
            "condition_number": self.condition_number,
            "ill_determined": self.ill_determined,
            "solved_from": self.solved_from,
        }


def fit_moments(m: Moments, x: slice, y: slice) -> LinearFit:
    """The minimum-norm least-squares fit of columns y on columns x from their joint (centred) moments.

    Ill-determined when it keeps fewer directions than the rows could hold (min(rows - 1, p)): the Gram
    cannot tell directions below its resolution from exact zeros."""
    G, B = m.cross[x, x], m.cross[x, y]
    Gp, rank, cond = gram_pinv(G, m.count)
    coef = Gp @ B
    total = float(np.trace(m.cross[y, y]))
    rss = total - float(np.sum(B * coef))
    # below this the residual is rounding error of the subtraction (the fit interpolates)
    rss = rss if rss > total * EPS * 64 * max(len(G), 1) else None
    unresolved = rank < min(m.count - 1, len(G))
    return LinearFit(m.mean[x].copy(), m.mean[y].copy(), coef, Gp, m.count, rank, cond, rss, unresolved)


def fit_rows(Z: np.ndarray, Y: np.ndarray, *, centre: bool = True) -> LinearFit:
    """The same fit from the rows themselves: SVD of the centred rows, singular values cut by
    `above_cutoff` (LAPACK gelsd's minimum-norm solution, as numpy's and scipy's `lstsq`).
    centre=False: no intercept (x_mean, y_mean = 0)."""
    Z, Y = np.asarray(Z, np.float64), np.asarray(Y, np.float64).reshape(len(Z), -1)
    x_mean = Z.mean(axis=0) if centre else np.zeros(Z.shape[1])
    y_mean = Y.mean(axis=0) if centre else np.zeros(Y.shape[1])
    Zc, Yc = Z - x_mean, Y - y_mean
    with one_thread(Zc.shape[1]):
        U, s, Vt = np.linalg.svd(Zc, full_matrices=False)
    keep = above_cutoff(s, rows=Zc.shape[0], cols=Zc.shape[1])
    U, s, Vt = U[:, keep], s[keep], Vt[keep]
    coef = Vt.T @ ((U.T @ Yc) / s[:, None])
    resid = Yc - Zc @ coef
    total = float((Yc**2).sum())
    rss = float((resid**2).sum())
    rss = rss if rss > total * EPS * 64 * max(Zc.shape) else None
    cond = float(s[0] / s[-1]) if len(s) else float("inf")
    fragile = bool(len(s) and s[-1] <= s[0] * np.sqrt(rank_tolerance(*Zc.shape)))
    gp = (Vt.T / s**2) @ Vt
    return LinearFit(x_mean, y_mean, coef, gp, len(Z), int(keep.sum()), cond, rss, fragile, "rows")


def fit_ridgeless(
    moments: Moments | None,
    p: int,
    *,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
    centre: bool = True,
) -> LinearFit:
    """The ridgeless fit of every stage and of `RidgelessRegressor`: Y on Z by minimum-norm least squares.

    moments: of [Z | Y] (the first p columns are Z; centred, or raw for centre=False), used when they hold
    more rows than p; rows: (Z (n, p), Y (n, C)), used otherwise, and to refit when the moments cannot
    resolve the design (`fit_moments` ill-determined: singular values below sqrt(rank_tolerance) of the
    largest, where lstsq on the rows keeps them). Without rows such a fit stays from moments, flagged.
    """
    if moments is not None and moments.count > p:
        fit = fit_moments(moments, slice(0, p), slice(p, None))
        if not fit.ill_determined or rows is None:
            return fit
    elif rows is None:
        count = 0 if moments is None else moments.count
        raise ValueError(f"a ridgeless fit of {p} columns on {count} rows needs the rows, not only their moments")
    return fit_rows(*rows, centre=centre)


class RidgelessRegressor(RegressorMixin, BaseEstimator):
    """Minimum-norm least squares in float64 (`fit_ridgeless`, the stages' fit); intercept = target mean
    when `fit_intercept`.

    Fitted: coef_ (p,) or (p, C), intercept_, rank_, condition_number_ (of the centred rows),
    ill_determined_ and linear_fit_ (the `LinearFit`, with what the variance analysis needs).
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
        moments = None
        if len(X) > X.shape[1]:
            moments = of_columns(X, Y) if self.fit_intercept else _raw(X, Y)
        fit = fit_ridgeless(moments, X.shape[1], rows=(X, Y), centre=self.fit_intercept)
        self.linear_fit_ = fit
        self.coef_, self.intercept_ = fit.coef, fit.y_mean - fit.x_mean @ fit.coef
        self.rank_, self.condition_number_, self.ill_determined_ = fit.rank, fit.condition_number, fit.ill_determined
        if y.ndim == 1:
            self.coef_, self.intercept_ = self.coef_[:, 0], float(self.intercept_[0])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_ + self.intercept_


def _raw(X: np.ndarray, Y: np.ndarray) -> Moments:
    """Uncentred moments (mean 0): least squares without an intercept."""
    Z = np.hstack([X, Y]).astype(np.float64, copy=False)
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
            logp = scipy.special.log_softmax(Xc @ W + b, axis=1)
            value = -(T * logp).sum() + 0.5 / self.C * (W * W).sum()
            G = np.exp(logp) - T
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
        return scipy.special.softmax(self._logits(X), axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        best = self.predict_proba(X).argmax(axis=1)
        return self.classes_[best]


def make_solver(name: str) -> BaseEstimator:
    """A solver by name: ridgeless, ridge or logistic."""
    return {"ridgeless": RidgelessRegressor, "ridge": RidgeRegressor, "logistic": LogisticClassifier}[str(name)]()
