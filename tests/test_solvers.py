import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

from w2s_cli import LogisticClassifier, RidgelessRegressor, RidgeRegressor
from w2s_cli.numerics.moments import Moments
from w2s_cli.numerics.variance import fit_moments, fit_rows


@pytest.mark.parametrize("estimator", [RidgelessRegressor(), RidgeRegressor(), LogisticClassifier()])
def test_scikit_learn_estimator_checks(estimator):
    check_estimator(estimator)


def test_clone_pipeline_and_grid_search_work():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 10))
    y = X @ rng.normal(size=10) + 0.1 * rng.normal(size=120)
    model = make_pipeline(PCA(5), RidgelessRegressor())
    assert model.fit(X, y).score(X, y) > 0.1
    assert clone(RidgelessRegressor(fit_intercept=False)).get_params() == {"fit_intercept": False}
    search = GridSearchCV(make_pipeline(PCA(), RidgelessRegressor()), {"pca__n_components": [2, 8]}, cv=3)
    assert search.fit(X, y).best_params_ == {"pca__n_components": 8}


@pytest.mark.parametrize("n,d", [(80, 20), (20, 80)])  # over- and under-determined
def test_ridgeless_is_min_norm_lstsq(n, d):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
    model = RidgelessRegressor(fit_intercept=False).fit(X, Y)
    expected = np.linalg.lstsq(X, Y, rcond=None)[0]
    np.testing.assert_allclose(model.coef_, expected, atol=1e-10)
    assert model.coef_.dtype == np.float64 and model.rank_ == min(n, d)


def test_ridgeless_intercept_matches_scikit_learn_and_interpolates_when_wide():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(300, 50)).astype(np.float32) + 3.0, rng.normal(size=(300, 2)) + 5.0
    ours, theirs = RidgelessRegressor().fit(X, Y), LinearRegression().fit(X.astype(np.float64), Y)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X.astype(np.float64)), rtol=1e-10)
    wide = rng.normal(size=(30, 50))
    np.testing.assert_allclose(RidgelessRegressor().fit(wide, Y[:30]).predict(wide), Y[:30], atol=1e-8)


def test_moments_path_equals_rows_path_and_merges_exactly():
    rng = np.random.default_rng(2)
    Z, Y = rng.normal(size=(500, 12)) + 10, rng.normal(size=(500, 3))
    whole = Moments.of(np.hstack([Z, Y]))
    parts = Moments.of(np.hstack([Z[:123], Y[:123]])).merge(Moments.of(np.hstack([Z[123:], Y[123:]])))
    np.testing.assert_allclose(parts.cross, whole.cross, rtol=1e-10)
    a, b = fit_moments(parts, slice(0, 12), slice(12, None)), fit_rows(Z, Y)
    np.testing.assert_allclose(a.predict(Z), b.predict(Z), rtol=1e-8)
    np.testing.assert_allclose(a.gram_pinv, b.gram_pinv, rtol=1e-8)
    assert a.rss == pytest.approx(b.rss, rel=1e-8) and a.rank == b.rank == 12


def test_ridge_picks_a_penalty_and_shrinks():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 60))
    Y = X[:, :1] + 0.5 * rng.normal(size=(40, 1))
    ridge, ridgeless = RidgeRegressor().fit(X, Y), RidgelessRegressor().fit(X, Y)
    assert ridge.alpha_ > 0 and np.linalg.norm(ridge.coef_) < np.linalg.norm(ridgeless.coef_)


def test_logistic_on_hard_and_soft_targets():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 5))
    labels = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0)
    hard = LogisticClassifier().fit(X, labels)
    assert (hard.predict(X) == labels).mean() > 0.9 and hard.predict_proba(X).shape == (300, 4)
    from sklearn.linear_model import LogisticRegression

    ref = LogisticRegression(C=1.0, max_iter=2000).fit(X, labels)
    np.testing.assert_allclose(hard.predict_proba(X), ref.predict_proba(X), atol=2e-3)
    soft = LogisticClassifier().fit(X, hard.predict_proba(X))  # a student on its teacher's softmax outputs
    assert np.abs(soft.predict_proba(X) - hard.predict_proba(X)).mean() < 0.05
    with pytest.raises(ValueError, match="class probabilities"):
        LogisticClassifier().fit(X, rng.normal(size=(300, 4)))
