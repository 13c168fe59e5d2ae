"""Every command-line option, declared once, and the decorator that turns option groups (the dataclasses of
w2s_cli.options) into typed objects passed to a command by keyword."""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from w2s_cli.errors import BadValue, W2SError
from w2s_cli.inputs.registry import spec_help
from w2s_cli.options import (
    COLLECT,
    EXECUTORS,
    BackboneSpec,
    DataOptions,
    ExecutorOptions,
    ExtractOptions,
    HeadOptions,
    RunOptions,
    SplitOptions,
    StudentKind,
    SubspaceOptions,
)
from w2s_cli.options.recipe import FLAGS, SCHEDULES, FinetuneRecipe

SPEC_HELP = spec_help()  # "fashion-mnist | digits | folder:PATH | ...", from the data SPEC registry
# how a backbone is named wherever one is: a weak teacher may be a model cut at an earlier stage
MODEL_HELP = "MODEL, MODEL@PX, or MODEL:stageK@PX (cut after stage K: see extract --stage)"
STAGE_HELP = (
    "Cut the model after stage K: the embedding is the global average pool of that stage's feature map "
    "(width: its channels). K is timm's feature_info index, 0-based: 0 to (number of stages - 1), e.g. 0-4 for "
    "EfficientNet-Lite and ResNets; the error for a K out of range names the model's range."
)
DRY_RUN_HELP = "Print the work, disk and estimated time (from a few seconds of calibration); run nothing."
SUBSPACE_HELP = (
    "Shared basis: top-K principal directions of the n + N training rows. none, auto (the smallest K holding "
    "--energy of the variance, at most n/2) or K."
)


def _not_collect(executor: str) -> str:
    """`collect` is how sweep --collect runs (no jobs), not an executor a user names."""
    if executor == COLLECT:
        raise W2SError(f"--executor must be one of {', '.join(EXECUTORS)}, not 'collect' (sweep: --collect OUT)")
    return executor


@dataclass(frozen=True)
class StudyFlags:
    """How a study command is invoked (`run`, `sweep`, `rank-teachers`, `finetune`): a config file."""

    config: Path | None = None  # read before parsing (cli/config.py); here only so that click accepts it


@dataclass(frozen=True)
class TrackFlags:
    """Where a study's results are also logged (`run`, `sweep`): report/tracking.py."""

    track: str | None = None


@dataclass(frozen=True)
class ModelFlags:
    """The backbones on the command line (`run`, `sweep`): MODEL or MODEL@PX, weights, pretrained; several
    --weak teachers combined by --combine."""

    weak: list[str] = field(default_factory=lambda: ["tf_efficientnet_lite0"])
    weak_size: int | None = 64
    strong: str = "tf_efficientnet_lite2"
    strong_size: int | None = 112
    weak_weights: str | None = None
    strong_weights: str | None = None
    pretrained: bool = True
    combine: str | None = None

    def specs(self) -> tuple[BackboneSpec, BackboneSpec]:
        """The (first) weak and the strong backbone."""
        return self.teachers()[0], self._spec(self.strong, self.strong_size, self.strong_weights)

    def teachers(self) -> list[BackboneSpec]:
        """Every --weak teacher (--weak-weights: the first one's)."""
        if not self.weak:
            raise W2SError("--weak: name at least one weak model")
        first = self._spec(self.weak[0], self.weak_size, self.weak_weights)
        return [first, *(self._spec(w, self.weak_size, None) for w in self.weak[1:])]

    def _spec(self, name: str, size: int | None, weights: str | None) -> BackboneSpec:
        spec = BackboneSpec.parse(name, weights, self.pretrained)
        return spec if "@" in name else dataclasses.replace(spec, image_size=size)

    def apply(self, options: RunOptions) -> RunOptions:
        """The run's options with the other --weak teachers and their --combine rule."""
        return dataclasses.replace(options, teachers=tuple(self.teachers()[1:]), combine=self.combine)


@dataclass(frozen=True)
class ExperimentFlags:
    """How an experiment is run (`run`, `sweep`, `rank-teachers`): trials, subspaces, cache folder."""

    trials: int = 1
    subspace: str = "auto"
    weak_subspace: str | None = None
    strong_subspace: str | None = None
    energy: float = 0.90
    limit: int | None = None
    reuse: bool = True
    dimensions: bool = True
    out_dir: Path = Path("w2s-run")
    student: StudentKind = StudentKind.probe

    def options(
        self,
        weak: BackboneSpec,
        strong: BackboneSpec,
        split: SplitOptions,
        head: HeadOptions | None = None,
        recipe: FinetuneRecipe | None = None,
    ) -> RunOptions:
        return RunOptions(
            student=self.student,
            finetune=recipe or FinetuneRecipe(),
            weak=weak,
            strong=strong,
            split=split,
            head=head or HeadOptions(),
            trials=self.trials,
            limit=self.limit,
            seed=split.seed,
            dimensions=self.dimensions,
            weak_subspace=SubspaceOptions(self.weak_subspace or self.subspace, self.energy),
            strong_subspace=SubspaceOptions(self.strong_subspace or self.subspace, self.energy),
        )


def option(*flags: str, **kw: Any) -> Any:
    """A typer option without its default: `takes` fills that in from the option group's dataclass field, so
    every default is declared once, in the dataclass."""
    return typer.Option(None, *flags, **kw)


DECLARATIONS: dict[type, dict[str, Any]] = {
    FinetuneRecipe: {  # by the recipe's own table of flags, which its messages use too
        "train": option(
            FLAGS["train"], help="What trains: head, last:K (blocks), lora:R (rank), all. Frozen BN, no dropout."
        ),
        "loss": option(FLAGS["loss"], help="mse (the paper's), xent (soft cross-entropy), logconf (Burns)."),
        "epochs": option(FLAGS["epochs"], help="Epochs over each fit's training rows (at least 1)."),
        "lr": option(FLAGS["lr"], help="Peak learning rate."),
        "batch_size": option(FLAGS["batch_size"], help="Finetuning batch size."),
        "weight_decay": option(FLAGS["weight_decay"], help="Weight decay (not on biases and norms)."),
        "opt": option(FLAGS["opt"], help="Optimiser, by timm's create_optimizer_v2 name (adamw, sgd, lamb, ...)."),
        "sched": option(FLAGS["sched"], help=f"Schedule, by timm's create_scheduler_v2 name: {', '.join(SCHEDULES)}."),
        "warmup_epochs": option(FLAGS["warmup_epochs"], help="Linear warm-up, in epochs."),
        "val_fraction": option(
            FLAGS["val_fraction"], help="Held-out share of each fit's rows (the W2S student's: pseudo-labelled)."
        ),
        "select": option(FLAGS["select"], help="best: the epoch of lowest validation loss; last."),
        "aux_weight": option(FLAGS["aux_weight"], help="logconf: weight of the self-hardened term."),
        "aux_warmup": option(FLAGS["aux_warmup"], help="logconf: share of updates to ramp that weight up."),
        "augment": option(f"{FLAGS['augment']}/--no-augment", help="timm's train transform (lora:R, all)."),
        "precision": option(FLAGS["precision"], help="Finetuning precision on a GPU (bf16/fp16: AMP)."),
    },
    TrackFlags: {
        "track": option(
            "--track", help="Also log the results to MLflow: mlflow (./mlruns) or mlflow:URI. Needs w2s[mlflow]."
        ),
    },
    ModelFlags: {
        "weak": option("--weak", help=f"Weak timm model: {MODEL_HELP} (repeat it with --combine: several teachers)."),
        "weak_size": option("--weak-size", help="Weak input size (px) when --weak has no @PX."),
        "strong": option("--strong", help=f"Strong timm model: {MODEL_HELP}; finetuned students need a whole one."),
        "strong_size": option("--strong-size", help="Strong input size when --strong has no @PX."),
        "weak_weights": option("--weak-weights"),
        "strong_weights": option("--strong-weights"),
        "pretrained": option("--pretrained/--no-pretrained"),
        "combine": option(
            "--combine", help="Several --weak teachers: mean, stack or confident (pseudolabel --combine)."
        ),
    },
    ExperimentFlags: {
        "trials": option("--trials", help="Split draws (seeds seed..seed+T-1); mean and standard error."),
        "subspace": option("--subspace", help=SUBSPACE_HELP),
        "weak_subspace": option("--weak-subspace", help="The weak basis (default: --subspace)."),
        "strong_subspace": option("--strong-subspace", help="The strong basis (default: --subspace)."),
        "energy": option("--energy", help="Variance fraction for --subspace auto."),
        "limit": option("--limit", help="Samples to extract (default: just enough)."),
        "reuse": option("--reuse/--no-reuse", help="Reuse embeddings and finished trials in --out-dir."),
        "dimensions": option("--dimensions/--no-dimensions", help="Analyse d_sw, variance, bias."),
        "out_dir": option("--out-dir"),
        "student": option("--student", help="probe: linear heads on frozen embeddings; finetune: the strong network."),
    },
    StudyFlags: {
        "config": option("--config", help="TOML file of options by long name (the command line overrides it)."),
    },
    ExecutorOptions: {
        "executor": option(
            "--executor",
            help="Where trials run: inprocess, local:K (K workers), slurm, submitit-local.",
            callback=_not_collect,
        ),
        "detach": option("--detach", help="slurm: submit and return (then --collect OUT)."),
        "partition": option("--slurm-partition", help="slurm: the partition."),
        "time_min": option("--slurm-time", help="slurm: minutes per job."),
        "gpus": option("--slurm-gpus", help="slurm: GPUs per job."),
        "cpus": option("--slurm-cpus", help="slurm: CPUs per job."),
        "mem_gb": option("--slurm-mem-gb", help="slurm: memory per job (GB)."),
        "sbatch": option("--slurm-option", help="slurm: an extra sbatch option KEY=VALUE (repeatable)."),
        "dry_run": option("--dry-run", help=DRY_RUN_HELP),
    },
    DataOptions: {
        "data": option("--data", help=SPEC_HELP),
        "root": option("--root", help="Folder holding the dataset files."),
        "download": option("--download", help="Let torchvision download the dataset."),
        "target_column": option("--target-column", help="csv: the numeric target column."),
        "image_column": option("--image-column", help="hf: the image column (default: detected)."),
        "label_column": option("--label-column", help="hf: the label or target column (default: detected)."),
    },
    ExtractOptions: {
        "batch_size": option("--batch-size", help="Images per extraction forward pass (finetuning: --ft-batch-size)."),
        "device": option("--device"),
        "num_workers": option("--num-workers", help="DataLoader workers (default: spare cores, at most 8)."),
        "shard_rows": option("--shard-rows", help="Rows per resumable shard."),
        "preprocess": option("--preprocess", help="timm: PIL in workers (exact); device: batched on the device."),
        "precision": option("--precision", help="Forward pass precision (bf16/fp16: autocast)."),
        "quiet": option("--quiet", "-q", help="No progress bar."),
    },
    SplitOptions: {
        "n_labeled": option("--n-labeled", help="n: true labels for the teacher (and strong SFT)."),
        "n_pseudo": option("--n-pseudo", help="N: samples the teacher pseudo-labels for the student."),
        "n_test": option("--n-test", help="Test samples (from the dataset's test split if it has one)."),
        "seed": option("--seed", help="Seed of the labelled / pseudo-label draws (and label noise)."),
        "test_seed": option("--test-seed", help="Seed of the test draw (fixed across trials)."),
        "label_noise": option(
            "--label-noise", help="Flip each training label with this probability (regression: noise std)."
        ),
    },
    HeadOptions: {
        "head": option("--head", help="ridgeless (the theory's) or logistic (the authors' heads)."),
        "teacher_solver": option("--teacher-solver"),
        "student_solver": option("--solver", help="Student, SFT and ceiling solver."),
        "hard": option("--hard/--soft", help="One-hot (hard) or the teacher's raw outputs (soft)."),
    },
}


# The library names a bad value by its own parameter (errors.BadValue: numerics speak their own words); the
# command line says the flag that set it.
VALUE_FLAGS = {
    "energy": "--energy",
    "max_samples": "--max-samples",
    "subspace": "--subspace",
    "ambient": "--ambient",
    "d_s": "--d-s",
    "d_w": "--d-w",
    "shared": "--shared",
    "rest": "--rest",
    "trials": "--trials",
    "sigma": "--sigma",
    "sweep": "--sweep",
}


def said(exc: W2SError) -> str:
    """A user mistake as the command line says it: a library parameter's name becomes its flag."""
    if isinstance(exc, BadValue) and exc.name in VALUE_FLAGS:
        return f"{VALUE_FLAGS[exc.name]} {exc.problem}"
    return exc.message


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def takes(required: tuple[str, ...] = (), **groups: type) -> Callable:
    """Add the options of each group (a dataclass above) to a command and pass one instance per group:
    `@takes(data=DataOptions)` gives the command `data: DataOptions`. Fields in `required` have no default.
    A command with a parameter `ctx` gets the click context there (typer fills one context parameter only)."""

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name not in groups and p.name != "ctx"]
        hints = typing.get_type_hints(fn)
        added = []
        for group, cls in groups.items():
            types = _hints(cls)
            for f in dataclasses.fields(cls):
                decl = _copy(DECLARATIONS[cls][f.name], default=... if f.name in required else _default(f))
                added.append(
                    inspect.Parameter(
                        f"{group}__{f.name}", inspect.Parameter.KEYWORD_ONLY, default=decl, annotation=types[f.name]
                    )
                )

        # the click context, to record the command's effective configuration (cli/config.py)
        added.append(inspect.Parameter("ctx__", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            from w2s_cli.cli.config import recording

            ctx = kwargs.pop("ctx__")
            if "ctx" in sig.parameters:
                kwargs["ctx"] = ctx
            for group, cls in groups.items():
                values = {f.name: kwargs.pop(f"{group}__{f.name}") for f in dataclasses.fields(cls)}
                kwargs[group] = cls(**values)
            with recording(ctx):  # every artifact the command makes records its configuration
                return fn(**kwargs)

        params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in own] + added
        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__
        return wrapper

    return deco


def _default(f: dataclasses.Field) -> Any:
    """A dataclass field's default as click takes it (an enum by its value, a factory's product)."""
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is dataclasses.MISSING:
        raise TypeError(f"option field {f.name} has no default: list it in takes(required=...)")
    return value.value if isinstance(value, enum.Enum) else value


def _copy(info: Any, default: Any) -> Any:
    import copy

    new = copy.copy(info)
    new.default = default
    return new
