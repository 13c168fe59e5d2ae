"""The JSON record of a `result` artifact (`ResultRecord`): one trial, or several combined; each `Trial` holds
its measured `Metrics` and, for a ridgeless student, its `Analysis`; a finetuned student its `StudentRecord`.

Schema 3 writes the layout of schema 2 (the records only made it checked), so files of schema 2 are read as
they are; an older result is refused by the artifact reader with the version that wrote it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from w2s_cli.numerics.stats import MODELS
from w2s_cli.store.records.base import (
    RecordError,
    _artifact,
    _count,
    _from_json,
    _mapping,
    _need,
    _number,
    _per_model,
    _set,
    _text,
    _to_json,
)
from w2s_cli.store.records.fits import Basis, FitRecord, LabelNoiseRecord, _bases, _fits
from w2s_cli.store.records.theory import Analysis, Predicted


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


@dataclass(frozen=True)
class MemberError:
    """One teacher of a combination, measured on the trial's test rows (or, in a summary, the mean and
    standard error over trials): its test error and accuracy, each with its standard error."""

    label: str
    error: float
    error_stderr: float | None
    accuracy: float | None = None
    accuracy_stderr: float | None = None

    def __post_init__(self) -> None:
        _text("label", self.label, optional=False)
        for k in ("error", "error_stderr", "accuracy", "accuracy_stderr"):
            _number(k, getattr(self, k), optional=k != "error")

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MemberError:
        return _from_json(cls, _need(d, "label", "error", where="member"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


def members_of(v: Any) -> tuple[MemberError, ...] | None:
    """A combination's members' errors, given as records or as their JSON (None: one teacher)."""
    if v is None:
        return None
    return tuple(m if isinstance(m, MemberError) else MemberError.from_json(m) for m in v)


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
    # a finetuned student's label-light predictions, from the kernel its W2S finetune ends in, and where from
    predicted: Predicted | None = None
    after_kernel: dict[str, Any] | None = None
    members: tuple[MemberError, ...] | None = None  # combined teachers: each member's test error

    def __post_init__(self) -> None:
        _set(self, "members", members_of(self.members))
        if not isinstance(self.metrics, Metrics):
            raise RecordError("'metrics' of a trial is not a Metrics record")
        if self.predicted is not None and not isinstance(self.predicted, Predicted):
            raise RecordError("'predicted' of a trial is not a Predicted record")
        if self.metrics.n_test is None:
            raise RecordError("a trial without 'n_test'")
        _count("seed", self.seed, optional=True)
        _count("n_labeled", self.n_labeled, optional=True, least=1)
        _count("n_pseudo", self.n_pseudo, optional=True, least=1)
        _number("pseudo_label_accuracy", self.pseudo_label_accuracy)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Trial:
        _need(d, "error", "n_test", "pgr", "opr", where="trial")
        analysis, init, predicted = d.get("analysis"), d.get("init"), d.get("predicted")
        return _from_json(
            cls,
            d,
            metrics=Metrics.from_json(d),
            analysis=None if analysis is None else Analysis.from_json(analysis),
            init=None if init is None else Metrics.from_json(init),
            predicted=None if predicted is None else Predicted.from_json(predicted),
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
        if self.predicted is not None:
            out.update(predicted=self.predicted.to_json(), after_kernel=self.after_kernel)
        if self.members is not None:
            out["members"] = [m.to_json() for m in self.members]
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

    kind = "result"

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
        _artifact(d, cls.kind, "trials", "dataset", "n_labeled", "n_pseudo", "n_test")
        if not isinstance(d["trials"], list):
            raise RecordError("'trials' is not a list")
        if not d["trials"]:
            raise RecordError("a 'result' artifact with no trials")
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
