"""Every command-line option, declared once, and the decorator that turns option groups (the dataclasses of
w2s_cli.options) into typed objects passed to a command by keyword."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

import typer

from w2s_cli.options import DataOptions, ExtractOptions, HeadOptions, SplitOptions

SPEC_HELP = "fashion-mnist | digits | folder:PATH | csv:PATH | torchvision:NAME | hf:NAME_OR_PATH[:CONFIG]"
SUBSPACE_HELP = (
    "Shared basis: top-K principal directions of the n + N training rows. none, auto (the smallest K holding "
    "--energy of the variance, at most n/2) or K."
)

DECLARATIONS: dict[type, dict[str, Any]] = {
    DataOptions: {
        "data": typer.Option("fashion-mnist", "--data", help=SPEC_HELP),
        "root": typer.Option(None, "--root", help="Folder holding the dataset files."),
        "download": typer.Option(False, "--download", help="Let torchvision download the dataset."),
        "target_column": typer.Option(None, "--target-column", help="csv: the numeric target column."),
        "image_column": typer.Option(None, "--image-column", help="hf: the image column (default: detected)."),
        "label_column": typer.Option(
            None, "--label-column", help="hf: the label or target column (default: detected)."
        ),
    },
    ExtractOptions: {
        "batch_size": typer.Option(64, "--batch-size"),
        "device": typer.Option("auto", "--device"),
        "num_workers": typer.Option(
            None, "--num-workers", help="DataLoader workers (default: spare cores, at most 8)."
        ),
        "shard_rows": typer.Option(10_000, "--shard-rows", help="Rows per resumable shard."),
        "preprocess": typer.Option(
            "timm", "--preprocess", help="timm: PIL in workers (exact); device: batched on the device."
        ),
        "precision": typer.Option("fp32", "--precision", help="Forward pass precision (bf16/fp16: autocast)."),
        "quiet": typer.Option(False, "--quiet", "-q", help="No progress bar."),
    },
    SplitOptions: {
        "n_labeled": typer.Option(1000, "--n-labeled", help="n: true labels for the teacher (and strong SFT)."),
        "n_pseudo": typer.Option(8000, "--n-pseudo", help="N: samples the teacher pseudo-labels for the student."),
        "n_test": typer.Option(2000, "--n-test", help="Test samples (from the dataset's test split if it has one)."),
        "seed": typer.Option(0, "--seed", help="Seed of the labelled / pseudo-label draws (and label noise)."),
        "test_seed": typer.Option(0, "--test-seed", help="Seed of the test draw (fixed across trials)."),
        "label_noise": typer.Option(
            0.0, "--label-noise", help="Flip each training label with this probability (regression: noise std)."
        ),
    },
    HeadOptions: {
        "head": typer.Option("ridgeless", "--head", help="ridgeless (the theory's) or logistic (the authors' heads)."),
        "teacher_solver": typer.Option("ridgeless", "--teacher-solver"),
        "student_solver": typer.Option("ridgeless", "--solver", help="Student, SFT and ceiling solver."),
        "hard": typer.Option(False, "--hard/--soft", help="One-hot (hard) or the teacher's raw outputs (soft)."),
    },
}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def takes(required: tuple[str, ...] = (), **groups: type) -> Callable:
    """Add the options of each group (a dataclass above) to a command and pass one instance per group:
    `@takes(data=DataOptions)` gives the command `data: DataOptions`. Fields in `required` have no default."""

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name not in groups]
        hints = typing.get_type_hints(fn)
        added = []
        for group, cls in groups.items():
            types = _hints(cls)
            for f in dataclasses.fields(cls):
                decl = DECLARATIONS[cls][f.name]
                if f.name in required:
                    decl = _copy(decl, default=...)
                added.append(inspect.Parameter(f"{group}__{f.name}", inspect.Parameter.KEYWORD_ONLY, default=decl,
                                               annotation=types[f.name]))  # fmt: skip

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            for group, cls in groups.items():
                values = {f.name: kwargs.pop(f"{group}__{f.name}") for f in dataclasses.fields(cls)}
                kwargs[group] = cls(**values)
            return fn(**kwargs)

        params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in own] + added
        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__
        return wrapper

    return deco


def _copy(info: Any, default: Any) -> Any:
    import copy

    new = copy.copy(info)
    new.default = default
    return new
