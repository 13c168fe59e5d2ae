"""Reading embeddings artifacts (ours, checked) and what a consumer needs from them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli import artifacts
from w2s_cli.errors import W2SError
from w2s_cli.metrics import one_hot


def load_embeddings(path: str | os.PathLike, what: str = "embeddings") -> artifacts.Artifact:
    """An `embeddings` artifact whose vectors are all finite."""
    art = artifacts.load(path, "embeddings")
    z = art["embeddings"]
    if z.ndim != 2 or z.shape[0] != len(art["sample_ids"]):
        raise W2SError(f"{path}: malformed embeddings (shape {z.shape})")
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise W2SError(f"{path}: {int(bad.sum())} {what} rows contain NaN or inf (first row {int(np.argmax(bad))})")
    return art


def signature(meta: dict[str, Any]) -> dict[str, Any]:
    """What identifies an embedding set: the weights, the input size, the dataset and its samples."""
    return {
        "model": meta["model"]["name"],
        "state_dict_sha256": meta["model"]["weights"]["state_dict_sha256"],
        "input_size": meta["preprocessing"]["input_size"],
        "dataset_fingerprint": meta["dataset"]["fingerprint"],
        "sample_ids_sha256": meta["sample_ids_sha256"],
    }


def reference(art: artifacts.Artifact) -> dict[str, Any]:
    """How a downstream artifact records the embeddings it was made from."""
    return {
        "path": str(Path(art.path).resolve()),
        "artifact_id": art.meta["artifact_id"],
        "signature": signature(art.meta),
    }


def truth(art: artifacts.Artifact) -> tuple[np.ndarray, np.ndarray | None]:
    """Targets for the solvers: one-hot (m, C) and labels for classification, (m, 1) and None for regression."""
    if "labels" in art.tensors:
        labels = art["labels"].astype(np.int64)
        classes = art.meta["dataset"].get("classes")
        n_classes = len(classes) if classes else int(labels.max()) + 1
        return one_hot(labels, n_classes), labels
    return art["targets"].astype(np.float64)[:, None], None


def dataset_split(art: artifacts.Artifact) -> np.ndarray | None:
    return art.tensors.get("split")
