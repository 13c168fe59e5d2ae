"""What is extracted and how: the data SPEC, the extraction's device, batches and precision, a backbone."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from w2s_cli.errors import W2SError
from w2s_cli.store.records import STAGE, model_label


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Preprocess(str, Enum):
    """timm: timm's own PIL transform in loader workers (exact, the default); device: workers decode to
    uint8 at a fixed size and resize, crop and normalise run batched on the model's device."""

    timm = "timm"
    device = "device"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass(frozen=True)
class DataOptions:
    """Where the images come from."""

    data: str = "fashion-mnist"
    root: str | None = None
    download: bool = False
    target_column: str | None = None
    image_column: str | None = None
    label_column: str | None = None


@dataclass(frozen=True)
class ExtractOptions:
    """How embeddings are computed (not what they are: results do not depend on these, up to float order)."""

    batch_size: int = 64
    device: Device = Device.auto
    num_workers: int | None = None
    shard_rows: int = 10_000
    preprocess: Preprocess = Preprocess.timm
    precision: Precision = Precision.fp32
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise W2SError(f"--batch-size must be positive, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise W2SError(f"--num-workers must be 0 or more, got {self.num_workers}")
        if self.shard_rows <= 0:
            raise W2SError(f"--shard-rows must be positive, got {self.shard_rows}")


@dataclass(frozen=True)
class BackboneSpec:
    """A timm model at an input size, with its weights: `MODEL@PX` on the command line. `stage`: the model
    cut after that stage (timm's feature_info index, 0-based), its pooled feature map the embedding:
    `MODEL:stageK@PX` (also read as `MODEL@PX:stageK`)."""

    model: str
    image_size: int | None = None
    weights: str | None = None
    pretrained: bool = True
    stage: int | None = None

    def __post_init__(self) -> None:
        if self.stage is not None and self.stage < 0:
            raise W2SError(f"stage {self.stage}: a stage is 0 or more (timm's feature_info index)")

    @classmethod
    def parse(cls, text: str, weights: str | None = None, pretrained: bool = True) -> BackboneSpec:
        """'tf_efficientnet_lite0@64' -> model and input size; no '@PX': the model's own size;
        'tf_efficientnet_lite0:stage3@64' (or '...@64:stage3'): cut after stage 3."""
        rest, stage = _split_stage(text.strip(), text)
        name, at, size = rest.rpartition("@")
        if not at:
            name, size = rest, ""
        if stage is None:
            name, stage = _split_stage(name, text)
        if not name:
            raise W2SError(f"'{text}' is not MODEL, MODEL@PX or MODEL:stageK@PX")
        if size:
            try:
                px = int(size)
            except ValueError:
                raise W2SError(f"'{text}': the size after @ must be a whole number of pixels") from None
        else:
            px = None
        return cls(name, px, weights, pretrained, stage)

    @property
    def label(self) -> str:
        """MODEL@PX, or MODEL:stageK@PX for a model cut after stage K (PX 'native': the model's own size)."""
        return f"{model_label(self.model, self.stage)}@{self.image_size or 'native'}"


def _split_stage(text: str, given: str) -> tuple[str, int | None]:
    """'NAME:stageK' -> ('NAME', K); text without that suffix -> (text, None)."""
    head, sep, tail = text.rpartition(STAGE)
    if not sep or "@" in tail or ":" in tail:
        return text, None
    if not tail.isdigit():
        raise W2SError(f"'{given}': the stage after {STAGE} must be a whole number (timm's feature_info index)")
    return head, int(tail)
