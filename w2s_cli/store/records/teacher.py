"""The JSON records of a `teacher` artifact (`TeacherRecord`: the split it drew, its head, what it measured)
and of a `pseudolabels` artifact (`PseudoLabelsRecord`, with a `TeacherReference`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from w2s_cli.store.records.base import (
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
)
from w2s_cli.store.records.fits import Basis, FitRecord, LabelNoiseRecord


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

    kind = "teacher"

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
        keys = ("embeddings", "dataset", "sample_ids_sha256", "split", "solver", "subspace", "link", "label_noise")
        _artifact(d, cls.kind, *keys, "fit", "seconds")
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
class TeacherMember:
    """One teacher of a combination: its reference, its weak embeddings (a reference) and backbone, and what
    train-weak measured of it on the shared test rows; `share`: the fraction of the N rows it labelled (a
    per-sample rule; None for the others)."""

    teacher: TeacherReference
    embeddings: dict[str, Any]
    model: str
    input_size: int | None
    test_error: float | None
    test_accuracy: float | None
    loo_error: float | None
    sigma2: float | None
    share: float | None = None

    def __post_init__(self) -> None:
        _set(self, "teacher", _typed("member.teacher", self.teacher, TeacherReference))
        _need(self.embeddings, "path", where="member.embeddings")
        _text("member.model", self.model, optional=False)
        for k in ("test_error", "test_accuracy", "loo_error", "sigma2", "share"):
            _number(f"member.{k}", getattr(self, k))

    @property
    def label(self) -> str:
        """MODEL@PX, as the command line names a backbone."""
        return self.model if self.input_size is None else f"{self.model}@{self.input_size}"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TeacherMember:
        _need(d, "teacher", "embeddings", "model", where="member")
        return _from_json(cls, d)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


COMBINE_RULES = ("mean", "stack", "confident")


@dataclass(frozen=True)
class Combination:
    """How pseudo-labels combine several teachers trained on the same split: the rule (mean of outputs,
    stack: simplex weights fitted on the members' leave-one-out outputs of the n labels, confident: each row
    from the member with the largest margin), the members, their weights (mean, stack) and the leave-one-out
    error of the combination on the n labels."""

    rule: str
    members: tuple[TeacherMember, ...]
    weights: tuple[float, ...] | None
    loo_error: float | None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.rule not in COMBINE_RULES:
            raise RecordError(f"'combination.rule' is {self.rule!r}, not one of {', '.join(COMBINE_RULES)}")
        members = tuple(_typed("combination.member", m, TeacherMember) for m in self.members)
        if not members:
            raise RecordError("'combination.members' is empty")
        _set(self, "members", members)
        if self.weights is not None:
            weights = tuple(float(_number("combination.weights", w, optional=False)) for w in self.weights)
            if len(weights) != len(members):
                raise RecordError(f"'combination.weights' has {len(weights)} values for {len(members)} members")
            _set(self, "weights", weights)
        _number("combination.loo_error", self.loo_error)
        _text("combination.note", self.note)

    @property
    def label(self) -> str:
        """rule(MODEL@PX+MODEL@PX...), the combined teacher's name in tables."""
        return f"{self.rule}({'+'.join(m.label for m in self.members)})"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Combination:
        _need(d, "rule", "members", where="combination")
        return _from_json(cls, d)

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
    # several teachers combined (`teacher` and `embeddings` are then its first member's); None: one teacher
    combination: Combination | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    kind = "pseudolabels"

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
        _set(self, "combination", _typed("combination", self.combination, Combination, optional=True))

    @property
    def seed(self) -> int:
        """The seed of the split (the trial's seed)."""
        return self.split.seed

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PseudoLabelsRecord:
        keys = ("teacher", "embeddings", "dataset", "sample_ids_sha256", "split", "label_noise", "labels", "seconds")
        _artifact(d, cls.kind, *keys)
        return _from_json(
            cls,
            d,
            teacher=TeacherReference.from_json(d["teacher"]),
            split=Split.from_json(d["split"]),
            label_noise=LabelNoiseRecord.from_json(d["label_noise"]),
        )

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("combination",))
