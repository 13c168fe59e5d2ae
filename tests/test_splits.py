import numpy as np
import pytest

from w2s_cli import W2SError
from w2s_cli.splits import draw_pseudo, draw_split


def test_split_is_disjoint_reproducible_and_keeps_test_fixed():
    a = draw_split(500, None, n_test=100, n_labeled=50, seed=3)
    b = draw_split(500, None, n_test=100, n_labeled=50, seed=3)
    c = draw_split(500, None, n_test=100, n_labeled=50, seed=4)
    for part in ("test", "labeled", "pool"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    np.testing.assert_array_equal(a.test, c.test)  # trials vary seed, never the test split
    assert not np.array_equal(a.labeled, c.labeled)
    assert len(set(a.test) | set(a.labeled) | set(a.pool)) == 500
    assert not set(a.test) & set(a.labeled) and not set(a.pool) & (set(a.test) | set(a.labeled))


def test_test_rows_come_from_the_dataset_test_split():
    split = np.array([0] * 300 + [1] * 100, dtype=np.int8)
    s = draw_split(400, split, n_test=80, n_labeled=40, seed=0)
    assert (split[s.test] == 1).all() and (split[s.labeled] == 0).all() and (split[s.pool] == 0).all()
    assert len(s.pool) == 260
    with pytest.raises(W2SError, match="test split"):
        draw_split(400, split, n_test=101, n_labeled=40, seed=0)


def test_sizes_are_checked():
    with pytest.raises(W2SError, match="n-labeled 500"):
        draw_split(400, None, n_test=100, n_labeled=500, seed=0)
    s = draw_split(400, None, n_test=100, n_labeled=100, seed=0)
    rows = draw_pseudo(s.pool, 150, seed=0)
    assert len(np.unique(rows)) == 150 and set(rows) <= set(s.pool)
    with pytest.raises(W2SError, match="pool of 200"):
        draw_pseudo(s.pool, 201, seed=0)
