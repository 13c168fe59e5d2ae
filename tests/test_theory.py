"""The closed-form predictions against the Monte-Carlo simulation of the same model, over a grid."""

import math

import numpy as np
import pytest

from w2s_cli import W2SError, theory
from w2s_cli.numerics.stats import MODELS
from w2s_cli.numerics.synth import SynthConfig, run_synth, simulate

# (ambient, d_s, d_w, shared, n, N, sigma, rest)
GRID = [
    (50, 8, 24, 3, 90, 300, 0.7, "random"),  # docs/theory.md's example
    (40, 6, 20, 6, 80, 200, 1.0, "random"),  # V_s inside V_w
    (60, 8, 16, 0, 60, 200, 0.5, "orthogonal"),  # V_s orthogonal to V_w
    (50, 5, 15, 2, 60, 500, 3.0, "random"),  # heavy label noise
    (50, 5, 15, 2, 60, 500, 0.1, "random"),  # light label noise
    (30, 4, 12, 1, 50, 30, 1.0, "orthogonal"),  # N a few times d_s
    (30, 4, 10, 2, 20, 100, 1.0, "orthogonal"),  # small n
    (50, 10, 20, 5, 400, 1000, 1.0, "random"),  # large n and N
    (30, 10, 10, 0, 60, 300, 1.0, "random"),  # nothing shared, random overlap
    (40, 10, 10, 5, 50, 150, 0.8, "orthogonal"),  # half shared
    # n below dim span(U_s, U_w): the Gaussian-design path (a Monte Carlo of several seconds)
    pytest.param(60, 8, 30, 0, 35, 400, 1.0, "random", marks=pytest.mark.slow),
    (50, 20, 10, 4, 80, 400, 1.0, "random"),  # d_s > d_w
]


@pytest.mark.parametrize("ambient,d_s,d_w,shared,n,N,sigma,rest", GRID)
def test_measured_matches_exact_prediction(ambient, d_s, d_w, shared, n, N, sigma, rest):
    cfg = SynthConfig(ambient, d_s, d_w, shared, n, N, sigma, trials=20000, seed=11, rest=rest)
    r = run_synth(cfg)
    for k in MODELS:
        m, se, p = r.measured[k], r.stderr[k], r.predicted[k]
        assert abs(m - p) <= max(4 * se, 0.03 * p), (k, m, se, p)
    for k in ("pgr", "opr"):
        m, p = r.measured[k], r.predicted[k]
        assert abs(m - p) <= 0.03 * abs(p), (k, m, r.stderr[k], p)


@pytest.mark.slow
def test_both_simulation_paths_agree():
    cfg = SynthConfig(trials=20000, seed=5)
    a, b = simulate(cfg, "sufficient"), simulate(cfg, "gaussian")
    for k in MODELS:
        se = math.hypot(a[k].std(), b[k].std()) / math.sqrt(cfg.trials)
        assert abs(a[k].mean() - b[k].mean()) < 4 * se


def test_no_discrepancy_gives_no_gain():
    # V_w inside V_s: d_sw = d_w, the student reproduces the teacher exactly
    cfg = SynthConfig(40, d_s=20, d_w=8, shared=8, n_labeled=60, n_pseudo=200, sigma=1.0, trials=500)
    r = run_synth(cfg)
    assert r.d_sw == pytest.approx(8)
    assert r.predicted["pgr"] == pytest.approx(0.0, abs=1e-12)
    assert abs(r.measured["pgr"]) < 1e-8
    assert theory.limits(20, 8, 8)["pgr"] == 0.0


def test_below_the_threshold_w2s_does_not_beat_the_teacher():
    d_s = 8
    assert theory.limits(d_s, 16, 0)["n_pseudo_threshold"] == 17  # the report's threshold, N = 14 below it
    cfg = SynthConfig(
        60, d_s=d_s, d_w=16, shared=0, n_labeled=60, n_pseudo=14, sigma=1.0, trials=20000, rest="orthogonal"
    )
    r = run_synth(cfg)
    assert r.predicted["pgr"] <= 0
    assert r.measured["pgr"] <= 0 + 2 * r.stderr["pgr"]
    above = run_synth(SynthConfig(**{**cfg.__dict__, "n_pseudo": 40}))
    assert above.predicted["pgr"] > 0 and above.measured["pgr"] > 0


def test_formulas_by_hand_and_limits():
    er = theory.excess_risks(d_s=8, d_w=24, d_sw=3, n=90, N=300, sigma2=0.49)
    assert er["weak"] == pytest.approx(0.49 * 24 / 65)
    assert er["strong_sft"] == pytest.approx(0.49 * 8 / 81)
    assert er["ceiling"] == pytest.approx(0.49 * 8 / 381)
    assert er["w2s"] == pytest.approx(0.49 / 65 * (3 + 8 / 291 * 21))
    asym = theory.excess_risks(8, 24, 3, 90, 300, 0.49, exact=False)
    assert asym["w2s"] == pytest.approx(0.49 / 90 * (3 + 8 / 300 * 21))
    lim = theory.limits(8, 24, 3)
    assert lim["pgr"] == pytest.approx(1 - 3 / 24) and lim["opr"] == pytest.approx(8 / 3)
    far = theory.predict(8, 24, 3, 10**7, 10**12)
    assert far["pgr"] == pytest.approx(lim["pgr"], rel=1e-3)
    assert far["opr"] == pytest.approx(lim["opr"], rel=1e-3)


@pytest.mark.parametrize(
    "args,match",
    [
        ((8, 24, 3, 25, 300), "n > d_w \\+ 1"),
        ((8, 4, 3, 100, 9), "N > d_s \\+ 1"),
        ((8, 24, 9, 100, 300), "d_sw must lie"),
        ((0, 24, 0, 100, 300), "positive"),
    ],
)
def test_domain_errors(args, match):
    with pytest.raises(W2SError, match=match):
        theory.excess_risks(*args)


def test_generator_overlap():
    rng = np.random.default_rng(0)
    from w2s_cli.numerics.synth import make_subspaces

    U_s, U_w, b = make_subspaces(SynthConfig(40, 10, 10, 5, rest="orthogonal"), rng)
    assert np.linalg.norm(U_s.T @ U_w) ** 2 == pytest.approx(5)
    np.testing.assert_allclose(U_w.T @ U_w, np.eye(10), atol=1e-12)
    assert np.linalg.norm(b) == pytest.approx(1) and np.linalg.norm(U_s @ (U_s.T @ b) - b) < 1e-12


def test_asymptotic_form_is_refused_past_the_interpolation_threshold():
    with pytest.raises(W2SError, match="interpolation threshold"):
        theory.excess_risks(8, 120, 3, 100, 300, exact=False)
