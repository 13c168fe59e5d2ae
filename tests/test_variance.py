"""The exact-design variance, leave-one-out and overlap formulas against brute force on real-shaped data:
noise injected and models refitted, rows left out one at a time, random subspaces drawn."""

import numpy as np
import pytest

from w2s_cli.numerics.moments import Moments
from w2s_cli.numerics.solvers import fit_moments, fit_rows
from w2s_cli.numerics.subspaces import chance_overlap, null_corrected, overlap
from w2s_cli.numerics.variance import (
    LabelNoise,
    W2SMap,
    loo_residuals,
    variance_coefficient,
    w2s_loo_residuals,
)


def correlated(rng, m, d, scale):
    """Rows with a decaying, non-isotropic spectrum and a non-zero mean (like real embeddings)."""
    return (rng.normal(size=(m, d)) * scale) @ np.linalg.qr(rng.normal(size=(d, d)))[0] + 3.0


@pytest.fixture(scope="module")
def design():
    rng = np.random.default_rng(0)
    n, N, T, d_w, d_s = 120, 400, 300, 15, 10
    latent = rng.normal(size=(n + N + T, 8))
    Zw = np.hstack([latent[:, :5], rng.normal(size=(n + N + T, d_w - 5))]) @ rng.normal(size=(d_w, d_w)) + 1.0
    Zs = np.hstack([latent[:, 3:8], rng.normal(size=(n + N + T, d_s - 5))]) @ rng.normal(size=(d_s, d_s)) - 2.0
    L, P, test = slice(0, n), slice(n, n + N), slice(n + N, None)
    return Zw, Zs, L, P, test


def refit_w2s(Zw, Zs, L, P, y):
    teacher = fit_rows(Zw[L], y)
    return fit_rows(Zs[P], teacher.predict(Zw[P]))


def test_exact_variance_matches_noise_injection(design):
    """The closed form (traces of small Gram matrices) against Monte-Carlo noise on the training labels."""
    Zw, Zs, L, P, test = design
    rng = np.random.default_rng(1)
    teacher = fit_rows(Zw[L], np.zeros((Zw[L].shape[0], 1)))
    student = fit_rows(Zs[P], np.zeros((Zs[P].shape[0], 1)))
    Pm = Moments.of(np.hstack([Zs[P], Zw[P]]))
    d_s = Zs.shape[1]
    w2s = W2SMap.build(teacher, student, Pm.cross[d_s:, :d_s], Pm.mean[d_s:])
    exact_w2s = w2s.variance_coefficient(Moments.of(Zs[test]))
    exact_teacher = variance_coefficient(teacher, Moments.of(Zw[test]))
    outs_w2s, outs_teacher = [], []
    for _ in range(3000):
        eps = rng.normal(size=(Zw[L].shape[0], 1))
        outs_teacher.append(fit_rows(Zw[L], eps).predict(Zw[test])[:, 0])
        outs_w2s.append(refit_w2s(Zw, Zs, L, P, eps).predict(Zs[test])[:, 0])
    mc_w2s = np.var(outs_w2s, axis=0, ddof=1).mean()
    mc_teacher = np.var(outs_teacher, axis=0, ddof=1).mean()
    assert mc_teacher == pytest.approx(exact_teacher, rel=0.05)
    assert mc_w2s == pytest.approx(exact_w2s, rel=0.05)


def test_leave_one_out_is_exact(design):
    """PRESS residuals for a fit and for the W2S student of a teacher refitted without each labelled row."""
    Zw, Zs, L, P, _ = design
    rng = np.random.default_rng(2)
    y = Zw[L] @ rng.normal(size=(Zw.shape[1], 2)) + rng.normal(size=(Zw[L].shape[0], 2))
    teacher = fit_rows(Zw[L], y)
    student = fit_rows(Zs[P], teacher.predict(Zw[P]))
    d_s = Zs.shape[1]
    Pm = Moments.of(np.hstack([Zs[P], Zw[P]]))
    w2s = W2SMap.build(teacher, student, Pm.cross[d_s:, :d_s], Pm.mean[d_s:])
    loo, loo_w2s = loo_residuals(teacher, Zw[L], y), w2s_loo_residuals(w2s, Zw[L], Zs[L], y)
    for i in (0, 7, 55):
        keep = np.arange(len(y)) != i
        t = fit_rows(Zw[L][keep], y[keep])
        np.testing.assert_allclose(loo[i], y[i] - t.predict(Zw[L][i : i + 1])[0], rtol=1e-8)
        s = fit_rows(Zs[P], t.predict(Zw[P]))
        np.testing.assert_allclose(loo_w2s[i], y[i] - s.predict(Zs[L][i : i + 1])[0], rtol=1e-8)
    assert loo_residuals(fit_rows(Zw[L][:10], y[:10]), Zw[L][:10], y[:10]) is None  # interpolates: undefined


def test_moments_fit_refuses_sigma_when_it_interpolates():
    rng = np.random.default_rng(3)
    Z, Y = rng.normal(size=(20, 30)), rng.normal(size=(20, 2))
    assert fit_rows(Z, Y).sigma2() is None
    wide = fit_moments(Moments.of(np.hstack([Z[:, :19], Y])), slice(0, 19), slice(19, None))
    assert wide.rss is None and wide.sigma2() is None  # 20 rows, 19 + 1 parameters: RSS is rounding


@pytest.mark.slow
def test_null_correction_recovers_the_shared_dimension_when_d_over_m_is_large():
    """Sample-space subspaces of dimension d_s, d_w sharing k directions in m = 240 rows (d/m up to 0.25)."""
    rng = np.random.default_rng(4)
    m, d_s, d_w = 240, 40, 60
    for k in (0, 15, 30):
        est = []
        for _ in range(40):
            shared = rng.normal(size=(m, k))
            S = np.hstack([shared, rng.normal(size=(m, d_s - k))])
            W = np.hstack([shared, rng.normal(size=(m, d_w - k))])
            mom = Moments.of(np.hstack([S, W]))
            ov = overlap(mom.cross, m, slice(0, d_s), slice(d_s, None))
            est.append(ov["d_sw_corrected"])
        assert np.mean(est) == pytest.approx(k, abs=1.0), (k, np.mean(est))
    # exact where the chance overlap is far from linear in k (an earlier linear correction gave 55 here)
    d_sw = chance_overlap(60.0, 100, 120, 400)
    assert null_corrected(d_sw, 100, 120, 400) == pytest.approx(60.0)


def test_label_noise_correction_is_unbiased():
    rng = np.random.default_rng(5)
    C, n, rate = 10, 200_000, 0.3
    t = rng.integers(0, C, size=n)
    f = 0.6 * np.eye(C)[t] + 0.04 + 0.1 * rng.normal(size=(n, C))  # predictions independent of each row's flip
    flip = rng.random(n) < rate
    y = np.where(flip, (t + rng.integers(1, C, size=n)) % C, t)
    Y = np.eye(C)[y]
    clean = ((np.eye(C)[t] - f) ** 2).mean()
    noisy_sq = (Y - f) ** 2
    assert noisy_sq.mean() > clean * 1.5
    assert LabelNoise(rate, C).clean_error(noisy_sq, Y, f) == pytest.approx(clean, rel=0.01)


def test_the_predicted_pgr_is_undefined_when_its_denominator_is_within_noise(design):
    """label_light's PGR, like the measured one: a number when the predicted err_weak - err_ceiling stands
    clear of its standard error over the n rows, undefined (None) when it does not (it then had digits the n
    labels do not determine: a teacher as good as the predicted ceiling gave a PGR of -13.5)."""
    from w2s_cli.numerics.variance import label_light

    Zw, Zs, L, P, _ = design
    rng = np.random.default_rng(1)
    Y = np.eye(3)[rng.integers(0, 3, size=L.stop)] + 0.3 * rng.normal(size=(L.stop, 3))
    sft = fit_rows(Zs[L], Y)
    sft_loo = loo_residuals(sft, Zs[L], Y)
    ceiling = sft.sigma2() * 1.01
    w2s_loo = 1.05 * sft_loo

    own = rng.normal(size=sft_loo.shape)  # the teacher errs on its own rows, not in proportion to SFT

    def predicted(gap: float) -> dict:
        """A teacher whose mean squared leave-one-out residual is the ceiling's estimate + gap."""
        teacher_loo = own * np.sqrt((ceiling + gap) / float((own**2).mean()))
        return label_light(teacher_loo, sft_loo, w2s_loo, sft, 0.01, Y)

    clear = predicted(0.5 * ceiling)
    assert clear["error"]["weak"] - clear["error"]["ceiling"] == pytest.approx(0.5 * ceiling)
    assert clear["pgr"] == pytest.approx((clear["error"]["weak"] - clear["error"]["w2s"]) / (0.5 * ceiling))
    for gap in (0.0, 1e-3 * ceiling, -1e-3 * ceiling):  # the old code printed PGRs of about ±1000 here
        within = predicted(gap)
        assert within["error"]["weak"] == pytest.approx(ceiling + gap) and within["pgr"] is None
        assert within["opr"] == clear["opr"]  # OPR needs no such denominator
