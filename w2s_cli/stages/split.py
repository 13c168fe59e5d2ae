"""The experiment's rows: a fixed test split, n labelled rows, N pseudo-label rows (disjoint), and the label
noise of the rows the models train on.

The test rows come from the dataset's own test split when it has one and are drawn with `test_seed`, so a
sweep over `seed` (trials) keeps the test split fixed. Nothing is ever selected on the test rows. Label
noise is drawn for every row of the embeddings artifact from (seed, 2), so a row keeps its noisy label
whatever n and N are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from w2s_cli.errors import W2SError
from w2s_cli.inputs.sources import TEST, TRAIN
from w2s_cli.options import SplitOptions


@dataclass(frozen=True)
class DrawnSplit:
    test: np.ndarray  # row indices, sorted
    labeled: np.ndarray
    pseudo: np.ndarray
    n_pool: int  # training rows not labelled (the pseudo rows are drawn from these)

    def check_disjoint(self) -> None:
        parts = np.concatenate([self.test, self.labeled, self.pseudo])
        if len(np.unique(parts)) != len(parts):
            raise AssertionError("split parts overlap")

    @property
    def train(self) -> np.ndarray:
        """The n + N rows the models train on (sorted)."""
        return np.sort(np.concatenate([self.labeled, self.pseudo]))


def draw_split(
    n_rows: int, dataset_split: np.ndarray | None, options: SplitOptions, n_pseudo: int | None
) -> DrawnSplit:
    """Test rows (test_seed), then n labelled rows (seed), then N pseudo rows from the rest (seed, 1).
    n_pseudo None: min(options.n_pseudo, the rest of the training rows)."""
    n_test, n_labeled, seed = options.n_test, options.n_labeled, options.seed
    rows = np.arange(n_rows)
    if dataset_split is not None:
        test_candidates, train_rows = rows[dataset_split == TEST], rows[dataset_split == TRAIN]
        if len(test_candidates) < n_test:
            raise W2SError(
                f"--n-test {n_test} is larger than the {len(test_candidates)} samples of the "
                "dataset's test split in these embeddings"
            )
        test = np.random.default_rng(options.test_seed).choice(test_candidates, size=n_test, replace=False)
    else:
        if n_test >= n_rows:
            raise W2SError(
                f"--n-test {n_test} leaves no training samples: these embeddings hold {n_rows} samples in all "
                f"(no test split of their own); choose --n-test + --n-labeled + --n-pseudo of at most {n_rows}"
            )
        test = np.random.default_rng(options.test_seed).choice(rows, size=n_test, replace=False)
        train_rows = np.setdiff1d(rows, test)
    if n_labeled >= len(train_rows):
        raise W2SError(
            f"--n-labeled {n_labeled} leaves no samples to pseudo-label: there are {len(train_rows)} training samples"
        )
    labeled = np.random.default_rng(seed).choice(train_rows, size=n_labeled, replace=False)
    pool = np.setdiff1d(train_rows, labeled)
    N = min(options.n_pseudo, len(pool)) if n_pseudo is None else n_pseudo
    if N <= 0:
        raise W2SError(f"--n-pseudo must be positive, got {N}")
    if N > len(pool):
        raise W2SError(
            f"--n-pseudo {N} is larger than the {len(pool)} training samples left after the {n_labeled} labelled ones"
        )
    pseudo = np.sort(np.random.default_rng([seed, 1]).choice(pool, size=N, replace=False))
    split = DrawnSplit(np.sort(test), np.sort(labeled), pseudo, len(pool))
    split.check_disjoint()
    return split


def subset_pseudo(pseudo: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n of the drawn pseudo rows, at random (seed, 1): the rows `pseudolabel --n-pseudo n` labels."""
    if n <= 0:
        raise W2SError(f"--n-pseudo must be positive, got {n}")
    if n > len(pseudo):
        raise W2SError(f"--n-pseudo {n} is larger than the {len(pseudo)} rows the teacher drew (train-weak --n-pseudo)")
    if n == len(pseudo):
        return pseudo
    return np.sort(np.random.default_rng([seed, 1]).choice(pseudo, size=n, replace=False))


def noisy_values(values: np.ndarray, n_classes: int | None, rate: float, seed: int) -> np.ndarray:
    """Every row's training label after label noise: a flip to one of the other classes with probability
    `rate` (classification, the authors' symmetric protocol), or + N(0, rate^2) (regression)."""
    if rate == 0:
        return values.copy()
    rng = np.random.default_rng([seed, 2])
    if n_classes is not None:
        if rate > 1:
            raise W2SError(f"--label-noise is a flip probability for classes: at most 1, got {rate}")
        flip = rng.random(len(values)) < rate
        shift = rng.integers(1, n_classes, size=len(values))
        return np.where(flip, (values + shift) % n_classes, values).astype(np.int64)
    return values + rng.normal(0.0, rate, size=len(values))
