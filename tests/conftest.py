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

from w2s_cli.extraction.extract import extract
from w2s_cli.options import BackboneSpec, DataOptions, ExtractOptions

WEAK_MODEL, STRONG_MODEL = "test_efficientnet", "test_resnet"
QUIET = ExtractOptions(num_workers=0, quiet=True)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("w2s")


def save_random(name: str, path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = timm.create_model(name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def weak_weights(session_dir) -> Path:
    return save_random(WEAK_MODEL, session_dir / "weak-weights.safetensors", 1)


@pytest.fixture(scope="session")
def weak_emb(session_dir, weak_weights) -> Path:
    """Digits through a tiny random-weight timm model loaded from a local weights file."""
    spec = BackboneSpec(WEAK_MODEL, 32, str(weak_weights))
    return extract(DataOptions("digits"), spec, session_dir / "weak.safetensors", QUIET)


@pytest.fixture(scope="session")
def strong_emb(session_dir) -> Path:
    """Digits through the real pretrained EfficientNet-Lite0 (offline weight package) at 32 px."""
    spec = BackboneSpec("tf_efficientnet_lite0", 32)
    return extract(DataOptions("digits"), spec, session_dir / "strong.safetensors", QUIET)


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


def latent_embeddings(m, d_s, d_w, shared, width_s, width_w, noise=0.01, seed=0):
    """Strong and weak embeddings of the same m samples: `shared` latent directions in common, the rest
    independent, each embedded by a random isometry into a wider space, plus small isotropic noise."""
    rng = np.random.default_rng(seed)
    z_shared = rng.normal(size=(m, shared))
    z_s = np.hstack([z_shared, rng.normal(size=(m, d_s - shared))])
    z_w = np.hstack([z_shared, rng.normal(size=(m, d_w - shared))])
    embed_s = np.linalg.qr(rng.normal(size=(width_s, d_s)))[0].T
    embed_w = np.linalg.qr(rng.normal(size=(width_w, d_w)))[0].T
    S = z_s @ embed_s + noise * rng.normal(size=(m, width_s))
    W = z_w @ embed_w + noise * rng.normal(size=(m, width_w))
    return S, W, z_shared


def embeddings_artifact(path, X, labels, name, split=None):
    """An embeddings artifact for synthetic features (the record fields `w2s extract` writes)."""
    from w2s_cli.store import artifact as store

    meta = store.base_meta("embeddings", 0)
    ids = np.arange(len(X), dtype=np.int64)
    meta.update(
        {
            "model": {"name": name, "weights": {"source": "synthetic", "state_dict_sha256": name}, "width": X.shape[1]},
            "preprocessing": {"input_size": [3, 0, 0]},
            "dataset": {"name": "synthetic", "fingerprint": "s" * 64, "task": "classification", "classes": None},
            "sample_ids_sha256": store.ids_sha256(ids),
        }
    )
    tensors = {"embeddings": X.astype(np.float32), "sample_ids": ids, "labels": labels.astype(np.int64)}
    if split is not None:
        tensors["split"] = split.astype(np.int8)
    return store.save(store.Artifact("embeddings", meta, tensors), path)


class CliResult:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def w2s(*args, input: str | None = None) -> CliResult:
    """`w2s ARGS` in this process, through the real entry point (usage errors and all)."""
    import contextlib
    import io
    import signal
    import sys

    from w2s_cli.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdin
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # main() installs its own
    sys.argv, sys.stdin = ["w2s", *map(str, args)], io.StringIO(input or "")
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv, sys.stdin = saved
        for s, h in handlers.items():
            signal.signal(s, h)
    return CliResult(code, out.getvalue(), err.getvalue())


def assert_user_error(result: CliResult, pattern: str) -> None:
    """One `w2s: error:` line on stderr, exit code 2, nothing on stdout."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("w2s: error:"), result.stderr
    assert pattern in lines[0], lines[0]
    assert result.stdout == ""
