"""The finetuning recipe: one frozen record of everything that decides a finetuned student's weights.

The same recipe trains the W2S student, strong SFT and the ceiling (only their rows and targets differ),
so the three are comparable; it is written whole into the result and identifies a finished fit for reuse.
It validates itself when built (one clear error per bad value), and nothing in it is specific to the
student, so a finetuned teacher can use it later.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from w2s_cli.errors import W2SError


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


@dataclass(frozen=True)
class TrainSpec:
    """What trains: `head` (the linear head only, by gradient descent), `last:K` (the last K blocks, what
    follows them and the head), `lora:R` (LoRA adapters of rank R on the backbone's linear and 1x1-conv
    layers, plus the head), `all` (every parameter)."""

    kind: str  # head | last | lora | all
    size: int = 0  # K blocks or rank R

    @classmethod
    def parse(cls, text: str) -> TrainSpec:
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
                raise W2SError(f"--train {text}: {name}:N needs {what} of at least 1")
            return cls(name, size)
        raise W2SError(f"--train must be head, last:K, lora:R or all, not '{text}'")

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
        object.__setattr__(self, "loss", Loss(self.loss))
        object.__setattr__(self, "select", Select(self.select))
        TrainSpec.parse(self.train)
        checks = (
            ("--epochs", self.epochs >= 0 and float(self.epochs).is_integer(), "a whole number, 0 or more"),
            ("--lr", self.lr > 0 and math.isfinite(self.lr), "positive"),
            ("--batch-size", self.batch_size >= 1, "at least 1"),
            ("--weight-decay", self.weight_decay >= 0 and math.isfinite(self.weight_decay), "0 or more"),
            ("--warmup-epochs", 0 <= self.warmup_epochs <= max(self.epochs, 0), "between 0 and --epochs"),
            ("--val-fraction", 0 <= self.val_fraction < 0.5, "in [0, 0.5)"),
            ("--aux-weight", 0 <= self.aux_weight <= 1, "in [0, 1]"),
            ("--aux-warmup", 0 <= self.aux_warmup <= 1, "in [0, 1]"),
            ("--precision", self.precision in ("fp32", "bf16", "fp16"), "fp32, bf16 or fp16"),
        )
        for flag, ok, what in checks:
            if not ok:
                value = getattr(self, flag[2:].replace("-", "_"))
                raise W2SError(f"{flag} must be {what}, got {value}")
        if self.select == Select.best and self.val_fraction == 0:
            raise W2SError("--select best needs validation rows: give --val-fraction > 0, or --select last")

    @property
    def spec(self) -> TrainSpec:
        return TrainSpec.parse(self.train)

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
