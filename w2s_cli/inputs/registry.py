"""The data SPEC registry: one `@source` opener per SPEC kind, the single list that drives `open_source`'s
dispatch, its unknown-SPEC message and the CLI's `--data` help.

Kept light (no numpy, PIL or torch) so that the CLI builds its help without importing any source: each
opener imports its source's module when it is called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from w2s_cli.inputs.sources import ImageSource
    from w2s_cli.options import DataOptions

Opener = Callable[[str, "DataOptions", "Path | None"], "ImageSource"]


@dataclass(frozen=True)
class SourceKind:
    """A SPEC kind: `name` alone (arg None) or `name:ARG` with a non-empty ARG (arg is its metavar)."""

    name: str
    arg: str | None
    help: str
    opener: Opener  # (ARG, the data options, --root as a checked Path or None) -> ImageSource

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name


SOURCES: dict[str, SourceKind] = {}


def source(name: str, arg: str | None = None, help: str = "") -> Callable[[Opener], Opener]:
    """Register the decorated opener for SPEC `name` (with `arg`, the metavar of its argument, if it takes one)."""

    def register(opener: Opener) -> Opener:
        if name in SOURCES:
            raise ValueError(f"data SPEC '{name}' registered twice")
        SOURCES[name] = SourceKind(name, arg, help, opener)
        return opener

    return register


def find(spec: str) -> tuple[SourceKind, str] | None:
    """The registered kind a SPEC names and its argument ('' for a kind without one), else None.

    A kind without an argument matches its name exactly; one with an argument needs `name:ARG`, ARG non-empty.
    """
    name, colon, arg = spec.partition(":")
    kind = SOURCES.get(name)
    if kind is None or (kind.arg is None and colon) or (kind.arg is not None and not arg):
        return None
    return kind, arg


def spec_list() -> str:
    """'fashion-mnist, digits, ... or hf:NAME_OR_PATH[:CONFIG]', for error messages."""
    specs = [k.spec for k in SOURCES.values()]
    return specs[0] if len(specs) == 1 else ", ".join(specs[:-1]) + " or " + specs[-1]


def spec_help() -> str:
    """'fashion-mnist | digits | ...', the CLI's `--data` help."""
    return " | ".join(k.spec for k in SOURCES.values())


@source("fashion-mnist", help="Fashion-MNIST: the Debian package's IDX files, else --root DIR, else --download")
def _fashion_mnist(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    from w2s_cli.inputs.sources import fashion_mnist

    return fashion_mnist(root, options.download)


@source("digits", help="scikit-learn's 1,797 8x8 digits (no split of its own)")
def _digits(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    from w2s_cli.inputs.sources import digits

    return digits()


@source("folder", arg="PATH", help="an ImageFolder tree PATH/<class>/<image>; PATH/train + PATH/test (or val) split")
def _folder(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    from w2s_cli.inputs.sources import image_folder

    return image_folder(Path(arg))


@source("csv", arg="PATH", help="a UTF-8 CSV of image paths and a numeric target (regression); optional split")
def _csv(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    from w2s_cli.inputs.sources import csv_images

    return csv_images(Path(arg), options.target_column)


@source("torchvision", arg="NAME", help="a torchvision dataset taking train= (CIFAR10, MNIST, ...), --root/--download")
def _torchvision(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    from w2s_cli.inputs.sources import torchvision_dataset

    return torchvision_dataset(arg, root, options.download)


@source("hf", arg="NAME_OR_PATH[:CONFIG]", help="a Hugging Face datasets dataset (pip install 'w2s[hf]')")
def _hf(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    from w2s_cli.inputs.hf import hf_dataset

    return hf_dataset(arg, options)
