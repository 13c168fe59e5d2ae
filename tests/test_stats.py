import dataclasses

import numpy as np
import pytest

from w2s_cli.numerics.stats import (
    MODELS,
    one_hot,
    opr,
    pgr,
    pgr_from_rows,
    ratio,
    squared_errors,
)
from w2s_cli.stages.summary import evaluate, over_trials


def test_squared_error_against_one_hot_by_hand():
    out = np.array([[0.5, 0.5], [1.0, 0.0]])
    truth = one_hot(np.array([0, 1]), 2)
    # row 0: (0.25 + 0.25)/2 = 0.25; row 1: (1 + 1)/2 = 1
    np.testing.assert_allclose(squared_errors(out, truth), [0.25, 1.0])


def test_pgr_opr_formulas_and_guards():
    assert pgr(0.5, 0.3, 0.1) == pytest.approx(0.5)
    assert opr(0.4, 0.2) == pytest.approx(2.0)
    assert pgr(0.5, 0.3, 0.5) is None  # zero denominator
    assert opr(0.4, 0.0) is None
    rng = np.random.default_rng(0)
    w, c = 0.5 + 0.1 * rng.normal(size=50), 0.5 + 0.1 * rng.normal(size=50)
    assert pgr_from_rows(w, w - 0.01, c)[0] is None  # the denominator is within 2 standard errors of zero


def test_delta_method_standard_error_matches_the_bootstrap():
    rng = np.random.default_rng(1)
    a = 1 + rng.normal(size=400)
    b = 2 + 0.5 * a + rng.normal(size=400)
    R, se = ratio(a, b)
    boot = [np.mean(a[i]) / np.mean(b[i]) for i in rng.integers(0, 400, size=(4000, 400))]
    assert R == pytest.approx(a.mean() / b.mean())
    assert se == pytest.approx(np.std(boot), rel=0.1)


def test_evaluate_and_summaries():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=200)
    truth = one_hot(labels, 3)
    outputs = {
        k: truth + rng.normal(scale=s, size=truth.shape) for k, s in zip(MODELS, (0.6, 0.4, 0.5, 0.2), strict=True)
    }
    r = evaluate(outputs, truth, labels)  # a Metrics record
    errs = r.error
    assert errs["weak"] > errs["strong_sft"] > errs["w2s"] > errs["ceiling"]
    assert r.pgr == pytest.approx((errs["weak"] - errs["w2s"]) / (errs["weak"] - errs["ceiling"]))
    assert r.pgr_stderr > 0 and r.opr_stderr > 0 and set(r.accuracy) == set(MODELS) and r.n_test == 200
    r2 = dataclasses.replace(r, error={k: v * 1.1 for k, v in errs.items()})
    s = over_trials([r, r2], 200)
    assert s.trials == 2 and s.n_test == 200
    assert s.error["weak"] == pytest.approx(errs["weak"] * 1.05)
    assert s.error_stderr["weak"] == pytest.approx(np.std([errs["weak"], errs["weak"] * 1.1], ddof=1) / np.sqrt(2))
    # one estimator for the headline and its standard error: the ratio of mean errors
    e = s.error
    assert s.pgr == pytest.approx((e["weak"] - e["w2s"]) / (e["weak"] - e["ceiling"]))
    assert over_trials([r], 200) == dataclasses.replace(r, trials=1)
