import numpy as np
import pytest

from w2s_cli import W2SError
from w2s_cli.solvers import LogisticClassifier, RidgelessRegressor, RidgeRegressor, principal_basis


@pytest.mark.parametrize("n,d", [(80, 20), (20, 80)])  # over- and under-determined
def test_ridgeless_is_min_norm_lstsq(n, d):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
    model = RidgelessRegressor(fit_intercept=False).fit(X, Y)
    expected = np.linalg.lstsq(X, Y, rcond=None)[0]
    np.testing.assert_allclose(model.coef_, expected, atol=1e-10)
    assert model.coef_.dtype == np.float64


def test_ridgeless_intercept_is_lstsq_on_centred_data():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(30, 50)) + 3.0, rng.normal(size=(30, 2)) + 5.0
    model = RidgelessRegressor().fit(X, Y)
    theta = np.linalg.lstsq(X - X.mean(0), Y - Y.mean(0), rcond=None)[0]
    np.testing.assert_allclose(model.coef_, theta, atol=1e-10)
    np.testing.assert_allclose(model.predict(X), Y, atol=1e-8)  # interpolates (n < d)


def test_subspace_fit_equals_manual_pca_then_lstsq():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(100, 12)) @ rng.normal(size=(12, 12)), rng.normal(size=(100, 1))
    model = RidgelessRegressor(subspace=4).fit(X, Y)
    Xc = X - X.mean(0)
    basis = np.linalg.svd(Xc, full_matrices=False)[2][:4].T
    P = Xc @ basis
    theta = np.linalg.lstsq(P, Y - Y.mean(0), rcond=None)[0]
    np.testing.assert_allclose(model.predict(X), P @ theta + Y.mean(0), atol=1e-8)
    assert model.subspace_dim_ == 4
    mean, b = principal_basis(X, 4)
    np.testing.assert_allclose(np.abs(b.T @ basis), np.eye(4), atol=1e-8)


def test_ridge_picks_a_penalty_and_shrinks():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 60))
    Y = X[:, :1] + 0.5 * rng.normal(size=(40, 1))
    ridge = RidgeRegressor().fit(X, Y)
    ridgeless = RidgelessRegressor().fit(X, Y)
    assert ridge.alpha_ > 0
    assert np.linalg.norm(ridge.coef_) < np.linalg.norm(ridgeless.coef_)


def test_logistic_outputs_probabilities_for_all_classes():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 5))
    labels = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0)  # classes 0..3, class 4 never seen
    Y = np.eye(5)[labels]
    p = LogisticClassifier().fit(X, Y).predict(X)
    assert p.shape == (60, 5)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[:, 4].max() < 1e-6
    assert (p.argmax(1) == labels).mean() > 0.9


def test_bad_inputs_are_user_errors():
    with pytest.raises(W2SError, match="NaN"):
        RidgelessRegressor().fit(np.array([[np.nan, 1.0], [1.0, 2.0]]), np.ones((2, 1)))
    with pytest.raises(W2SError, match="targets"):
        RidgelessRegressor().fit(np.ones((3, 2)), np.ones((4, 1)))
    model = RidgelessRegressor().fit(np.eye(3), np.ones((3, 1)))
    with pytest.raises(W2SError, match="expects 3 features"):
        model.predict(np.ones((2, 4)))
