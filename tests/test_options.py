"""Validation once, at the boundary: option objects refuse bad values when built, estimators when fit."""

import dataclasses

import numpy as np
import pytest

from w2s_cli import W2SError
from w2s_cli.numerics.solvers import LogisticClassifier
from w2s_cli.numerics.synth import SynthConfig
from w2s_cli.options import (
    ExecutorOptions,
    ExtractOptions,
    HeadOptions,
    RunOptions,
    Solver,
    SplitOptions,
    SubspaceOptions,
)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: SplitOptions(n_labeled=0), "--n-labeled must be positive, got 0"),
        (lambda: SplitOptions(n_pseudo=-3), "--n-pseudo must be positive, got -3"),
        (lambda: SplitOptions(label_noise=float("nan")), "--label-noise must be 0 or more"),
        (lambda: dataclasses.replace(SplitOptions(), n_test=0), "--n-test must be positive"),
        (lambda: SubspaceOptions("0"), "--subspace must be positive"),
        (lambda: SubspaceOptions("lots"), "--subspace must be none, auto or a positive whole number"),
        (lambda: SubspaceOptions("auto", float("nan")), r"--energy must be in \(0, 1\]"),
        (lambda: SubspaceOptions("auto", 1.5), r"--energy must be in \(0, 1\]"),
        (lambda: RunOptions(trials=0), "--trials must be at least 1, got 0"),
        (lambda: ExtractOptions(batch_size=0), "--batch-size must be positive"),
        (lambda: ExtractOptions(num_workers=-1), "--num-workers must be 0 or more"),
        (lambda: SynthConfig(trials=1), "^trials must be at least 2"),  # numerics' words; the CLI says --trials
        (lambda: ExecutorOptions("local:0"), "--executor must be one of inprocess, local:K, slurm, submitit-local"),
        (lambda: ExecutorOptions("inprocess", detach=True), "--detach needs --executor slurm"),
        (lambda: SynthConfig(shared=30), r"^shared must be in \[0, min\(d_s, d_w\)\]"),
        (
            lambda: HeadOptions(teacher_solver=Solver.ridge, student_solver=Solver.logistic),
            "soft pseudo-labels of a ridge teacher are not probabilities",
        ),
    ],
)
def test_options_refuse_bad_values_when_built(build, message):
    with pytest.raises(W2SError, match=message):
        build()


def test_numerics_name_their_parameters_and_the_cli_says_the_flag():
    """numerics/ raise in their own words (BadValue names the parameter); the CLI's one table says the flag."""
    import typer

    from w2s_cli.cli.app import app
    from w2s_cli.cli.flags import VALUE_FLAGS, said
    from w2s_cli.errors import BadValue
    from w2s_cli.numerics.spectra import energy_dimension, nearest_neighbour_dimension
    from w2s_cli.numerics.synth import run_sweep

    for call, name in (
        (lambda: SynthConfig(d_s=0), "d_s"),
        (lambda: SynthConfig(ambient=10), "ambient"),
        (lambda: energy_dimension(np.ones(3), 1.5), "energy"),
        (lambda: nearest_neighbour_dimension(np.ones((9, 2)), "twonn", 2, 0), "max_samples"),
        (lambda: run_sweep(SynthConfig(trials=2), "width"), "sweep"),
    ):
        with pytest.raises(BadValue) as caught:
            call()
        assert caught.value.name == name and "--" not in caught.value.message, caught.value.message
        assert said(caught.value) == f"{VALUE_FLAGS[name]} {caught.value.problem}"
    assert said(W2SError("--n-test must be positive")) == "--n-test must be positive"  # not a BadValue: as raised
    commands = typer.main.get_command(app).commands.values()
    assert set(VALUE_FLAGS.values()) <= {opt for c in commands for p in c.params for opt in p.opts}


def test_valid_options_build():
    assert SubspaceOptions("none").parsed() is None and SubspaceOptions("12", 1.0).parsed() == 12
    assert RunOptions(trials=3).trials == 3
    for head in (
        HeadOptions(student_solver=Solver.logistic, hard=True),  # one-hot labels are probabilities
        HeadOptions(teacher_solver=Solver.logistic, student_solver=Solver.logistic),  # softmax outputs
        HeadOptions(head="logistic"),
        HeadOptions(teacher_solver=Solver.ridge, student_solver=Solver.ridgeless),
    ):
        assert head.solvers()


@pytest.mark.parametrize("params", [{"C": -1.0}, {"C": 0}, {"max_iter": 0}, {"tol": -1e-3}, {"C": "big"}])
def test_logistic_refuses_bad_parameters_when_fit(params):
    X, y = np.random.default_rng(0).normal(size=(30, 3)), np.arange(30) % 2
    model = LogisticClassifier(**params)  # scikit-learn style: built as given, refused by fit
    with pytest.raises(ValueError, match=f"'{next(iter(params))}' parameter of LogisticClassifier must be"):
        model.fit(X, y)
