"""The data SPEC registry: one `@source` opener per SPEC kind, declared beside its source (like timm's
`@register_model`: sources.py, hf.py), the single table that drives `open_source`'s dispatch, its
unknown-SPEC message and the CLI's `--data` help. Importing `w2s_cli.inputs` fills it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2s_cli.options import DataOptions

# (ARG, the data options, --root as a checked Path or None) -> the source (an inputs.sources.ImageSource)
Opener = Callable[[str, DataOptions, Path | None], Any]


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
