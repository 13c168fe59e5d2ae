"""What a head's fit records (`FitRecord`), the principal subspace it ran in (`Basis`), and the label noise of
its training labels (`LabelNoiseRecord`): parts of a teacher's, pseudo-labels' and result's records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from w2s_cli.store.records.base import (
    SIDES,
    RecordError,
    _count,
    _from_json,
    _mapping,
    _names,
    _need,
    _number,
    _text,
    _to_json,
)


@dataclass(frozen=True)
class FitRecord:
    """One head's fit: its solver, rows, and (ridgeless) rank and condition number; a finetuned fit's chosen
    epoch; `extra` keeps what a solver adds of its own (ridge's alpha, a finetuning log), as written."""

    solver: str | None = None  # None in a trial's analysis (its fits are ridgeless by construction)
    rows: int | None = None
    rank: int | None = None
    condition_number: float | None = None
    ill_determined: bool | None = None  # ridgeless: singular values beyond what the moments resolve
    solved_from: str | None = None  # ridgeless: "moments" or "rows" (the refit, as lstsq)
    chosen_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _text("solver", self.solver)
        _count("rows", self.rows, optional=True)
        _count("rank", self.rank, optional=True)
        _number("condition_number", self.condition_number)
        if self.ill_determined is not None and not isinstance(self.ill_determined, bool):
            raise RecordError(f"'ill_determined' must be true or false, not {self.ill_determined!r}")
        if self.solved_from not in (None, "moments", "rows"):
            raise RecordError(f"'solved_from' must be 'moments' or 'rows', not {self.solved_from!r}")
        _count("chosen_epoch", self.chosen_epoch, optional=True)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FitRecord:
        return _from_json(cls, _need(d, where="fit"))

    def to_json(self) -> dict[str, Any]:
        """`rows` always; the others only when set; then `extra`."""
        return _to_json(self, omit_none=tuple(k for k in _names(FitRecord) if k != "rows"))


def _fits(d: Any) -> dict[str, FitRecord]:
    return {
        k: v if isinstance(v, FitRecord) else FitRecord.from_json(v) for k, v in (_mapping("fits", d) or {}).items()
    }


@dataclass(frozen=True)
class Basis:
    """The principal subspace a fit ran in: `dim` None for the full embedding (`width` wide, of `rank`)."""

    requested: str | None
    dim: int | None
    rule: str | None
    energy: float | None
    width: int | None
    rank: int | None
    rows: int | None
    energy_held: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _text("requested", self.requested)
        _text("rule", self.rule)
        for k in ("dim", "width", "rank", "rows"):
            _count(k, getattr(self, k), optional=True)
        _number("energy", self.energy)
        _number("energy_held", self.energy_held)

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> Basis | None:
        if d is None:
            return None
        return _from_json(cls, _need(d, where="subspace"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("energy_held",))


def _bases(d: Any) -> dict[str, Basis | None]:
    """The weak and strong bases (None: not recorded)."""
    d = {**dict.fromkeys(SIDES), **(_mapping("subspace", d) or {})}
    return {k: v if isinstance(v, Basis) or v is None else Basis.from_json(v) for k, v in d.items()}


@dataclass(frozen=True)
class LabelNoiseRecord:
    """The label noise of the n + N training labels: a rate, its kind, the seeds of its draw."""

    rate: float
    kind: str | None = None
    seed: Any = None

    def __post_init__(self) -> None:
        _number("label_noise.rate", self.rate, optional=False)
        if not 0 <= self.rate <= 1:
            raise RecordError(f"'label_noise.rate' is {self.rate!r}, not in [0, 1]")

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> LabelNoiseRecord | None:
        if d is None:
            return None
        return _from_json(cls, _need(d, "rate", where="label_noise"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)
