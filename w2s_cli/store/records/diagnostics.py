"""The records of the diagnostics: `KernelCheck` (how far a finetune left the kernel regime, `w2s kernel-check`)
and `IntrinsicDim` (the intrinsic dimensions of embeddings and their overlap, `w2s intrinsic-dim`), and the
JSON record of an `intrinsic_dim` artifact (`IntrinsicDimRecord`). `to_json()` is what `--json` prints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from w2s_cli.store.records.base import (
    NOT_JSON,
    RecordError,
    _artifact,
    _count,
    _from_json,
    _mapping,
    _need,
    _number,
    _set,
    _text,
    _to_json,
    _typed,
    _typed_map,
)


# kernel-check ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """A value measured on the test rows (a mean, a ratio or its root) and its standard error; None where
    undefined."""

    value: float | None
    stderr: float | None

    def __post_init__(self) -> None:
        _number("value", self.value)
        _number("stderr", self.stderr)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Measured:
        return _from_json(cls, _need(d, "value", "stderr", where="measured"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class Linearised:
    """A fit's linearised finetune: the gradient features it used, the fit's rows, the features' basis."""

    features: str
    rows: int
    basis: dict[str, Any]

    def __post_init__(self) -> None:
        _text("linearised.features", self.features, optional=False)
        _count("linearised.rows", self.rows, least=1)
        _mapping("linearised.basis", self.basis, optional=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Linearised:
        return _from_json(cls, _need(d, "features", "rows", "basis", where="linearised"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class KernelFit:
    """One fit of a finetune, checked: its trained parameters, how far they moved (|θ1 - θ0| / |θ0|), the rms
    output change on the test rows and the share of it J dθ leaves unexplained, its chosen epoch, the largest
    gap to the result's stored outputs, the test errors (start, finetuned, first order, linearised) and, with
    gradient features, its linearised finetune."""

    trained_parameters: int
    weight_change: float | None
    output_change_rms: float
    unexplained: Measured
    chosen_epoch: int | None
    stored_outputs_gap: float
    error: dict[str, Measured]
    linearised: Linearised | None = None

    def __post_init__(self) -> None:
        _count("trained_parameters", self.trained_parameters)
        for k in ("weight_change", "output_change_rms", "stored_outputs_gap"):
            _number(k, getattr(self, k), optional=k == "weight_change")
        _set(self, "unexplained", _typed("unexplained", self.unexplained, Measured))
        _count("chosen_epoch", self.chosen_epoch, optional=True)
        _set(self, "error", _typed_map("error", self.error, Measured))
        _set(self, "linearised", _typed("linearised", self.linearised, Linearised, optional=True))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> KernelFit:
        keys = ("trained_parameters", "weight_change", "output_change_rms", "unexplained", "stored_outputs_gap")
        return _from_json(cls, _need(d, *keys, "error", where="fit"))

    def to_json(self) -> dict[str, Any]:
        """The linearised finetune (when made) before the errors, as kernel-check has always printed it."""
        out = _to_json(self, omit_none=("linearised",))
        return {**{k: v for k, v in out.items() if k != "error"}, "error": out["error"]}


@dataclass(frozen=True)
class KernelCheck:
    """`w2s kernel-check`: the finetune result checked (absolute path), its recipe, the test rows, the weak
    teacher's test error, each fit's check, and PGR from the start, the finetuned and the first-order
    outputs (and the linearised ones, with gradient features of the W2S student and the ceiling)."""

    result: str
    recipe: str
    n_test: int
    error_weak: Measured
    fits: dict[str, KernelFit]
    pgr: dict[str, Measured]

    def __post_init__(self) -> None:
        _text("result", self.result, optional=False)
        _text("recipe", self.recipe, optional=False)
        _count("n_test", self.n_test, least=1)
        _set(self, "error_weak", _typed("error_weak", self.error_weak, Measured))
        _set(self, "fits", _typed_map("fits", self.fits, KernelFit))
        _set(self, "pgr", _typed_map("pgr", self.pgr, Measured))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> KernelCheck:
        return _from_json(cls, _need(d, "result", "recipe", "n_test", "error_weak", "fits", "pgr", where="check"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


# intrinsic-dim --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpectralDimensions:
    """The intrinsic dimension of one embedding matrix: its rows m, width and rank, the spectral d at the
    requested energy and at 0.90, 0.95, 0.99 (`d_at`), the participation ratio, and the nearest-neighbour
    estimates asked for (TwoNN, MLE)."""

    m: int
    width: int
    d: int
    energy: float
    d_at: dict[str, int]
    participation_ratio: float
    rank: int
    twonn: float | None = None
    mle: float | None = None

    def __post_init__(self) -> None:
        for k in ("m", "width", "d", "rank"):
            _count(k, getattr(self, k))
        for k in ("energy", "participation_ratio", "twonn", "mle"):
            _number(k, getattr(self, k), optional=k in ("twonn", "mle"))
        for k, v in _mapping("d_at", self.d_at, optional=False).items():
            _count(f"d_at.{k}", v)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SpectralDimensions:
        keys = ("m", "width", "d", "energy", "d_at", "participation_ratio", "rank")
        return _from_json(cls, _need(d, *keys, where="dimensions"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("twonn", "mle"))


@dataclass(frozen=True)
class IntrinsicDim:
    """`w2s intrinsic-dim`: the energy and centring used, the estimators (name -> what it is), the weak
    matrix's dimensions and the strong one's, their overlap d_sw (its chance level; with our method the
    null-corrected shared dimension and the canonical correlations) and the method; the artifact and figure
    written. `spectra` (each matrix's eigenvalues, for the figure) is held in memory only."""

    energy: float
    center: bool
    estimators: dict[str, str]
    weak: SpectralDimensions
    strong: SpectralDimensions | None = None
    d_sw: float | None = None
    d_sw_null: float | None = None
    d_sw_corrected: float | None = None
    canonical_correlations: list[float] | None = None
    method: str | None = None
    artifact: str | None = None
    plot: str | None = None
    spectra: dict[str, Any] | None = field(default=None, metadata=NOT_JSON, compare=False, repr=False)

    OPTIONAL = ("strong", "d_sw", "d_sw_null", "d_sw_corrected", "canonical_correlations", "method", "artifact")

    def __post_init__(self) -> None:
        _number("energy", self.energy, optional=False)
        if not isinstance(self.center, bool):
            raise RecordError(f"'center' must be true or false, not {self.center!r}")
        _mapping("estimators", self.estimators, optional=False)
        _set(self, "weak", _typed("weak", self.weak, SpectralDimensions))
        _set(self, "strong", _typed("strong", self.strong, SpectralDimensions, optional=True))
        for k in ("d_sw", "d_sw_null", "d_sw_corrected"):
            _number(k, getattr(self, k))
        if (self.d_sw is None) != (self.strong is None):
            raise RecordError("'d_sw' goes with the 'strong' matrix")
        for k in ("method", "artifact", "plot"):
            _text(k, getattr(self, k))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> IntrinsicDim:
        return _from_json(cls, _need(d, "energy", "center", "estimators", "weak", where="result"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=(*self.OPTIONAL, "plot"))


@dataclass(frozen=True)
class IntrinsicDimRecord:
    """The JSON record of an `intrinsic_dim` artifact: the inputs (absolute paths) and the result (without its
    canonical correlations: a tensor of the artifact); `provenance` keeps what every artifact carries."""

    inputs: dict[str, str | None]
    result: IntrinsicDim
    provenance: dict[str, Any] = field(default_factory=dict)

    kind = "intrinsic_dim"

    def __post_init__(self) -> None:
        _set(self, "inputs", _mapping("inputs", self.inputs) or {})
        _set(self, "result", _typed("result", self.result, IntrinsicDim))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> IntrinsicDimRecord:
        return _from_json(cls, _artifact(d, cls.kind, "result"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)
