"""The split of an embeddings artifact's rows into test / labelled (n) / pseudo-label pool, disjoint.

The test rows come from the dataset's own test split when it has one and are drawn with `test_seed`, so a
sweep over `seed` (trials) keeps the test split fixed. Nothing is ever selected on the test rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from w2s_cli.data import TEST, TRAIN
from w2s_cli.errors import W2SError


@dataclass(frozen=True)
class Split:
    test: np.ndarray  # row indices, sorted
    labeled: np.ndarray
    pool: np.ndarray

    def check_disjoint(self) -> None:
        parts = np.concatenate([self.test, self.labeled, self.pool])
        if len(np.unique(parts)) != len(parts):
            raise AssertionError("split parts overlap")


def draw_split(
    n_rows: int, dataset_split: np.ndarray | None, n_test: int, n_labeled: int, seed: int, test_seed: int = 0
) -> Split:
    """Draw test rows (with test_seed), then n_labeled rows (with seed); the rest of train is the pool."""
    if n_test <= 0 or n_labeled <= 0:
        raise W2SError(f"--n-test and --n-labeled must be positive (got {n_test}, {n_labeled})")
    rows = np.arange(n_rows)
    if dataset_split is not None:
        test_candidates, train_rows = rows[dataset_split == TEST], rows[dataset_split == TRAIN]
        if len(test_candidates) < n_test:
            raise W2SError(
                f"--n-test {n_test} is larger than the {len(test_candidates)} samples of the "
                "dataset's test split in these embeddings"
            )
        test = np.random.default_rng(test_seed).choice(test_candidates, size=n_test, replace=False)
    else:
        if n_test >= n_rows:
            raise W2SError(f"--n-test {n_test} leaves no training samples out of {n_rows}")
        test = np.random.default_rng(test_seed).choice(rows, size=n_test, replace=False)
        train_rows = np.setdiff1d(rows, test)
    if n_labeled > len(train_rows):
        raise W2SError(f"--n-labeled {n_labeled} is larger than the {len(train_rows)} training samples available")
    labeled = np.random.default_rng(seed).choice(train_rows, size=n_labeled, replace=False)
    pool = np.setdiff1d(train_rows, labeled)
    split = Split(np.sort(test), np.sort(labeled), pool)
    split.check_disjoint()
    return split


def draw_pseudo(pool: np.ndarray, n_pseudo: int, seed: int) -> np.ndarray:
    """N rows of the pool for pseudo-labelling (seeded independently of the labelled draw)."""
    if n_pseudo <= 0:
        raise W2SError(f"--n-pseudo must be positive, got {n_pseudo}")
    if n_pseudo > len(pool):
        raise W2SError(f"--n-pseudo {n_pseudo} is larger than the pool of {len(pool)} unlabelled training samples")
    return np.sort(np.random.default_rng([seed, 1]).choice(pool, size=n_pseudo, replace=False))
