import numpy as np
import pytest

from w2s_cli import W2SError
from w2s_cli.options import SplitOptions
from w2s_cli.stages.split import draw_split, noisy_values, subset_pseudo


def opts(**kw):
    return SplitOptions(**{"n_test": 100, "n_labeled": 50, "n_pseudo": 200, **kw})


def test_split_is_disjoint_reproducible_and_keeps_test_fixed():
    a = draw_split(500, None, opts(seed=3), None)
    b = draw_split(500, None, opts(seed=3), None)
    c = draw_split(500, None, opts(seed=4), None)
    for part in ("test", "labeled", "pseudo"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    np.testing.assert_array_equal(a.test, c.test)  # trials vary seed, never the test split
    assert not np.array_equal(a.labeled, c.labeled)
    assert len(a.pseudo) == 200 and a.n_pool == 350
    assert not set(a.test) & set(a.labeled) and not set(a.pseudo) & (set(a.test) | set(a.labeled))


def test_test_rows_come_from_the_dataset_test_split():
    split = np.array([0] * 300 + [1] * 100, dtype=np.int8)
    s = draw_split(400, split, opts(n_test=80, n_labeled=40), None)
    assert (split[s.test] == 1).all() and (split[s.labeled] == 0).all() and (split[s.pseudo] == 0).all()
    with pytest.raises(W2SError, match="test split"):
        draw_split(400, split, opts(n_test=101, n_labeled=40), None)


def test_sizes_are_checked_and_pseudo_rows_nest():
    with pytest.raises(W2SError, match="n-labeled 500"):
        draw_split(400, None, opts(n_labeled=500), None)
    s = draw_split(400, None, opts(n_labeled=100, n_pseudo=10_000), None)  # default N: what the pool holds
    assert len(s.pseudo) == 200
    with pytest.raises(W2SError, match="--n-pseudo 201"):
        draw_split(400, None, opts(n_labeled=100), 201)
    few = subset_pseudo(s.pseudo, 50, seed=0)
    assert len(few) == 50 and set(few) <= set(s.pseudo)
    with pytest.raises(W2SError, match="--n-pseudo 201"):
        subset_pseudo(s.pseudo, 201, seed=0)


def test_label_noise_flips_to_other_classes_at_the_rate():
    labels = np.random.default_rng(0).integers(0, 10, size=200_000)
    noisy = noisy_values(labels, 10, 0.3, seed=1)
    flipped = noisy != labels
    assert abs(flipped.mean() - 0.3) < 0.005 and ((noisy >= 0) & (noisy < 10)).all()
    # a flip goes to each other class equally often
    shift = (noisy[flipped] - labels[flipped]) % 10
    assert np.allclose(np.bincount(shift, minlength=10)[1:] / flipped.sum(), 1 / 9, atol=0.005)
    np.testing.assert_array_equal(noisy_values(labels, 10, 0.0, 1), labels)
    targets = np.zeros(100_000)
    assert abs(noisy_values(targets, None, 0.5, 0).std() - 0.5) < 0.01
    with pytest.raises(W2SError, match="at most 1"):
        noisy_values(labels, 10, 1.5, 0)
