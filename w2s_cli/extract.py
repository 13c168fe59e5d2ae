"""Extraction: penultimate pooled embeddings of every sample, batched, under torch.inference_mode."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from w2s_cli import artifacts
from w2s_cli.data import ImageSource, open_source, subset
from w2s_cli.errors import W2SError
from w2s_cli.models import Backbone, create_backbone, finish_batch, make_transform, split_transform
from w2s_cli.progress import progress_bar


class _Images(Dataset):
    """The chosen samples of a source, transformed for the model."""

    def __init__(self, source: ImageSource, sample_ids: np.ndarray, transform) -> None:
        self.source, self.sample_ids, self.transform = source, sample_ids, transform

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.transform(self.source.load(int(self.sample_ids[k])))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps"):
        raise W2SError(f"--device must be auto, cpu, cuda or mps, not '{device}'")
    if device == "cuda" and not torch.cuda.is_available():
        raise W2SError("--device cuda: no CUDA device is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise W2SError("--device mps: no MPS device is available")
    return torch.device(device)


def default_workers() -> int:
    """One loader worker per spare core, at most 8: the model forward needs the rest."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def embed_batch(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate pooled embedding: timm's forward_features, then the head up to (not including) logits."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def embed(
    backbone: Backbone,
    source: ImageSource,
    sample_ids: np.ndarray,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int | None = None,
    quiet: bool = False,
) -> np.ndarray:
    """Embeddings (len(sample_ids), width) as float32, in the order of sample_ids."""
    dev = resolve_device(device)
    model = backbone.model.to(dev).to(memory_format=torch.channels_last)
    workers = default_workers() if num_workers is None else num_workers
    # workers resize and crop (PIL, as timm does) and ship uint8; scaling and normalising happen on `dev`
    split = split_transform(backbone.data_config)
    transform = split[0] if split is not None else make_transform(backbone.data_config)
    loader = DataLoader(
        _Images(source, sample_ids, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
    out = np.empty((len(sample_ids), backbone.width), dtype=np.float32)
    row = 0
    with progress_bar(quiet) as bar, torch.inference_mode():
        task = bar.add_task(f"extract {backbone.name}", total=len(sample_ids))
        for x in loader:
            x = x.to(dev, non_blocking=True)
            if split is not None:
                x = finish_batch(x, split[1], split[2])
            x = x.contiguous(memory_format=torch.channels_last)
            z = embed_batch(model, x).float().cpu().numpy()
            out[row : row + len(z)] = z
            row += len(z)
            bar.advance(task, len(z))
    if not np.isfinite(out).all():
        raise W2SError(f"{backbone.name} produced non-finite embeddings (NaN/inf); check the weights")
    return out


def extract(
    data: str,
    model: str,
    out: str | os.PathLike,
    image_size: int | None = None,
    weights: str | None = None,
    pretrained: bool = True,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int | None = None,
    root: str | None = None,
    download: bool = False,
    target_column: str | None = None,
    quiet: bool = False,
    request: dict[str, Any] | None = None,
    source: ImageSource | None = None,
) -> Path:
    """Run a backbone over a dataset and write an `embeddings` artifact; returns its path.

    `source`: the already opened data source of `data` (saves opening it again), else it is opened here.
    """
    if batch_size <= 0:
        raise W2SError(f"--batch-size must be positive, got {batch_size}")
    dev = resolve_device(device)  # refuse an unavailable device before any slow work
    if source is None:
        source = open_source(data, root=root, download=download, target_column=target_column)
    backbone = create_backbone(model, pretrained=pretrained, weights=weights, image_size=image_size, seed=seed)
    sample_ids = subset(source, limit, seed)
    start = time.perf_counter()
    z = embed(backbone, source, sample_ids, batch_size, str(dev), num_workers, quiet)
    seconds = time.perf_counter() - start
    meta: dict[str, Any] = artifacts.base_meta("embeddings", seed)
    meta.update(
        {
            "model": {"name": model, "weights": backbone.weights, "width": backbone.width},
            "preprocessing": {
                **{k: list(v) if isinstance(v, tuple) else v for k, v in backbone.data_config.items()},
                "grey_to_rgb": True,
                "transform": "timm.data.create_transform(eval)",
            },
            "pooling": "timm forward_features + forward_head(pre_logits=True)",
            "dtype": "float32",
            "dataset": source.record(),
            "limit": limit,
            "request": request,
            "n_samples": len(sample_ids),
            "sample_ids_sha256": artifacts.ids_sha256(sample_ids),
            "extraction": {
                "device": str(dev),
                "batch_size": batch_size,
                "seconds": round(seconds, 3),
                "images_per_second": round(len(sample_ids) / seconds, 2),
            },
        }
    )
    tensors = {"embeddings": z, "sample_ids": sample_ids}
    tensors["labels" if source.task == "classification" else "targets"] = source.targets[sample_ids]
    if source.split is not None:
        tensors["split"] = source.split[sample_ids]
    return artifacts.save(artifacts.Artifact("embeddings", meta, tensors), out)
