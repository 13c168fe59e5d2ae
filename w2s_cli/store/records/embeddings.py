"""The JSON record of an `embeddings` artifact (`EmbeddingsRecord`): what identifies the embeddings (model
weights, input size, dataset, samples), and what the rows are (embeddings, activations, gradient features)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from w2s_cli.store.records.base import (
    _artifact,
    _count,
    _from_json,
    _mapping,
    _need,
    _text,
    _to_json,
)

STAGE = ":stage"  # a model cut after stage K is named NAME:stageK (options.BackboneSpec, results, reports)


def model_label(name: str, stage: int | None) -> str:
    """A model's name as results show it: 'NAME', or 'NAME:stageK' when cut after stage K."""
    return name if stage is None else f"{name}{STAGE}{stage}"


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

    kind = "embeddings"

    def __post_init__(self) -> None:
        _need(self.model, "name", "weights", where="model")
        _need(self.model["weights"], "state_dict_sha256", where="model.weights")
        _need(self.preprocessing, "input_size", where="preprocessing")
        _need(self.dataset, "name", "fingerprint", where="dataset")
        _text("sample_ids_sha256", self.sample_ids_sha256, optional=False)
        _count("n_samples", self.n_samples, optional=True)
        _count("limit", self.limit, optional=True, least=1)
        _count("model.stage", self.model.get("stage"), optional=True)
        for k in ("request", "data", "features"):
            _mapping(k, getattr(self, k))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EmbeddingsRecord:
        return _from_json(cls, _artifact(d, cls.kind, "model", "preprocessing", "dataset", "sample_ids_sha256"))

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
    def stage(self) -> int | None:
        """The stage the model was cut after (timm's feature_info index); None: the whole model."""
        return self.model.get("stage")

    @property
    def signature(self) -> dict[str, Any]:
        """What identifies an embedding set: the weights, the stage a model was cut after (only then, so a
        whole model's signature is as before), the input size, the dataset and its samples."""
        cut = {} if self.stage is None else {"stage": self.stage}
        return {
            "model": self.model["name"],
            **cut,
            "state_dict_sha256": self.model["weights"]["state_dict_sha256"],
            "input_size": self.preprocessing["input_size"],
            "dataset_fingerprint": self.dataset["fingerprint"],
            "sample_ids_sha256": self.sample_ids_sha256,
        }

    def same_samples_and_weights(self, other: EmbeddingsRecord) -> bool:
        """The same samples through the same weights at the same input size (another feature kind allowed)."""
        keys = ("sample_ids_sha256", "state_dict_sha256", "input_size")
        return all(self.signature[k] == other.signature[k] for k in keys)
