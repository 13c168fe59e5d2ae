"""Typed records of results: one frozen dataclass per thing a result holds, validated when built, written to
and read from the JSON record of an artifact here and nowhere else.

A `ResultRecord` is the JSON record of a `result` artifact (one trial, or several combined); each `Trial`
holds its measured `Metrics` and, for a ridgeless student, its `Analysis`. `Summary` is what `w2s report`
shows and `report --json` prints (the trials averaged, the theory beside them); a `SweepPoint` is one point
of a sweep and `Sweep` the whole sweep. `to_json()` gives the documented JSON layout; `from_json()` reads it
back and refuses a record that does not fit with one `RecordError` naming the field.

Schema 3 writes the layout of schema 2 (the records only made it checked), so files of schema 2 are read as
they are; an older result is refused by the artifact reader with the version that wrote it.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from w2s_cli.numerics.stats import MODELS

SIDES = ("weak", "strong")


class RecordError(ValueError):
    """A record with a missing or ill-typed field (the message names it)."""


# field checks ---------------------------------------------------------------------------------------------
def _number(name: str, v: Any, optional: bool = True) -> float | int | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise RecordError(f"'{name}' is {v!r}, not a number")
    return v


def _count(name: str, v: Any, optional: bool = False, least: int = 0) -> int | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < least:
        raise RecordError(f"'{name}' is {v!r}, not a whole number >= {least}")
    return v


def _text(name: str, v: Any, optional: bool = True) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise RecordError(f"'{name}' is {v!r}, not text")
    return v


def _per_model(name: str, d: Any, optional_values: bool = True, models: tuple[str, ...] = MODELS) -> dict:
    """A number (or None) for each of the four models, in their order."""
    if not isinstance(d, Mapping):
        raise RecordError(f"'{name}' is not an object")
    missing = [k for k in models if k not in d]
    if missing:
        raise RecordError(f"'{name}' has no '{missing[0]}'")
    return {k: _number(f"{name}.{k}", d[k], optional_values) for k in models}


def _mapping(name: str, d: Any, optional: bool = True) -> dict | None:
    if d is None and optional:
        return None
    if not isinstance(d, Mapping):
        raise RecordError(f"'{name}' is not an object")
    return dict(d)


def _need(d: Any, *keys: str, where: str = "record") -> Mapping:
    if not isinstance(d, Mapping):
        raise RecordError(f"'{where}' is not an object")
    missing = [k for k in keys if k not in d]
    if missing:
        raise RecordError(f"'{where}' has no '{missing[0]}'")
    return d


def _set(obj: Any, name: str, value: Any) -> None:
    """A checked (normalised) value into a frozen dataclass's field, from its __post_init__."""
    object.__setattr__(obj, name, value)


# the JSON of a record: its fields one to one ----------------------------------------------------------------
REST = ("provenance", "extra")  # the field keeping the keys a record does not type, as written


def _names(cls: type) -> tuple[str, ...]:
    """The keys a record types: its fields in their declared order, less `provenance` or `extra`."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in REST)


def _json(v: Any) -> Any:
    """A field's value as JSON: a record by its to_json(), maps and lists element by element (None as None)."""
    if hasattr(v, "to_json"):
        return v.to_json()
    if isinstance(v, Mapping):
        return {k: _json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    return v


def _to_json(rec: Any, omit_none: tuple[str, ...] = ()) -> dict[str, Any]:
    """A record's typed fields as JSON, in their declared order (those of `omit_none` left out when None);
    the keys it keeps as written go first (`provenance`, which the typed fields override) or last (`extra`,
    which overrides them)."""
    out = {k: _json(getattr(rec, k)) for k in _names(type(rec)) if k not in omit_none or getattr(rec, k) is not None}
    if "provenance" in rec.__dataclass_fields__:
        return {**rec.provenance, **out}
    if "extra" in rec.__dataclass_fields__:
        return {**out, **rec.extra}
    return out


def _from_json(cls: type, d: Mapping[str, Any], **given: Any) -> Any:
    """A record built from a JSON object: each typed field from its key (None where absent) but those `given`
    (nested records, defaults); the keys it does not type kept as written, in its `provenance` or `extra`."""
    names = _names(cls)
    kwargs = {k: d.get(k) for k in names if k not in given}
    for rest in (r for r in REST if r in cls.__dataclass_fields__):
        kwargs[rest] = {k: v for k, v in d.items() if k not in names}
    return cls(**kwargs, **given)


# measured -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metrics:
    """Test errors (with standard errors), accuracies (classification), PGR and OPR of the four models: one
    trial's (se over test rows), or several trials' (mean and se over trials, `trials` their number)."""

    error: dict[str, float]
    error_stderr: dict[str, float | None]
    pgr: float | None
    pgr_stderr: float | None
    opr: float | None
    opr_stderr: float | None
    n_test: int | None = None  # None: the LP-FT start of a trial (it shares the trial's n_test)
    accuracy: dict[str, float] | None = None
    accuracy_stderr: dict[str, float | None] | None = None
    trials: int | None = None  # set on the metrics of a summary

    def __post_init__(self) -> None:
        _set(self, "error", _per_model("error", self.error, optional_values=True))
        _set(self, "error_stderr", _per_model("error_stderr", self.error_stderr))
        for k in ("pgr", "pgr_stderr", "opr", "opr_stderr"):
            _number(k, getattr(self, k))
        _count("n_test", self.n_test, optional=True, least=1)
        _count("trials", self.trials, optional=True, least=1)
        if (self.accuracy is None) != (self.accuracy_stderr is None):
            raise RecordError("'accuracy' and 'accuracy_stderr' go together")
        if self.accuracy is not None:
            _set(self, "accuracy", _per_model("accuracy", self.accuracy))
            _set(self, "accuracy_stderr", _per_model("accuracy_stderr", self.accuracy_stderr))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Metrics:
        _need(d, "error", "pgr", "opr", where="metrics")
        return _from_json(cls, d, error_stderr=d.get("error_stderr") or dict.fromkeys(MODELS))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": dict(self.error), "error_stderr": dict(self.error_stderr)}
        if self.accuracy is not None:
            out["accuracy"], out["accuracy_stderr"] = dict(self.accuracy), dict(self.accuracy_stderr)
        out.update(pgr=self.pgr, pgr_stderr=self.pgr_stderr, opr=self.opr, opr_stderr=self.opr_stderr)
        if self.n_test is not None:
            out["n_test"] = self.n_test
        if self.trials is not None:
            out["trials"] = self.trials
        return out


# what a fit and a basis record -----------------------------------------------------------------------------
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


# the theory of one trial, and of a summary -----------------------------------------------------------------
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


def _per_model_records(name: str, d: Any, kind: type) -> dict[str, Any]:
    d = _mapping(name, d, optional=False)
    return {k: v if isinstance(v, kind) else kind.from_json(_need(v, where=f"{name}.{k}")) for k, v in d.items()}


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

    def __post_init__(self) -> None:
        _text("decomposition_note", self.decomposition_note)
        if not isinstance(self.dimensions, Dimensions):
            _set(self, "dimensions", Dimensions.from_json(self.dimensions))
        _set(self, "variance", _per_model_records("variance", self.variance, VarianceRow))
        _text("variance_note", self.variance_note)
        if not isinstance(self.predicted, Predicted):
            _set(self, "predicted", Predicted.from_json(self.predicted))
        if any(k not in MODELS for k in self.near_interpolation):
            raise RecordError(f"'near_interpolation' names a model not among {', '.join(MODELS)}")
        _set(self, "near_interpolation", tuple(self.near_interpolation))
        _set(self, "fits", _fits(self.fits))
        _set(self, "sigma2", _per_model("sigma2", self.sigma2, models=SIDES))
        _set(self, "decomposition", _per_model_records("decomposition", self.decomposition, Decomposition))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Analysis:
        keys = ("dimensions", "variance", "predicted", "near_interpolation", "fits", "sigma2", "decomposition")
        return _from_json(cls, _need(d, *keys, where="analysis"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("decomposition_note",))


@dataclass(frozen=True)
class Trial:
    """One split draw: its measured metrics, seed and sizes, the pseudo-labels' accuracy, the theory's
    analysis (ridgeless students), and a finetuned student's metrics at its LP-FT start (epoch 0)."""

    metrics: Metrics
    seed: int | None
    n_labeled: int | None
    n_pseudo: int | None
    pseudo_label_accuracy: float | None = None
    analysis: Analysis | None = None
    init: Metrics | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metrics, Metrics):
            raise RecordError("'metrics' of a trial is not a Metrics record")
        if self.metrics.n_test is None:
            raise RecordError("a trial without 'n_test'")
        _count("seed", self.seed, optional=True)
        _count("n_labeled", self.n_labeled, optional=True, least=1)
        _count("n_pseudo", self.n_pseudo, optional=True, least=1)
        _number("pseudo_label_accuracy", self.pseudo_label_accuracy)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Trial:
        _need(d, "error", "n_test", "pgr", "opr", where="trial")
        analysis, init = d.get("analysis"), d.get("init")
        return _from_json(
            cls,
            d,
            metrics=Metrics.from_json(d),
            analysis=None if analysis is None else Analysis.from_json(analysis),
            init=None if init is None else Metrics.from_json(init),
        )

    def to_json(self) -> dict[str, Any]:
        out = self.metrics.to_json()
        out.update(
            seed=self.seed,
            n_labeled=self.n_labeled,
            n_pseudo=self.n_pseudo,
            pseudo_label_accuracy=self.pseudo_label_accuracy,
        )
        if self.init is not None:
            out["init"] = self.init.to_json()
        out["analysis"] = None if self.analysis is None else self.analysis.to_json()
        return out


# a result artifact's record -------------------------------------------------------------------------------
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class PrecisionRecord:
    """The arithmetic a finetune ran in: the precision its recipe asked for, the one it used (AMP works on a
    CUDA device only: fp32 elsewhere), whether autocast and a gradient scaler (fp16) were on."""

    requested: str
    used: str
    autocast: bool = False
    grad_scaler: bool = False

    def __post_init__(self) -> None:
        for k in ("requested", "used"):
            if getattr(self, k) not in PRECISIONS:
                raise RecordError(f"'precision.{k}' must be one of {', '.join(PRECISIONS)}, not {getattr(self, k)!r}")
        for k in ("autocast", "grad_scaler"):
            if not isinstance(getattr(self, k), bool):
                raise RecordError(f"'precision.{k}' must be true or false, not {getattr(self, k)!r}")

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> PrecisionRecord | None:
        return None if d is None else _from_json(cls, _need(d, "requested", "used", where="precision"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


class TensorsRead(NamedTuple):
    """The file of tensors a finetune's trained part read: `input` 'embeddings' (the strong embeddings,
    `head`) or 'activations' (the frozen prefix's cached outputs, `last:K`); `ref` where it is (a reference:
    the absolute path, the path relative to the result's folder and the file's artifact_id; records of
    older w2s hold only a path, relative to the folder the finetune was launched from); `shape` per row."""

    input: str
    ref: dict[str, Any]
    shape: list[int] | None


@dataclass(frozen=True)
class StudentRecord:
    """A finetuned student: its recipe (and how it reads), the inputs of its trained part, its device and
    the precision it ran in (records of older w2s: None)."""

    kind: str
    recipe: dict[str, Any]
    description: str
    inputs: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    precision: PrecisionRecord | None = None

    def __post_init__(self) -> None:
        _text("student.kind", self.kind, optional=False)
        _mapping("student.recipe", self.recipe, optional=False)
        _text("student.description", self.description, optional=False)
        if self.precision is not None and not isinstance(self.precision, PrecisionRecord):
            raise RecordError("'student.precision' is a precision record")

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> StudentRecord | None:
        if not d:
            return None
        _need(d, "kind", "recipe", "description", where="student")
        precision = PrecisionRecord.from_json(_mapping("student.precision", d.get("precision")))
        return _from_json(cls, d, inputs=d.get("inputs") or {}, precision=precision)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("precision",))

    @property
    def loss(self) -> str | None:
        """The recipe's loss (mse, xent, logconf)."""
        return self.recipe.get("loss")

    @property
    def tensors_read(self) -> TensorsRead | None:
        """What its trained part read when that was a file of tensors (`TensorsRead`); None when it read
        images (or the record predates this entry). Where the file is now: artifact.resolve(ref, result)."""
        kind, path = self.inputs.get("input"), self.inputs.get("path")
        if kind not in ("embeddings", "activations") or not isinstance(path, str):
            return None
        ref = {k: self.inputs[k] for k in ("path", "relpath", "artifact_id") if self.inputs.get(k) is not None}
        return TensorsRead(kind, ref, self.inputs.get("shape"))


REFERENCES = ("pseudolabels", "teacher", "weak_embeddings", "strong_embeddings")  # a result's inputs


def _moved_weights(fit: FitRecord, move: Callable[[dict[str, Any]], dict[str, Any]]) -> FitRecord:
    """A finetuned fit's record with its weights file (`weights`: relative to the result; `weights_path`:
    absolute) passed through `move`."""
    if not isinstance(fit.extra.get("weights"), str):
        return fit
    ref = move({"path": fit.extra.get("weights_path") or fit.extra["weights"], "relpath": fit.extra["weights"]})
    extra = {**fit.extra, "weights": ref["relpath"], "weights_path": ref["path"]}
    if isinstance(fit.extra.get("reused_from"), Mapping):  # the result whose fit it reused (stages/finetune.py)
        extra["reused_from"] = move(fit.extra["reused_from"])
    return dataclasses.replace(fit, extra=extra)


@dataclass(frozen=True)
class ResultRecord:
    """The JSON record of a `result` artifact: the experiment (sizes, backbones, heads, subspaces, label noise,
    the fits), its trials, the seconds each step took; `provenance` keeps the rest as written (what every
    artifact carries: kind, command, versions, seed, ids; and the references to the inputs)."""

    trials: tuple[Trial, ...]
    dataset: dict[str, Any]
    n_labeled: int
    n_pseudo: int
    n_test: int
    task: str | None = None
    weak_model: str | None = None
    weak_input_size: Any = None
    strong_model: str | None = None
    strong_input_size: Any = None
    solver: dict[str, str] | None = None
    labels: str | None = None
    subspace: dict[str, Basis | None] = field(default_factory=dict)  # both sides; None: not recorded
    label_noise: LabelNoiseRecord | None = None
    fits: dict[str, FitRecord] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    student: StudentRecord | None = None
    analysis_note: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.trials or not all(isinstance(t, Trial) for t in self.trials):
            raise RecordError("'trials' is not a non-empty list of trials")
        _set(self, "trials", tuple(self.trials))
        _need(self.dataset, "name", where="dataset")
        for k in ("n_labeled", "n_pseudo", "n_test"):
            _count(k, getattr(self, k), least=1)
        for k in ("task", "weak_model", "strong_model", "labels", "analysis_note"):
            _text(k, getattr(self, k))
        if self.solver is not None:
            _need(self.solver, "teacher", "student", where="solver")
        _set(self, "subspace", _bases(self.subspace))
        if self.fits is not None:
            _set(self, "fits", _fits(self.fits))
        if not isinstance(self.seconds, Mapping):
            raise RecordError("'seconds' is not an object")
        for k, v in self.seconds.items():
            _number(f"seconds.{k}", v, optional=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ResultRecord:
        _need(d, "trials", "dataset", "n_labeled", "n_pseudo", "n_test", where="result")
        if not isinstance(d["trials"], list):
            raise RecordError("'trials' is not a list")
        return _from_json(
            cls,
            d,
            trials=tuple(Trial.from_json(t) for t in d["trials"]),
            label_noise=LabelNoiseRecord.from_json(d.get("label_noise")),
            student=StudentRecord.from_json(d.get("student")),
            seconds=d.get("seconds") or {},
        )

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("student",))

    def rebased(self, move: Callable[[dict[str, Any]], dict[str, Any]]) -> ResultRecord:
        """This record with every reference to a file passed through `move` (artifact.rebase, for a record
        that another artifact takes over: a combined result): its inputs, the tensors a finetune read and its
        fits' weights."""
        provenance = {
            k: move(v) if k in REFERENCES and isinstance(v, Mapping) and "path" in v else v
            for k, v in self.provenance.items()
        }
        student, read = self.student, self.student and self.student.tensors_read
        if read is not None:
            student = dataclasses.replace(student, inputs={**student.inputs, **move(read.ref)})
        fits = None if self.fits is None else {k: _moved_weights(f, move) for k, f in self.fits.items()}
        return dataclasses.replace(self, provenance=provenance, student=student, fits=fits)

    @property
    def input_sizes(self) -> tuple[int | None, int | None]:
        """The weak and strong backbones' input sizes in px (the last of each recorded input shape)."""
        return tuple((size or [None])[-1] for size in (self.weak_input_size, self.strong_input_size))


# what the report says -------------------------------------------------------------------------------------
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
        _set(self, "variance", _per_model_records("variance", self.variance, VarianceRow))
        _set(self, "decomposition", _per_model_records("decomposition", self.decomposition, Decomposition))
        _set(self, "near_interpolation", tuple(self.near_interpolation))
        _set(self, "sigma2", _per_model("sigma2", self.sigma2, models=SIDES))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("decomposition_note",))


@dataclass(frozen=True)
class Summary:
    """A result as `w2s report` shows it and `report --json` prints it (`to_json`): the measured metrics over
    trials, the experiment, and what the theory explains (`theory`, or `analysis_note` saying why not)."""

    metrics: Metrics
    n_labeled: int
    n_pseudo: int
    dataset: str
    task: str | None
    weak_model: str | None
    weak_input_size: int | None
    strong_model: str | None
    strong_input_size: int | None
    solver: dict[str, str] | None
    labels: str | None
    subspace: dict[str, Basis | None] | None
    label_noise: LabelNoiseRecord | None
    fits: dict[str, FitRecord] | None
    seconds: dict[str, float]
    seeds: list[int | None]
    student: StudentRecord | None = None
    init: Metrics | None = None  # a finetuned student's metrics at its LP-FT start (epoch 0)
    pseudo_label_accuracy: float | None = None
    theory: TheorySummary | None = None
    analysis_note: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metrics, Metrics) or self.metrics.trials is None:
            raise RecordError("'metrics' of a summary is a Metrics record with its number of trials")
        if self.theory is None and self.analysis_note is None:
            raise RecordError("a summary without theory says why ('analysis_note')")
        _number("pseudo_label_accuracy", self.pseudo_label_accuracy)

    @property
    def trials(self) -> int:
        return self.metrics.trials

    @property
    def classification(self) -> bool:
        return self.metrics.accuracy is not None

    @property
    def noise_rate(self) -> float:
        return 0.0 if self.label_noise is None else self.label_noise.rate

    def to_json(self) -> dict[str, Any]:
        out = self.metrics.to_json()
        out.update(
            n_labeled=self.n_labeled,
            n_pseudo=self.n_pseudo,
            task=self.task,
            dataset=self.dataset,
            weak_model=self.weak_model,
            weak_input_size=self.weak_input_size,
            strong_model=self.strong_model,
            strong_input_size=self.strong_input_size,
            solver=self.solver,
            labels=self.labels,
            subspace=_json(self.subspace),
            label_noise=_json(self.label_noise),
            fits=_json(self.fits),
            seconds=dict(self.seconds),
            seeds=list(self.seeds),
        )
        if self.student is not None:
            out["student"] = self.student.to_json()
            if self.init is not None:
                out["init"] = self.init.to_json()
        if self.pseudo_label_accuracy is not None:
            out["pseudo_label_accuracy"] = self.pseudo_label_accuracy
        if self.theory is not None:
            out.update(self.theory.to_json())
        else:
            out["analysis_note"] = self.analysis_note
        return out


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: its parameters (as given), its folder key, its combined result and summary."""

    params: dict[str, str]
    key: str
    result: str
    summary: Summary

    def __post_init__(self) -> None:
        if not isinstance(self.summary, Summary):
            raise RecordError("'summary' of a sweep point is a Summary record")
        _mapping("params", self.params, optional=False)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class Sweep:
    """A sweep: the varied parameters, trials per point, the points, the seconds of each extraction, the
    rank correlations of PGR with d_sw/d_w (when backbones vary), the command's configuration."""

    vary: list[str]
    trials: int
    points: tuple[SweepPoint, ...]
    extract_seconds: dict[str, float]
    spearman_pgr_vs_overlap: dict[str, float | None] | None = None
    configuration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _count("trials", self.trials, least=1)
        _set(self, "points", tuple(self.points))
        if not all(isinstance(p, SweepPoint) for p in self.points):
            raise RecordError("'points' of a sweep are SweepPoint records")

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("spearman_pgr_vs_overlap", "configuration"))


# the teacher and its pseudo-labels -------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """The split of the embeddings' rows a teacher drew: seeds and sizes (the pool the N rows came from);
    pseudo-labels add how many of the drawn N rows they label."""

    seed: int
    test_seed: int | None
    n_test: int
    n_labeled: int
    n_pseudo: int
    n_pool: int | None = None
    test_from_dataset_split: bool | None = None
    n_pseudo_drawn: int | None = None

    def __post_init__(self) -> None:
        _count("split.seed", self.seed)
        _count("split.test_seed", self.test_seed, optional=True)
        for k in ("n_test", "n_labeled"):
            _count(f"split.{k}", getattr(self, k), least=1)
        _count("split.n_pseudo", self.n_pseudo)
        _count("split.n_pool", self.n_pool, optional=True)
        _count("split.n_pseudo_drawn", self.n_pseudo_drawn, optional=True)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Split:
        return _from_json(cls, _need(d, "seed", "n_test", "n_labeled", "n_pseudo", where="split"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("n_pseudo_drawn",))


@dataclass(frozen=True)
class TeacherRecord:
    """The JSON record of a `teacher` artifact: its embeddings (a reference), the split, the label noise, the
    head (solver, link, fit) in its basis, and what it measured (sigma^2, leave-one-out and test error);
    `provenance` keeps what every artifact carries, as written."""

    embeddings: dict[str, Any]
    dataset: dict[str, Any]
    sample_ids_sha256: str
    task: str | None
    solver: str
    link: str
    subspace: Basis
    split: Split
    label_noise: LabelNoiseRecord
    fit: FitRecord
    sigma2: float | None
    loo_error: float | None
    test_error: float | None
    test_accuracy: float | None
    seconds: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _need(self.embeddings, "path", where="embeddings")
        _need(self.dataset, "name", "fingerprint", where="dataset")
        _text("sample_ids_sha256", self.sample_ids_sha256, optional=False)
        _text("task", self.task)
        _text("solver", self.solver, optional=False)
        if self.link not in ("identity", "softmax"):
            raise RecordError(f"'link' is {self.link!r}, not identity or softmax")
        for name, kind in (
            ("subspace", Basis),
            ("split", Split),
            ("label_noise", LabelNoiseRecord),
            ("fit", FitRecord),
        ):
            if not isinstance(getattr(self, name), kind):
                raise RecordError(f"'{name}' of a teacher is a {kind.__name__} record")
        for k in ("sigma2", "loo_error", "test_error", "test_accuracy", "seconds"):
            _number(k, getattr(self, k), optional=k != "seconds")

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TeacherRecord:
        _need(d, "embeddings", "dataset", "sample_ids_sha256", "solver", "link", "subspace", "split", where="teacher")
        _need(d, "label_noise", "fit", "seconds", where="teacher")
        return _from_json(
            cls,
            d,
            subspace=Basis.from_json(d["subspace"]),
            split=Split.from_json(d["split"]),
            label_noise=LabelNoiseRecord.from_json(d["label_noise"]),
            fit=FitRecord.from_json(d["fit"]),
        )

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class TeacherReference:
    """How pseudo-labels (and the results made from them) record their teacher: where it is, its id, and
    its head (solver, basis, fit)."""

    path: str
    relpath: str | None
    artifact_id: str
    solver: str
    subspace: Basis
    fit: FitRecord

    def __post_init__(self) -> None:
        _text("teacher.path", self.path, optional=False)
        _text("teacher.artifact_id", self.artifact_id, optional=False)
        _text("teacher.solver", self.solver, optional=False)
        if not isinstance(self.subspace, Basis) or not isinstance(self.fit, FitRecord):
            raise RecordError("'teacher.subspace' and 'teacher.fit' are records")

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TeacherReference:
        _need(d, "path", "artifact_id", "solver", "subspace", "fit", where="teacher")
        return _from_json(cls, d, subspace=Basis.from_json(d["subspace"]), fit=FitRecord.from_json(d["fit"]))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class PseudoLabelsRecord:
    """The JSON record of a `pseudolabels` artifact: its teacher (a reference with the teacher's head), the
    weak embeddings (a reference), the split with the N rows labelled, the label noise, hard or soft labels,
    their accuracy, the teacher's sigma^2 and leave-one-out error, the seconds of both steps."""

    teacher: TeacherReference
    embeddings: dict[str, Any]
    dataset: dict[str, Any]
    sample_ids_sha256: str
    task: str | None
    split: Split
    label_noise: LabelNoiseRecord
    labels: str
    pseudo_label_accuracy: float | None
    teacher_sigma2: float | None
    teacher_loo_error: float | None
    seconds: dict[str, float]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in (("teacher", TeacherReference), ("split", Split), ("label_noise", LabelNoiseRecord)):
            if not isinstance(getattr(self, name), kind):
                raise RecordError(f"'{name}' of pseudo-labels is a {kind.__name__} record")
        _need(self.embeddings, "path", where="embeddings")
        _need(self.dataset, "name", "fingerprint", where="dataset")
        if self.labels not in ("hard", "soft"):
            raise RecordError(f"'labels' is {self.labels!r}, not hard or soft")
        for k in ("pseudo_label_accuracy", "teacher_sigma2", "teacher_loo_error"):
            _number(k, getattr(self, k))
        for k, v in _mapping("seconds", self.seconds, optional=False).items():
            _number(f"seconds.{k}", v, optional=False)

    @property
    def seed(self) -> int:
        """The seed of the split (the trial's seed)."""
        return self.split.seed

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PseudoLabelsRecord:
        _need(d, "teacher", "embeddings", "dataset", "sample_ids_sha256", "split", "label_noise", where="pseudolabels")
        _need(d, "labels", "seconds", where="pseudolabels")
        return _from_json(
            cls,
            d,
            teacher=TeacherReference.from_json(d["teacher"]),
            split=Split.from_json(d["split"]),
            label_noise=LabelNoiseRecord.from_json(d["label_noise"]),
        )

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


def read_record(art: Any, kind: type) -> Any:
    """The typed record of a loaded artifact (`kind`: TeacherRecord, PseudoLabelsRecord, ResultRecord); one
    that does not fit is one W2SError naming the file and the field."""
    from w2s_cli.errors import W2SError, printable

    try:
        return kind.from_json(art.meta)
    except RecordError as exc:
        raise W2SError(f"{art.kind} {printable(art.path)}: corrupt w2s record: {exc}") from None


# embeddings ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbeddingsRecord:
    """The JSON record of an `embeddings` artifact as the stages read it (schema 1 to 3 alike): the model
    (name, weights hash, width), the preprocessing (input size), the dataset (name, fingerprint, task,
    classes), the samples (count, hash, the --limit drawn), what was asked for (`request`, for reuse) and
    where the images were (`data`); gradient features say what they are (`features`). `provenance` keeps
    the rest (the extraction's settings and timings) as written; extraction/extract.py writes it."""

    model: dict[str, Any]
    preprocessing: dict[str, Any]
    dataset: dict[str, Any]
    sample_ids_sha256: str
    n_samples: int | None = None
    limit: int | None = None
    request: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    features: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _need(self.model, "name", "weights", where="model")
        _need(self.model["weights"], "state_dict_sha256", where="model.weights")
        _need(self.preprocessing, "input_size", where="preprocessing")
        _need(self.dataset, "name", "fingerprint", where="dataset")
        _text("sample_ids_sha256", self.sample_ids_sha256, optional=False)
        _count("n_samples", self.n_samples, optional=True)
        _count("limit", self.limit, optional=True, least=1)
        for k in ("request", "data", "features"):
            _mapping(k, getattr(self, k))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EmbeddingsRecord:
        return _from_json(cls, _need(d, "model", "preprocessing", "dataset", "sample_ids_sha256", where="embeddings"))

    def to_json(self) -> dict[str, Any]:
        """Every field but `limit` only when set (the others that may be unset: n_samples, request, data,
        features)."""
        return _to_json(self, omit_none=("n_samples", "request", "data", "features"))

    @property
    def feature_kind(self) -> str:
        """What the rows are: embeddings, activations (a frozen prefix's outputs) or grad (gradient features)."""
        return (self.features or {}).get("kind", "embeddings")

    @property
    def feature_shape(self) -> list[int] | None:
        """The shape of one row's features before flattening (activations), if recorded."""
        return (self.features or {}).get("shape")

    @property
    def grad_start(self) -> tuple[str | None, str | None]:
        """Gradient features: the finetune start they were made at, (its result's artifact_id, the fit); else
        (None, None)."""
        init = ((self.features or {}).get("init") or {}) if self.feature_kind == "grad" else {}
        return init.get("artifact_id"), init.get("fit")

    @property
    def grad_epoch(self) -> str | int:
        """Gradient features made with --init: the point of that finetune (start, an epoch, final)."""
        init = ((self.features or {}).get("init") or {}) if self.feature_kind == "grad" else {}
        return init.get("epoch") or "start"

    @property
    def task(self) -> str:
        """classification or regression (records from before regression datasets: classification)."""
        return self.dataset["task"] if "task" in self.dataset else "classification"

    @property
    def classes(self) -> list[str] | None:
        return self.dataset["classes"] if "classes" in self.dataset else None

    @property
    def signature(self) -> dict[str, Any]:
        """What identifies an embedding set: the weights, the input size, the dataset and its samples."""
        return {
            "model": self.model["name"],
            "state_dict_sha256": self.model["weights"]["state_dict_sha256"],
            "input_size": self.preprocessing["input_size"],
            "dataset_fingerprint": self.dataset["fingerprint"],
            "sample_ids_sha256": self.sample_ids_sha256,
        }

    def same_samples_and_weights(self, other: EmbeddingsRecord) -> bool:
        """The same samples through the same weights at the same input size (another feature kind allowed)."""
        keys = ("sample_ids_sha256", "state_dict_sha256", "input_size")
        return all(self.signature[k] == other.signature[k] for k in keys)
