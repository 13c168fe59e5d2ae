"""What the theory explains: of one trial (`Analysis`: dimensions, variance coefficients, the label-light
predictions, the decomposition of the errors), and of a summary of trials (`TheorySummary`, with the paper's
variance-only prediction, `VarianceOnly`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from w2s_cli.numerics.stats import MODELS
from w2s_cli.store.records.base import (
    SIDES,
    RecordError,
    _count,
    _from_json,
    _mapping,
    _need,
    _number,
    _per_model,
    _set,
    _text,
    _to_json,
    _typed_map,
)
from w2s_cli.store.records.fits import Basis, FitRecord, _bases, _fits


# of one trial ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimensions:
    """d_w, d_s, the shared dimension d_sw (its chance level and null-corrected value) over m training rows;
    a trial's also its fits' ranks and canonical correlations, a summary's the bases they came from."""

    d_w: float
    d_s: float
    d_sw: float
    d_sw_null: float
    d_sw_corrected: float | None
    m: int
    rank_w: int | None = None
    rank_s: int | None = None
    canonical_correlations: list[float] | None = None
    basis: dict[str, Basis | None] | None = None

    NUMBERS = ("d_w", "d_s", "d_sw", "d_sw_null", "d_sw_corrected")

    def __post_init__(self) -> None:
        for k in self.NUMBERS:
            _number(k, getattr(self, k), optional=k == "d_sw_corrected")
        _count("m", self.m, least=1)
        if self.basis is not None:
            _set(self, "basis", _bases(self.basis))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Dimensions:
        return _from_json(cls, _need(d, *cls.NUMBERS, "m", where="dimensions"))

    @property
    def overlap(self) -> float | None:
        """d_sw / d_w, the share of the teacher's subspace the student's holds."""
        return self.d_sw / self.d_w if self.d_w else None

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("rank_w", "rank_s", "canonical_correlations", "basis"))


@dataclass(frozen=True)
class VarianceRow:
    """A model's exact-design variance coefficient beside the paper's, and their ratio."""

    exact: float | None
    theory: float | None
    ratio: float | None

    def __post_init__(self) -> None:
        for k in ("exact", "theory", "ratio"):
            _number(k, getattr(self, k))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VarianceRow:
        return _from_json(cls, _need(d, "exact", "theory", "ratio", where="variance"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class Decomposition:
    """A model's measured error = noise + bias + variance; the W2S bias split into what it inherits from the
    teacher and the rest."""

    noise: float | None
    bias: float | None
    variance: float | None
    bias_inherited: float | None = None
    bias_rest: float | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _number(f.name, getattr(self, f.name))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Decomposition:
        return _from_json(cls, _need(d, "noise", "bias", "variance", where="decomposition"))

    def to_json(self) -> dict[str, Any]:
        out = {"noise": self.noise, "bias": self.bias, "variance": self.variance}
        if self.bias_inherited is not None:
            out.update(bias_inherited=self.bias_inherited, bias_rest=self.bias_rest)
        return out


@dataclass(frozen=True)
class Predicted:
    """The label-light predictions (no test label, no label of the N pseudo rows): test errors, PGR, OPR;
    over several trials with standard errors (`over_trials`); the student-teacher misfit when measured."""

    error: dict[str, float | None]
    pgr: float | None
    opr: float | None
    method: str
    error_stderr: dict[str, float | None] | None = None
    over_trials: bool = False  # the PGR and OPR standard errors are over trials (a summary of several)
    pgr_stderr: float | None = None
    opr_stderr: float | None = None
    misfit: float | None = None
    error_w2s_by_misfit: float | None = None

    def __post_init__(self) -> None:
        _set(self, "error", _per_model("predicted.error", self.error))
        if self.error_stderr is not None:
            _set(self, "error_stderr", _per_model("predicted.error_stderr", self.error_stderr))
        for k in ("pgr", "opr", "pgr_stderr", "opr_stderr", "misfit", "error_w2s_by_misfit"):
            _number(f"predicted.{k}", getattr(self, k))
        _text("predicted.method", self.method, optional=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Predicted:
        _need(d, "error", "pgr", "opr", "method", where="predicted")
        return _from_json(cls, d, over_trials="pgr_stderr" in d)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": dict(self.error)}
        if self.error_stderr is not None:
            out["error_stderr"] = dict(self.error_stderr)
        out.update(method=self.method, pgr=self.pgr)
        if self.over_trials:
            out["pgr_stderr"] = self.pgr_stderr
        out["opr"] = self.opr
        if self.over_trials:
            out["opr_stderr"] = self.opr_stderr
        if self.misfit is not None:
            out.update(misfit=self.misfit, error_w2s_by_misfit=self.error_w2s_by_misfit)
        return out


@dataclass(frozen=True)
class MemberTheory:
    """One teacher of a combination in the combined trial's design: its weight, its own d_w and the dimension
    it shares with the strong subspace (d_sw, null-corrected), its own exact variance coefficient."""

    label: str
    weight: float | None
    d_w: float
    d_sw: float
    d_sw_corrected: float | None
    variance_exact: float

    def __post_init__(self) -> None:
        _text("label", self.label, optional=False)
        for k in ("weight", "d_w", "d_sw", "d_sw_corrected", "variance_exact"):
            _number(k, getattr(self, k), optional=k in ("weight", "d_sw_corrected"))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MemberTheory:
        return _from_json(cls, _need(d, "label", "d_w", "d_sw", "variance_exact", where="member"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class TeacherPair:
    """The dimension two combined teachers share (sum of squared canonical correlations of their
    coordinates over the n + N training rows), its chance level and its null-corrected value."""

    a: int
    b: int
    d_ww: float
    d_ww_null: float
    d_ww_corrected: float | None

    def __post_init__(self) -> None:
        _count("a", self.a)
        _count("b", self.b)
        for k in ("d_ww", "d_ww_null", "d_ww_corrected"):
            _number(k, getattr(self, k), optional=k == "d_ww_corrected")

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TeacherPair:
        return _from_json(cls, _need(d, "a", "b", "d_ww", "d_ww_null", where="pair"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class SeveralTeachers:
    """The theory of a combined teacher (stages/analysis.py): each member's dimensions, the overlap of every
    pair, and the combined teacher's variance coefficient two ways: exact on the design, and by the overlaps
    (1 + sum_kl w_k w_l d_kl) / n (d_kk = d_k, d_kl the pair's shared dimension): averaging teachers that
    share fewer dimensions removes more variance, the discrepancy between teachers the paper's argument
    turns on."""

    rule: str
    members: tuple[MemberTheory, ...]
    pairs: tuple[TeacherPair, ...]
    variance_exact: float
    variance_by_overlap: float

    def __post_init__(self) -> None:
        _text("rule", self.rule, optional=False)
        _set(
            self,
            "members",
            tuple(m if isinstance(m, MemberTheory) else MemberTheory.from_json(m) for m in self.members),
        )
        _set(self, "pairs", tuple(p if isinstance(p, TeacherPair) else TeacherPair.from_json(p) for p in self.pairs))
        _number("variance_exact", self.variance_exact, optional=False)
        _number("variance_by_overlap", self.variance_by_overlap, optional=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SeveralTeachers:
        return _from_json(cls, _need(d, "rule", "members", "pairs", where="teachers"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class Analysis:
    """What the theory explains on one trial (stages/analysis.py): dimensions, variance coefficients, the
    label-light predictions, the interpolation flags, the fits' records, sigma^2, the error decomposition."""

    dimensions: Dimensions
    variance: dict[str, VarianceRow]
    variance_note: str | None
    predicted: Predicted
    near_interpolation: tuple[str, ...]
    fits: dict[str, FitRecord]
    sigma2: dict[str, float | None]
    decomposition: dict[str, Decomposition]
    decomposition_note: str | None = None  # why the decomposition (or its inherited part) is left out
    teachers: SeveralTeachers | None = None  # a combined teacher's members and their overlaps

    def __post_init__(self) -> None:
        _text("decomposition_note", self.decomposition_note)
        if self.teachers is not None and not isinstance(self.teachers, SeveralTeachers):
            _set(self, "teachers", SeveralTeachers.from_json(self.teachers))
        if not isinstance(self.dimensions, Dimensions):
            _set(self, "dimensions", Dimensions.from_json(self.dimensions))
        _set(self, "variance", _typed_map("variance", self.variance, VarianceRow))
        _text("variance_note", self.variance_note)
        if not isinstance(self.predicted, Predicted):
            _set(self, "predicted", Predicted.from_json(self.predicted))
        if any(k not in MODELS for k in self.near_interpolation):
            raise RecordError(f"'near_interpolation' names a model not among {', '.join(MODELS)}")
        _set(self, "near_interpolation", tuple(self.near_interpolation))
        _set(self, "fits", _fits(self.fits))
        _set(self, "sigma2", _per_model("sigma2", self.sigma2, models=SIDES))
        _set(self, "decomposition", _typed_map("decomposition", self.decomposition, Decomposition))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Analysis:
        keys = ("dimensions", "variance", "predicted", "near_interpolation", "fits", "sigma2", "decomposition")
        return _from_json(cls, _need(d, *keys, where="analysis"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("decomposition_note", "teachers"))


# of a summary of trials -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VarianceOnly:
    """The paper's variance-only PGR and OPR from the measured dimensions (and their N -> infinity limits),
    or the reason they do not apply (`note`)."""

    inputs: dict[str, float]
    available: bool
    pgr: float | None = None
    opr: float | None = None
    limits: dict[str, float | None] | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        _mapping("theory.inputs", self.inputs, optional=False)
        if self.available and self.limits is None:
            raise RecordError("an available variance-only prediction without its 'limits'")
        if not self.available and self.note is None:
            raise RecordError("an unavailable variance-only prediction without its 'note'")
        _number("theory.pgr", self.pgr)
        _number("theory.opr", self.opr)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VarianceOnly:
        _need(d, "inputs", "available", where="theory")
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"inputs": dict(self.inputs), "available": self.available}
        if self.available:
            out.update(pgr=self.pgr, opr=self.opr, limits=dict(self.limits))
        else:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class TheorySummary:
    """What the theory explains, averaged over the trials of a result (stages/summary.py)."""

    dimensions: Dimensions
    variance: dict[str, VarianceRow]
    decomposition: dict[str, Decomposition]
    predicted: Predicted
    near_interpolation: tuple[str, ...]
    sigma2: dict[str, float | None]
    theory: VarianceOnly
    decomposition_note: str | None = None

    def __post_init__(self) -> None:
        _text("decomposition_note", self.decomposition_note)
        if not isinstance(self.dimensions, Dimensions) or not isinstance(self.predicted, Predicted):
            raise RecordError("'dimensions' and 'predicted' of a summary are records")
        if not isinstance(self.theory, VarianceOnly):
            raise RecordError("'theory' of a summary is a VarianceOnly record")
        _set(self, "variance", _typed_map("variance", self.variance, VarianceRow))
        _set(self, "decomposition", _typed_map("decomposition", self.decomposition, Decomposition))
        _set(self, "near_interpolation", tuple(self.near_interpolation))
        _set(self, "sigma2", _per_model("sigma2", self.sigma2, models=SIDES))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("decomposition_note", "teachers"))
