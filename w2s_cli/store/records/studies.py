"""The records of the studies: `Ranking` (`w2s rank-teachers`: weak teachers ranked by their predicted W2S
error, measured beside it with --measure; with --student finetune, its proxy finetunes and their cost) and
`CostEstimate` (what `--dry-run` of run, sweep, rank-teachers and finetune says: the work, the disk, the time
here). `to_json()` is what `--json` prints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from w2s_cli.store.records.base import (
    RecordError,
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


# rank-teachers --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class W2SErrors:
    """A teacher's W2S student error (with its standard error), its own error, PGR and OPR: predicted from n
    labels (label-light), or measured on the test rows of its whole pipeline."""

    error_w2s: float | None
    error_w2s_stderr: float | None
    error_weak: float | None
    pgr: float | None
    opr: float | None

    def __post_init__(self) -> None:
        for k in ("error_w2s", "error_w2s_stderr", "error_weak", "pgr", "opr"):
            _number(k, getattr(self, k))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> W2SErrors:
        return _from_json(cls, _need(d, "error_w2s", "pgr", "opr", where="errors"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class RankedTeacher:
    """One candidate weak teacher (MODEL@PX): d_w, d_s, d_sw averaged over the split draws (finetuned: d_s is
    the after-kernel's), its predictions, and (--measure) what its pipeline measured; finetuned: the seconds
    its proxies took when they were made (teacher, pseudo-labels, short W2S finetune, predictions)."""

    weak: str
    d_w: float
    d_s: float
    d_sw: float
    predicted: W2SErrors
    measured: W2SErrors | None = None
    proxy_seconds: float | None = None

    def __post_init__(self) -> None:
        _text("weak", self.weak, optional=False)
        for k in ("d_w", "d_s", "d_sw"):
            _number(k, getattr(self, k), optional=False)
        _set(self, "predicted", _typed("predicted", self.predicted, W2SErrors))
        _set(self, "measured", _typed("measured", self.measured, W2SErrors, optional=True))
        _number("proxy_seconds", self.proxy_seconds)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RankedTeacher:
        return _from_json(cls, _need(d, "weak", "d_w", "d_s", "d_sw", "predicted", where="teacher"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("measured", "proxy_seconds"))


@dataclass(frozen=True)
class Proxy:
    """How `rank-teachers --student finetune` predicts: per teacher and split draw, a short W2S finetune (the
    recipe's first `epochs` epochs), then the label-light predictions in its after-kernel (`kernel`); what it
    ranks by and why (`note`)."""

    recipe: dict[str, Any]
    epochs: int
    kernel: str
    note: str

    def __post_init__(self) -> None:
        _mapping("recipe", self.recipe, optional=False)
        _count("proxy.epochs", self.epochs, least=1)
        _text("proxy.kernel", self.kernel, optional=False)
        _text("proxy.note", self.note, optional=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Proxy:
        return _from_json(cls, _need(d, "recipe", "epochs", "kernel", "note", where="proxy"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class RankingCost:
    """What a finetuned ranking cost beside finetuning a student per teacher in full. `seconds`: its proxies'
    wall time as measured when each was made (a rerun that reuses them reports the same); `wall_seconds`: this
    command's ranking (proxies reused cost nothing; --measure and extraction not counted); `reused`: proxies
    reused; `full_estimated_seconds`: studies/finetune_cost.py's estimate of finetuning every teacher's student
    in full (per split draw a W2S fit per teacher, strong SFT and the ceiling once: the fit cache shares them);
    `ratio`: seconds / full_estimated_seconds. With --measure, the seconds those finetunes took as their results
    recorded them (`full_measured_seconds`) and seconds / that (`measured_ratio`); else None."""

    seconds: float
    wall_seconds: float
    reused: int
    full_estimated_seconds: float
    ratio: float | None
    full_measured_seconds: float | None = None
    measured_ratio: float | None = None

    def __post_init__(self) -> None:
        for k in ("seconds", "wall_seconds", "full_estimated_seconds"):
            _number(f"cost.{k}", getattr(self, k), optional=False)
        _count("cost.reused", self.reused)
        for k in ("ratio", "full_measured_seconds", "measured_ratio"):
            _number(f"cost.{k}", getattr(self, k))

    @classmethod
    def of(
        cls,
        seconds: float,
        wall_seconds: float,
        reused: int,
        full_estimated_seconds: float,
        full_measured_seconds: float | None = None,
    ) -> RankingCost:
        """The cost with its ratios (None where the other side is 0 or not measured: nothing to compare with)."""

        def ratio(full: float | None) -> float | None:
            return seconds / full if full else None

        estimated, measured = full_estimated_seconds, full_measured_seconds
        return cls(seconds, wall_seconds, reused, estimated, ratio(estimated), measured, ratio(measured))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RankingCost:
        keys = ("seconds", "wall_seconds", "reused", "full_estimated_seconds", "ratio")
        return _from_json(cls, _need(d, *keys, where="cost"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class NearTie:
    """Neighbours in the ranking whose predicted W2S errors differ by less than two paired standard errors."""

    teachers: tuple[str, str]
    difference: float
    stderr: float

    def __post_init__(self) -> None:
        _set(self, "teachers", tuple(self.teachers))
        if len(self.teachers) != 2 or not all(isinstance(t, str) for t in self.teachers):
            raise RecordError(f"'near_ties.teachers' is {self.teachers!r}, not two teachers")
        _number("difference", self.difference, optional=False)
        _number("stderr", self.stderr, optional=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NearTie:
        return _from_json(cls, _need(d, "teachers", "difference", "stderr", where="near_ties"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class Ranking:
    """`w2s rank-teachers`: the strong model, n, N, the split draws (trials), the teachers lowest predicted W2S
    error first, the near-ties; measured (every teacher's pipeline trained): Spearman's rank correlation of
    predicted and measured W2S error and the largest relative miss; the command's configuration. Finetuned
    students (--student finetune): how the proxies predict (`proxy`) and what they cost (`cost`); both None
    for linear students, whose layout they leave as it was."""

    strong: str
    n_labeled: int
    n_pseudo: int
    trials: int
    teachers: tuple[RankedTeacher, ...]
    near_ties: tuple[NearTie, ...]
    spearman: float | None = None
    max_relative_error: float | None = None
    configuration: dict[str, Any] | None = None
    proxy: Proxy | None = None
    cost: RankingCost | None = None

    def __post_init__(self) -> None:
        _text("strong", self.strong, optional=False)
        for k in ("n_labeled", "n_pseudo", "trials"):
            _count(k, getattr(self, k), least=1)
        _set(self, "teachers", tuple(_typed("teachers", t, RankedTeacher) for t in self.teachers))
        _set(self, "near_ties", tuple(_typed("near_ties", t, NearTie) for t in self.near_ties))
        if len({t.measured is None for t in self.teachers}) > 1:
            raise RecordError("'teachers' are measured all or none")
        _number("spearman", self.spearman)
        _number("max_relative_error", self.max_relative_error)
        _mapping("configuration", self.configuration)
        _set(self, "proxy", _typed("proxy", self.proxy, Proxy, optional=True))
        _set(self, "cost", _typed("cost", self.cost, RankingCost, optional=True))
        if (self.proxy is None) != (self.cost is None):
            raise RecordError("'proxy' and 'cost' go together (a finetuned ranking has both)")

    @property
    def measured(self) -> bool:
        return bool(self.teachers) and self.teachers[0].measured is not None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Ranking:
        keys = ("strong", "n_labeled", "n_pseudo", "trials", "teachers", "near_ties")
        return _from_json(cls, _need(d, *keys, where="ranking"))

    def to_json(self) -> dict[str, Any]:
        """Spearman's correlation and the largest miss when measured (each may be null: undefined)."""
        quality = () if self.measured else ("spearman", "max_relative_error")
        omit = ("configuration", "proxy", "cost")
        return {k: v for k, v in _to_json(self, omit_none=omit).items() if k not in quality}


# --dry-run ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackboneCost:
    """One backbone's share of the work: images to embed (0 when cached) and what calibration measured."""

    label: str
    images: int
    cached: bool
    width: int
    seconds_per_image: float
    path: str | None = None  # the embeddings found (cached)

    def __post_init__(self) -> None:
        _text("label", self.label, optional=False)
        _count("images", self.images)
        if not isinstance(self.cached, bool):
            raise RecordError(f"'cached' must be true or false, not {self.cached!r}")
        _count("width", self.width, least=1)
        _number("seconds_per_image", self.seconds_per_image, optional=False)
        _text("path", self.path)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BackboneCost:
        return _from_json(cls, _need(d, "label", "images", "cached", "width", "seconds_per_image", where="backbone"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


_COUNTS = (
    "rows",
    "trials",
    "predictions",
    "prefix_images",
    "finetune_epochs",
    "finetune_step_rows",
    "finetune_forward_rows",
    "jobs",
    "disk_bytes",
)


@dataclass(frozen=True)
class CostEstimate:
    """`--dry-run`: the backbones to embed (or found cached), the rows, the trials to fit and label-light
    predictions to make, the finetuning (prefix images to cache, fit-epochs, rows through forward and
    backward and through forward alone), the jobs to submit, the disk, and the seconds of each part here and
    in all (parts spread over local workers count once per worker). `rank-teachers --student finetune`: the
    estimated seconds of finetuning a student per teacher in full instead (`full_finetune_seconds`), beside
    its proxies' (`seconds["proxies"]`)."""

    backbones: tuple[BackboneCost, ...]
    rows: int
    trials: int
    predictions: int
    prefix_images: int
    finetune_epochs: int
    finetune_step_rows: int
    finetune_forward_rows: int
    jobs: int
    disk_bytes: int
    seconds: dict[str, float]
    total_seconds: float
    full_finetune_seconds: float | None = None

    def __post_init__(self) -> None:
        _set(self, "backbones", tuple(_typed("backbones", b, BackboneCost) for b in self.backbones))
        for k in _COUNTS:
            _count(k, getattr(self, k))
        for k, v in _mapping("seconds", self.seconds, optional=False).items():
            _number(f"seconds.{k}", v, optional=False)
        _number("total_seconds", self.total_seconds, optional=False)
        _number("full_finetune_seconds", self.full_finetune_seconds)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CostEstimate:
        return _from_json(cls, _need(d, "backbones", *_COUNTS, "seconds", "total_seconds", where="estimate"))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, omit_none=("full_finetune_seconds",))
