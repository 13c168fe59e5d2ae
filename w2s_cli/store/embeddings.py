"""An `embeddings` artifact as the stages read it: rows on demand (checked finite), labels or targets,
the dataset's split, and the signature that says which embeddings these are."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli.errors import W2SError, printable
from w2s_cli.numerics.stats import as_targets
from w2s_cli.store import artifact as store
from w2s_cli.store.records import EmbeddingsRecord


class EmbeddingSet:
    def __init__(self, path: str | os.PathLike, role: str = "embeddings") -> None:
        self.path, self.role = Path(path), role
        self.art = store.load(path, "embeddings", what=role)
        self.meta = self.art.meta
        where = f"{role} {printable(self.path)}"
        self.record: EmbeddingsRecord = self.art.record  # checked as it was read (store/artifact.py)
        try:
            shape = self.art.shape("embeddings")
            ids = self.art["sample_ids"]
        except W2SError as exc:
            raise W2SError(f"{role} {exc.message}") from None
        if len(shape) != 2 or shape[0] != len(ids) or shape[0] == 0:
            raise W2SError(f"{where}: malformed embeddings (shape {tuple(shape)}, {len(ids)} sample ids)")
        self.n_rows, self.width = int(shape[0]), int(shape[1])
        self.task = self.record.task
        self.labels: np.ndarray | None = None
        self.targets: np.ndarray | None = None
        if self.art.has("labels"):
            self.labels = np.asarray(self.art["labels"], np.int64)
            classes = self.record.classes
            self.n_classes = len(classes) if classes else int(self.labels.max()) + 1
            if len(self.labels) != self.n_rows or self.labels.min() < 0 or self.labels.max() >= self.n_classes:
                raise W2SError(f"{where}: labels do not match the rows or the {self.n_classes} classes")
        elif self.art.has("targets"):
            self.targets = np.asarray(self.art["targets"], np.float64)
            self.n_classes = None
            if len(self.targets) != self.n_rows:
                raise W2SError(f"{where}: targets are not one number per row")
        else:
            raise W2SError(f"{where}: neither labels nor targets (not made by w2s extract)")
        self.split = np.asarray(self.art["split"]) if self.art.has("split") else None

    @property
    def n_outputs(self) -> int:
        return self.n_classes or 1

    def truth(self, rows: np.ndarray) -> np.ndarray:
        """(len, C) float64: one-hot labels (classification) or the targets as one column (regression)."""
        return as_targets(self.values()[rows], self.n_classes)

    def values(self) -> np.ndarray:
        """Labels (int64) or targets (float64) of every row."""
        return self.labels if self.labels is not None else self.targets

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows idx of the embeddings (checked finite as they are read, store/artifact.py)."""
        return self.art.rows("embeddings", np.asarray(idx, np.int64))

    def chunks(
        self, rows: np.ndarray | None = None, chunk: int = store.CHUNK_ROWS
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.art.chunks("embeddings", rows, chunk)

    def signature(self) -> dict[str, Any]:
        """What identifies an embedding set: the weights, the input size, the dataset and its samples."""
        return self.record.signature

    def reference(self, relative_to: str | os.PathLike) -> dict[str, Any]:
        return store.reference(self.art, relative_to, signature=self.signature())


def find(ref: dict[str, Any], owner: str | os.PathLike, given: str | os.PathLike | None, role: str) -> EmbeddingSet:
    """The embeddings a downstream artifact recorded: `given`, else beside the owner, else the recorded path;
    refused unless they are the very embeddings recorded (same signature)."""
    path = store.resolve(ref, owner, given)
    if not path.exists():
        raise W2SError(
            f"{role} {printable(path)} (recorded by {printable(owner)}) not found; pass it explicitly "
            f"(--embeddings FILE or --weak FILE)"
        )
    emb = EmbeddingSet(path, role)
    if emb.signature() != ref["signature"]:
        raise W2SError(
            f"{role} {printable(path)}: not the embeddings {printable(owner)} was made from "
            f"({ref['signature']['model']} on {ref['signature']['dataset_fingerprint'][:12]})"
        )
    return emb
