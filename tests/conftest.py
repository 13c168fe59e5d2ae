"""Shared fixtures: real timm models (tiny ones with seeded random weights saved to local files, and the
bundled pretrained EfficientNet-Lite0), real images (scikit-learn digits), real embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from w2s_cli.extract import extract

WEAK_MODEL, STRONG_MODEL = "test_efficientnet", "test_resnet"


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("w2s")


def _save_random(name: str, path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = timm.create_model(name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def weak_weights(session_dir) -> Path:
    return _save_random(WEAK_MODEL, session_dir / "weak-weights.safetensors", 1)


@pytest.fixture(scope="session")
def strong_weights(session_dir) -> Path:
    return _save_random(STRONG_MODEL, session_dir / "strong-weights.safetensors", 2)


@pytest.fixture(scope="session")
def weak_emb(session_dir, weak_weights) -> Path:
    """Digits through a tiny random-weight timm model loaded from a local weights file."""
    return extract(
        "digits",
        WEAK_MODEL,
        session_dir / "weak.safetensors",
        image_size=32,
        weights=str(weak_weights),
        quiet=True,
        num_workers=0,
    )


@pytest.fixture(scope="session")
def strong_emb(session_dir) -> Path:
    """Digits through the real pretrained EfficientNet-Lite0 (offline weight package) at 32 px."""
    return extract(
        "digits", "tf_efficientnet_lite0", session_dir / "strong.safetensors", image_size=32, quiet=True, num_workers=0
    )


@pytest.fixture(scope="session")
def image_folder(session_dir) -> Path:
    """A real ImageFolder tree of PNG files (digits 0-2) with train/ and test/ parts."""
    from sklearn.datasets import load_digits

    d = load_digits()
    root = session_dir / "folder"
    for i in range(90):
        part = "test" if i % 5 == 0 else "train"
        label = int(d.target[i]) % 3
        folder = root / part / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 15).astype(np.uint8)).save(folder / f"{i}.png")
    return root
