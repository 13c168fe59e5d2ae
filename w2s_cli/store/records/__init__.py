"""Typed records: one frozen dataclass per artifact kind and per result, checked when built, written to and
read from JSON here and nowhere else (`to_json()`; `from_json()` refuses a record that does not fit with one
`RecordError` naming the field). One module per kind of thing recorded; every public name is here."""

from w2s_cli.store.records.base import NOT_JSON, REST, SIDES, RecordError, read_record
from w2s_cli.store.records.diagnostics import (
    IntrinsicDim,
    IntrinsicDimRecord,
    KernelCheck,
    KernelFit,
    Linearised,
    Measured,
    SpectralDimensions,
)
from w2s_cli.store.records.embeddings import STAGE, EmbeddingsRecord, model_label
from w2s_cli.store.records.fits import Basis, FitRecord, LabelNoiseRecord
from w2s_cli.store.records.result import (
    PRECISIONS,
    REFERENCES,
    MemberError,
    Metrics,
    PrecisionRecord,
    ResultRecord,
    StudentRecord,
    TensorsRead,
    Trial,
)
from w2s_cli.store.records.studies import (
    BackboneCost,
    CostEstimate,
    NearTie,
    Proxy,
    RankedTeacher,
    Ranking,
    RankingCost,
    W2SErrors,
)
from w2s_cli.store.records.summary import Summary, Sweep, SweepPoint
from w2s_cli.store.records.teacher import (
    COMBINE_RULES,
    Combination,
    PseudoLabelsRecord,
    Split,
    TeacherMember,
    TeacherRecord,
    TeacherReference,
)
from w2s_cli.store.records.theory import (
    Analysis,
    Decomposition,
    Dimensions,
    MemberTheory,
    Predicted,
    SeveralTeachers,
    TeacherPair,
    TheorySummary,
    VarianceOnly,
    VarianceRow,
)

# the record of each artifact kind: what store/artifact.py builds (and so checks) for every artifact it reads
ARTIFACTS = {
    cls.kind: cls for cls in (EmbeddingsRecord, TeacherRecord, PseudoLabelsRecord, ResultRecord, IntrinsicDimRecord)
}

__all__ = [
    "ARTIFACTS",
    "NOT_JSON",
    "PRECISIONS",
    "REFERENCES",
    "REST",
    "SIDES",
    "STAGE",
    "Analysis",
    "BackboneCost",
    "Basis",
    "CostEstimate",
    "Decomposition",
    "Dimensions",
    "EmbeddingsRecord",
    "FitRecord",
    "IntrinsicDim",
    "IntrinsicDimRecord",
    "KernelCheck",
    "KernelFit",
    "LabelNoiseRecord",
    "Linearised",
    "Measured",
    "Metrics",
    "model_label",
    "NearTie",
    "PrecisionRecord",
    "Predicted",
    "Proxy",
    "PseudoLabelsRecord",
    "RankedTeacher",
    "Ranking",
    "RankingCost",
    "read_record",
    "RecordError",
    "ResultRecord",
    "SpectralDimensions",
    "Split",
    "StudentRecord",
    "Summary",
    "Sweep",
    "SweepPoint",
    "TeacherRecord",
    "TeacherReference",
    "TeacherMember",
    "MemberError",
    "MemberTheory",
    "SeveralTeachers",
    "TeacherPair",
    "Combination",
    "COMBINE_RULES",
    "TensorsRead",
    "TheorySummary",
    "Trial",
    "VarianceOnly",
    "VarianceRow",
    "W2SErrors",
]
