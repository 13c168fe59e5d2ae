"""How the pipeline fits: the split's sizes and seeds, the shared subspaces, the heads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from w2s_cli.errors import W2SError


class Solver(str, Enum):
    ridgeless = "ridgeless"
    ridge = "ridge"
    logistic = "logistic"


class Head(str, Enum):
    """ridgeless: every model is a minimum-norm least-squares fit (the theory's setting); logistic: the
    authors' heads, multinomial logistic regression by L-BFGS, the student on soft targets."""

    ridgeless = "ridgeless"
    logistic = "logistic"


@dataclass(frozen=True)
class SubspaceOptions:
    """The shared intrinsic subspace of one backbone: top-K principal directions of its centred embeddings
    over the n + N training rows. `auto`: the smallest K holding `energy` of the variance, at most n/2."""

    subspace: str = "auto"
    energy: float = 0.90

    def __post_init__(self) -> None:
        self.parsed()

    def parsed(self) -> str | int | None:
        return parse_subspace(self.subspace, self.energy)


def check_energy(energy: float) -> None:
    """An energy fraction (of a spectrum's variance) is in (0, 1]."""
    if not 0.0 < energy <= 1.0:  # also false for NaN
        raise W2SError(f"--energy must be in (0, 1], got {energy}")


def parse_subspace(spec: str | int | None, energy: float = 0.90) -> str | int | None:
    """'none' -> None, 'auto' -> 'auto', 'K' -> K; refuses anything else."""
    check_energy(energy)
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        return "auto"
    try:
        k = int(spec)
    except (TypeError, ValueError):
        raise W2SError(f"--subspace must be none, auto or a positive whole number, not '{spec}'") from None
    if k <= 0:
        raise W2SError(f"--subspace must be positive, got {k}")
    return k


@dataclass(frozen=True)
class SplitOptions:
    """The experiment's samples: n labelled, N pseudo-labelled, a fixed test split, label noise."""

    n_labeled: int = 1000
    n_pseudo: int = 8000
    n_test: int = 2000
    seed: int = 0
    test_seed: int = 0
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        for name, v in (("--n-labeled", self.n_labeled), ("--n-pseudo", self.n_pseudo), ("--n-test", self.n_test)):
            if v <= 0:
                raise W2SError(f"{name} must be positive, got {v}")
        if not self.label_noise >= 0 or math.isinf(self.label_noise):
            raise W2SError(f"--label-noise must be 0 or more, got {self.label_noise}")


@dataclass(frozen=True)
class HeadOptions:
    """Which fit every model uses. `head=logistic` makes teacher, student, SFT and ceiling logistic."""

    head: Head = Head.ridgeless
    teacher_solver: Solver = Solver.ridgeless
    student_solver: Solver = Solver.ridgeless
    hard: bool = False

    def __post_init__(self) -> None:
        check_student_labels(*reversed(self.solvers()), hard=self.hard)

    def solvers(self) -> tuple[Solver, Solver]:
        if self.head == Head.logistic:
            return Solver.logistic, Solver.logistic
        return Solver(self.teacher_solver), Solver(self.student_solver)


def check_student_labels(student: Solver, teacher: Solver | str, *, hard: bool) -> None:
    """Refuse a head that cannot learn from the pseudo-labels it would be given: a logistic student learns by
    cross-entropy from class probabilities (one-hot labels, or a logistic teacher's softmax outputs), and a
    ridgeless or ridge teacher's soft outputs are not probabilities (they can be negative or exceed 1)."""
    if Solver(student) == Solver.logistic and not hard and Solver(teacher) != Solver.logistic:
        raise W2SError(
            f"a logistic student learns from class probabilities, but soft pseudo-labels of a {Solver(teacher).value} "
            "teacher are not probabilities; use hard pseudo-labels (--hard), a logistic teacher, or a ridgeless or "
            "ridge student"
        )
