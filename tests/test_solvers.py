import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

from w2s_cli import LogisticClassifier, RidgelessRegressor, RidgeRegressor
from w2s_cli.numerics.moments import EPS, Moments, above_cutoff, of_columns, rank_tolerance
from w2s_cli.numerics.solvers import fit_moments, fit_ridgeless, fit_rows, gram_pinv
from w2s_cli.numerics.spectra import Spectrum
from w2s_cli.numerics.subspaces import overlap
from w2s_cli.options import Solver
from w2s_cli.report.render import _ill_determined
from w2s_cli.stages.heads import fit_head
from w2s_cli.store.records import FitRecord


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


def known_design(singular_values, n=200, C=2, seed=5):
    """Rows Z (n, p) whose centred singular values are exactly `singular_values`, with targets Y."""
    rng = np.random.default_rng(seed)
    p = len(singular_values)
    A = rng.normal(size=(n, p))
    U = np.linalg.qr(A - A.mean(axis=0))[0]  # orthogonal to the constant column: centring leaves s alone
    V = np.linalg.qr(rng.normal(size=(p, p)))[0]
    Z = (U * singular_values) @ V.T + rng.normal(size=p)
    return Z, Z @ rng.normal(size=(p, C)) + 0.1 * rng.normal(size=(n, C))


def test_one_rank_cutoff_rule_for_rows_grams_spectra_and_overlaps():
    """max(rows, cols) eps of the largest singular value for rows, of the largest eigenvalue for a Gram:
    sqrt of it in singular values, so a direction at 1e-9 is kept by the rows and dropped by the moments."""
    s = np.array([1.0, 1e-3, 1e-9, 1e-15])
    Z, Y = known_design(s)
    n, p = Z.shape
    assert rank_tolerance(n, p) == n * EPS and rank_tolerance(3, 4) == 4 * EPS
    assert above_cutoff(s, rows=n, cols=p).tolist() == [True, True, True, False]
    assert above_cutoff(s**2, rows=n, cols=p).tolist() == [True, True, False, False]
    assert not above_cutoff(np.zeros(3), rows=n, cols=3).any()
    assert fit_rows(Z, Y).rank == np.linalg.matrix_rank(Z - Z.mean(axis=0)) == 3  # numpy's default: the same rule
    m = Moments.of(Z)
    assert gram_pinv(m.cross, n)[1] == Spectrum.of(m).rank == 2
    both = Moments.of(np.hstack([Z, Z[:, ::-1]]))
    ov = overlap(both.cross, n, slice(0, p), slice(p, None))
    assert ov["d_s"] == ov["d_w"] == 2


def test_ill_conditioned_design_is_refitted_from_the_rows_and_flagged():
    Z, Y = known_design(np.array([1.0, 1e-3, 1e-9, 1e-15]))
    p = Z.shape[1]
    moments = of_columns(Z, Y)
    alone = fit_ridgeless(moments, p)  # no rows: the moments lose the 1e-9 direction and cannot say why
    assert (alone.rank, alone.ill_determined, alone.solved_from) == (2, True, "moments")
    fit = fit_ridgeless(moments, p, rows=(Z, Y))
    assert (fit.rank, fit.ill_determined, fit.solved_from) == (3, True, "rows")
    Zc, Yc = Z - Z.mean(axis=0), Y - Y.mean(axis=0)
    np.testing.assert_allclose(fit.coef, np.linalg.lstsq(Zc, Yc, rcond=None)[0], rtol=1e-6)
    assert not np.allclose(alone.coef, fit.coef, rtol=1e-3)  # lstsq's answer, not the moments'
    assert fit.record()["ill_determined"] is True and fit.record()["solved_from"] == "rows"
    # the same design, resolved: moments, full rank, not flagged; an exactly null direction is not flagged
    for s, rank in (([1.0, 1e-3, 1e-5, 1e-6], 4), ([1.0, 1e-3, 1e-5, 0.0], 3)):
        Z, Y = known_design(np.array(s))
        fit = fit_ridgeless(of_columns(Z, Y), p, rows=(Z, Y))
        assert (fit.rank, fit.ill_determined) == (rank, False)
        assert fit.solved_from == ("moments" if rank == p else "rows")


def test_ill_determined_fits_are_named_in_the_report():
    fits = {
        "ceiling": {
            "rank": 1223,
            "rows": 1300,
            "condition_number": 1.6e8,
            "ill_determined": True,
            "solved_from": "rows",
        }
    }
    typed = {k: FitRecord.from_json(v) for k, v in fits.items()}
    assert "strong ceiling (rank 1223, condition number 1.6e+08, from the rows" in _ill_determined(typed)[0]
    assert _ill_determined({"ceiling": FitRecord.from_json({**fits["ceiling"], "ill_determined": False})}) == []


@pytest.mark.parametrize("n,s", [(300, [1.0, 0.5, 1e-2, 1e-4]), (300, [1.0, 1e-3, 1e-9, 1e-15]), (3, None)])
def test_estimator_is_the_stage_fit(n, s):
    """RidgelessRegressor and the stages' heads run one fit: identical coefficients, rank and flags, from
    moments, from the rows after an ill-conditioned moments fit, and from fewer rows than columns."""
    rng = np.random.default_rng(6)
    Z, Y = known_design(np.array(s), n=n) if s else (rng.normal(size=(n, 4)), rng.normal(size=(n, 2)))
    head = fit_head(Solver.ridgeless, Z, Y, of_columns(Z, Y) if n > Z.shape[1] else None, Z.shape[1])
    est = RidgelessRegressor().fit(Z, Y)
    np.testing.assert_array_equal(est.coef_, head.fit.coef)
    np.testing.assert_array_equal(est.intercept_, head.linear()[1])
    assert (est.rank_, est.condition_number_, est.ill_determined_) == (
        head.fit.rank,
        head.fit.condition_number,
        head.fit.ill_determined,
    )
    assert head.record().solved_from == est.linear_fit_.solved_from
