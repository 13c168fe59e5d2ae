"""What `w2s report` shows and `report --json` prints (`Summary`: the trials averaged, the theory beside
them); a `SweepPoint` is one point of a sweep and `Sweep` the whole sweep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from w2s_cli.store.records.base import (
    RecordError,
    _count,
    _json,
    _mapping,
    _number,
    _set,
    _to_json,
)
from w2s_cli.store.records.fits import Basis, FitRecord, LabelNoiseRecord
from w2s_cli.store.records.result import MemberError, Metrics, StudentRecord, members_of
from w2s_cli.store.records.theory import Predicted, SeveralTeachers, TheorySummary


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
    predicted: Predicted | None = None  # finetuned students: the label-light predictions of their trials
    members: tuple[MemberError, ...] | None = None  # combined teachers: each member's test error over trials
    teachers: SeveralTeachers | None = None  # combined teachers: their dimensions and overlaps, mean over trials

    def __post_init__(self) -> None:
        if not isinstance(self.metrics, Metrics) or self.metrics.trials is None:
            raise RecordError("'metrics' of a summary is a Metrics record with its number of trials")
        if self.theory is None and self.analysis_note is None:
            raise RecordError("a summary without theory says why ('analysis_note')")
        _number("pseudo_label_accuracy", self.pseudo_label_accuracy)
        _set(self, "members", members_of(self.members))

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
        if self.members is not None:
            out["members"] = [m.to_json() for m in self.members]
        if self.teachers is not None:
            out["teachers"] = self.teachers.to_json()
        if self.theory is not None:
            out.update(self.theory.to_json())
        else:
            out["analysis_note"] = self.analysis_note
            if self.predicted is not None:  # a finetuned student's, from the kernel its W2S finetune ends in
                out["predicted"] = self.predicted.to_json()
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
