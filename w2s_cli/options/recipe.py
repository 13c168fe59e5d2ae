"""The finetuning recipe: one frozen record of everything that decides a finetuned student's weights.

The same recipe trains the W2S student, strong SFT and the ceiling (only their rows and targets differ),
so the three are comparable; it is written whole into the result and identifies a finished fit for reuse.
It validates itself when built (one clear error per bad value, naming the command line's option: FLAGS),
and `check_rows` checks it against the fits' row counts once they are known, before any work. Nothing in
it is specific to the student, so a finetuned teacher can use it later.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from w2s_cli.errors import W2SError, printable


class Loss(str, Enum):
    """mse: squared error to the targets (the paper's loss, and the error the report measures);
    xent: soft cross-entropy of the softmax against the targets as probabilities (Burns et al., the authors);
    logconf: Burns et al.'s auxiliary log-confidence loss, for many classes: cross-entropy to the targets
    mixed with cross-entropy to the student's own hardened (argmax) predictions, the mix warmed up."""

    mse = "mse"
    xent = "xent"
    logconf = "logconf"


class Select(str, Enum):
    """best: the epoch (0 = the LP-FT start) with the lowest validation loss; last: the final epoch."""

    best = "best"
    last = "last"


LOSS_WORDS = {Loss.mse: "squared error", Loss.xent: "soft cross-entropy", Loss.logconf: "log-confidence"}

# Each field's option on the command line (finetune, run, sweep; a --config key is the same name without the
# dashes). cli/options.py declares the options by these names, and every message here uses them, so that a
# message names the option the user typed (batch size and precision differ from the extraction's options).
FLAGS = {
    "train": "--train",
    "loss": "--loss",
    "epochs": "--epochs",
    "lr": "--lr",
    "batch_size": "--ft-batch-size",
    "weight_decay": "--weight-decay",
    "opt": "--opt",
    "sched": "--sched",
    "warmup_epochs": "--warmup-epochs",
    "val_fraction": "--val-fraction",
    "select": "--select",
    "aux_weight": "--aux-weight",
    "aux_warmup": "--aux-warmup",
    "augment": "--augment",
    "precision": "--ft-precision",
}

# The names timm's create_scheduler_v2 accepts that fit a schedule stepped per update: not 'plateau' (driven by
# a metric, stepped per epoch) and not 'none' (no schedule, and no warm-up: 'constant' is a fixed rate).
SCHEDULES = ("cosine", "tanh", "step", "multistep", "poly", "constant", "wsd", "rsqrt")

# `w2s proxy` and `rank-teachers --student finetune`: the epochs of the short W2S finetune before the recipe's
# three (one epoch costs 0.06-0.17x the three finetunes: docs/finetuning.md, Held against measurement)
PROXY_EPOCHS = 1

# The three fits of one recipe, in the words of the paper, and how their rows are counted.
FIT_WORDS = {"w2s": "the W2S student", "strong_sft": "strong SFT", "ceiling": "the ceiling"}


@dataclass(frozen=True)
class TrainSpec:
    """What trains: `head` (the linear head only, by gradient descent), `last:K` (the last K blocks, what
    follows them and the head), `lora:R` (LoRA adapters of rank R on the backbone's linear and 1x1-conv
    layers, plus the head), `all` (every parameter)."""

    kind: str  # head | last | lora | all
    size: int = 0  # K blocks or rank R

    @classmethod
    def parse(cls, text: str) -> TrainSpec:
        flag = FLAGS["train"]
        name, colon, arg = str(text).strip().partition(":")
        if name in ("head", "all") and not colon:
            return cls(name)
        if name in ("last", "lora") and colon:
            try:
                size = int(arg)
            except ValueError:
                size = 0
            if size < 1:
                what = "a number of blocks K" if name == "last" else "a LoRA rank R"
                raise W2SError(f"{flag} {printable(text)}: {name}:N needs {what} of at least 1")
            return cls(name, size)
        raise W2SError(f"{flag} must be head, last:K, lora:R or all, not '{printable(text)}'")

    def __str__(self) -> str:
        return f"{self.kind}:{self.size}" if self.kind in ("last", "lora") else self.kind

    def describe(self) -> str:
        if self.kind == "head":
            return "head only"
        if self.kind == "last":
            return f"last {self.size} block{'s' if self.size > 1 else ''}"
        if self.kind == "lora":
            return f"LoRA rank {self.size}"
        return "all layers"


def _whole(v: Any, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def held_out(n: int, fraction: float) -> int:
    """How many of a fit's n rows are held out for validation: round(fraction * n)."""
    return int(round(fraction * n))


@dataclass(frozen=True)
class FinetuneRecipe:
    """How a strong network is finetuned (the optimiser and schedule are timm's factories by name)."""

    train: str = "last:2"
    loss: Loss = Loss.mse
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    opt: str = "adamw"
    sched: str = "cosine"
    warmup_epochs: float = 0.5
    val_fraction: float = 0.1
    select: Select = Select.best
    aux_weight: float = 0.5  # logconf: the final weight of the hardened-prediction term
    aux_warmup: float = 0.2  # logconf: fraction of the updates over which that weight ramps up from 0
    augment: bool = False
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name, kind in (("loss", Loss), ("select", Select)):
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                choices = ", ".join(k.value for k in kind)
                raise W2SError(
                    f"{FLAGS[name]} must be one of {choices}, not '{printable(getattr(self, name))}'"
                ) from None
        if not _whole(self.epochs, 1):  # first: the warm-up's rule reads it
            raise W2SError(
                f"{FLAGS['epochs']} must be a whole number of at least 1, got {printable(self.epochs)} (epoch 0 is "
                "the LP-FT start, the linear student alone: for that, use --student probe, or w2s fit-student)"
            )
        spec = TrainSpec.parse(self.train)
        checks = (
            ("lr", _number(self.lr) and self.lr > 0, "positive"),
            ("batch_size", _whole(self.batch_size, 1), "a whole number of at least 1"),
            ("weight_decay", _number(self.weight_decay) and self.weight_decay >= 0, "0 or more"),
            ("warmup_epochs", _number(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs,
             f"between 0 and {FLAGS['epochs']} ({self.epochs})"),
            ("val_fraction", _number(self.val_fraction) and 0 <= self.val_fraction < 0.5, "in [0, 0.5)"),
            ("aux_weight", _number(self.aux_weight) and 0 <= self.aux_weight <= 1, "in [0, 1]"),
            ("aux_warmup", _number(self.aux_warmup) and 0 <= self.aux_warmup <= 1, "in [0, 1]"),
            ("augment", isinstance(self.augment, bool), "true or false"),
            ("precision", self.precision in ("fp32", "bf16", "fp16"), "fp32, bf16 or fp16"),
        )  # fmt: skip
        for name, ok, what in checks:
            if not ok:
                raise W2SError(f"{FLAGS[name]} must be {what}, got {printable(getattr(self, name))}")
        if self.select == Select.best and self.val_fraction == 0:
            raise W2SError(
                f"{FLAGS['select']} best needs validation rows: give {FLAGS['val_fraction']} > 0, "
                f"or {FLAGS['select']} last"
            )
        if self.augment and spec.kind not in ("lora", "all"):
            raise W2SError(
                f"{FLAGS['augment']} needs images: {FLAGS['train']} lora:R or all "
                f"({FLAGS['train']} {self.train} trains on cached inputs)"
            )
        check_opt(self.opt)
        check_sched(self.sched)

    @property
    def spec(self) -> TrainSpec:
        return TrainSpec.parse(self.train)

    def val_rows(self, n: int) -> int:
        """Validation rows of a fit of n rows."""
        return held_out(n, self.val_fraction)

    def updates_per_epoch(self, train_rows: int) -> int:
        return max(1, math.ceil(train_rows / self.batch_size))

    def check_task(self, *, classification: bool) -> None:
        """Refuse a loss the task cannot take: the cross-entropies need classes."""
        if self.loss != Loss.mse and not classification:
            raise W2SError(
                f"{FLAGS['loss']} {self.loss.value} needs classes; this dataset has numeric targets (use "
                f"{FLAGS['loss']} mse)"
            )

    def check_rows(self, rows: dict[str, int]) -> None:
        """Refuse, before any work, a recipe that the fits' row counts ({fit: rows}, fits as in FIT_WORDS)
        cannot run: --select best with a fit whose validation share rounds to no row, or a schedule that timm
        cannot lay over a fit's updates.

        A fit without validation rows is refused rather than switched to --select last: the three fits share
        one recipe so that they are comparable, and one of them picked by another rule (its last epoch, the
        others their best) would bias the comparison (PGR) without a word in the numbers."""
        for fit, n in sorted(rows.items(), key=lambda item: item[1]):
            if self.select == Select.best and self.val_rows(n) == 0:
                raise W2SError(self._no_validation(FIT_WORDS.get(fit, fit), n))
        if self.sched == FinetuneRecipe.sched:  # the default lays over any recipe that builds
            return
        for fit, n in rows.items():
            try:
                schedule(_probe_optimiser(self.lr), self, self.updates_per_epoch(n - self.val_rows(n)))
            except (ValueError, AssertionError) as exc:
                why = printable(" ".join(str(exc).split()))
                raise W2SError(
                    f"{FLAGS['sched']} {printable(self.sched)}: timm cannot lay this schedule over "
                    f"{FIT_WORDS.get(fit, fit)}'s {n} rows with {FLAGS['epochs']} {self.epochs}, "
                    f"{FLAGS['warmup_epochs']} {self.warmup_epochs} and {FLAGS['batch_size']} {self.batch_size} ({why})"
                ) from None

    def _no_validation(self, fit: str, n: int) -> str:
        share, select, val = FLAGS["val_fraction"], FLAGS["select"], self.val_fraction
        said = (
            f"{fit} trains on {n} row{'s' if n != 1 else ''}: {share} {val:g} holds out round({val * n:g}) = 0 "
            f"of them, and {select} best picks the epoch by its validation loss"
        )
        least = _least_fraction(n)
        if least is None:
            return f"{said}; no {share} below 0.5 holds out one of {n} row{'s' if n != 1 else ''}: give {select} last"
        return f"{said}; give {share} {least:g} or more (one row), or {select} last"

    def record(self) -> dict[str, Any]:
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FinetuneRecipe:
        return cls(**record)

    def key(self) -> str:
        """A short readable name plus a hash of the whole recipe (folder and file names)."""
        digest = hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{str(self.spec).replace(':', '')}-{self.loss.value}-e{self.epochs}-{digest}"

    def describe(self) -> str:
        """e.g. 'finetuned: last 2 blocks, LP-FT, squared error, 5 epochs (best by validation)'."""
        pick = f"best of {self.epochs} epochs by validation" if self.select == Select.best else f"{self.epochs} epochs"
        return f"finetuned: {self.spec.describe()}, LP-FT, {LOSS_WORDS[self.loss]}, {pick}"


def _least_fraction(n: int) -> float | None:
    """The smallest --val-fraction (in thousandths) that holds out one of n rows; None when none below 0.5 does."""
    f = math.floor(500 / n) / 1000 + 0.001
    while held_out(n, f) < 1:
        f = round(f + 0.001, 3)
    return f if f < 0.5 else None


def check_opt(name: str) -> None:
    """An optimiser timm's create_optimizer_v2 knows (its registry; 'lookahead_' may wrap one) and that takes
    first-order steps. The default needs no look-up (importing timm takes seconds)."""
    if name == FinetuneRecipe.opt:
        return
    import timm.optim

    known = timm.optim.list_optimizers()
    base = str(name).lower().removeprefix("lookahead_")
    if base not in known:
        close = difflib.get_close_matches(base, known, n=3)
        hint = f" (did you mean {_either(close)}?)" if close else ""
        raise W2SError(
            f"{FLAGS['opt']} '{printable(name)}' is not an optimiser of timm's{hint}: e.g. adamw, adam, sgd, lamb, "
            f"lion ({len(known)} in all: timm.optim.list_optimizers(); 'lookahead_' before a name wraps it)"
        )
    if timm.optim.get_optimizer_info(base).second_order:
        raise W2SError(f"{FLAGS['opt']} {printable(name)} needs second-order gradients, which w2s does not compute")


def check_sched(name: str) -> None:
    if name not in SCHEDULES:
        close = difflib.get_close_matches(str(name), SCHEDULES, n=2)
        hint = f" (did you mean {_either(close)}?)" if close else ""
        raise W2SError(
            f"{FLAGS['sched']} must be one of timm's schedules {', '.join(SCHEDULES)}, not '{printable(name)}'{hint}"
        )


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def schedule(optimiser: Any, recipe: FinetuneRecipe, steps: int) -> Any:
    """timm's learning-rate schedule for `recipe` (warm-up from 1% of the rate), stepped per update (`steps`
    updates an epoch), so that the rate is a function of the update count."""
    import timm.scheduler

    sched, _ = timm.scheduler.create_scheduler_v2(
        optimiser,
        sched=recipe.sched,
        num_epochs=recipe.epochs,
        warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.lr * 0.01,
        step_on_epochs=False,
        updates_per_epoch=steps,
    )
    if sched is None:  # guards SCHEDULES against a timm that returns no schedule for a name
        raise ValueError(f"timm made no schedule for '{recipe.sched}'")
    return sched


def _probe_optimiser(lr: float) -> Any:
    """A one-parameter optimiser to lay a schedule over (schedules only read and set its learning rate)."""
    import torch

    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
