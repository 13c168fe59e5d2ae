"""Shared fixtures: real timm models (tiny ones with seeded random weights saved to local files, and the
bundled pretrained EfficientNet-Lite0), real images (scikit-learn digits), real embeddings.

Extractions are the slow part of the suite, so each one is made once per session (by a real `w2s run`, whose
embeddings other runs in other folders reuse): a test that writes beside them gets copies (`seed_run_dir`)."""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from w2s_cli.options import ExtractOptions

WEAK_MODEL, STRONG_MODEL = "test_efficientnet", "test_resnet"
QUIET = ExtractOptions(num_workers=0, quiet=True)
# the session's two runs on digits: weak test_efficientnet@32 from a seeded weights file and the pretrained
# EfficientNet-Lite0 at 32 px (DIGITS_RUN, 2 trials); the tiny random-weight pair (TINY_MODELS, TINY_SIZES)
DIGITS_RUN = (
    "run --data digits --weak test_efficientnet@32 --strong tf_efficientnet_lite0@32"
    " --n-labeled 200 --n-pseudo 800 --n-test 300 --trials 2 --subspace 40 --num-workers 0"
).split()
TINY_MODELS = ["--weak", "test_efficientnet@32", "--strong", "test_resnet@32", "--no-pretrained"]
TINY_SIZES = ["--data", "digits", "--n-labeled", 200, "--n-test", 300, "--subspace", 20, "--num-workers", 0, "-q"]


# the session fixtures that extract (each a real `w2s run` or extraction, the suite's slow part)
EXTRACTING = {"digits_run", "tiny_run", "weak_emb", "strong_emb", "finetune_inputs"}


def pytest_collection_modifyitems(config, items) -> None:
    """`make test-fast` (-m "not slow") must not pull in an extraction: a test that uses one, through any
    fixture, is marked slow, or the session refuses to start."""
    unmarked = [i.nodeid for i in items if EXTRACTING & set(i.fixturenames) and not i.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError("mark slow (they use a session extraction): " + ", ".join(unmarked))


@functools.cache
def digits() -> Any:
    """scikit-learn's digits, loaded once per session (read-only: every test shares them)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for array in (d.data, d.images, d.target):
        array.setflags(write=False)
    return d


def digit_image(i: int, scale: float = 15) -> Image.Image:
    """Digit i as an 8 x 8 grey PIL image (values 0-16 times `scale`)."""
    return Image.fromarray((digits().images[i] * scale).astype(np.uint8))


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


@dataclass(frozen=True)
class RunDir:
    """A finished `w2s run --out-dir folder --json`: its folder and printed summary."""

    folder: Path
    summary: dict[str, Any]

    def embeddings(self, role: str) -> Path:
        """The embeddings the run extracted for `role` (weak, strong), where a later run looks for them."""
        found = sorted(self.folder.glob(f"{role}-*.safetensors"))
        assert len(found) == 1, f"expected one {role} embeddings file in {self.folder}: {found}"
        return found[0]


def finished_run(folder: Path, *args) -> RunDir:
    r = w2s(*args, "--out-dir", folder, "--json", "-q")
    assert r.exit_code == 0, r.output
    return RunDir(folder, json.loads(r.stdout))


def seed_run_dir(run: RunDir, folder: Path, roles: tuple[str, ...] = ("weak", "strong")) -> Path:
    """Copies of a finished run's embeddings in a new --out-dir: a run there reuses them (copies, not links,
    because the test writes beside them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for role in roles:
        shutil.copy2(run.embeddings(role), folder)
    return folder


@pytest.fixture(scope="session")
def digits_run(session_dir, weak_weights) -> RunDir:
    """DIGITS_RUN in its own folder: the extractions of the weak and strong embeddings below."""
    return finished_run(session_dir / "digits-run", *DIGITS_RUN, "--weak-weights", weak_weights)


@pytest.fixture(scope="session")
def tiny_run(session_dir) -> RunDir:
    """Digits through the tiny random-weight pair at 32 px, N = 300: what sweeps and rank-teachers reuse."""
    return finished_run(session_dir / "tiny-run", "run", *TINY_MODELS, *TINY_SIZES, "--n-pseudo", 300)


@pytest.fixture(scope="session")
def weak_emb(digits_run) -> Path:
    """Digits through a tiny random-weight timm model loaded from a local weights file."""
    return digits_run.embeddings("weak")


@pytest.fixture(scope="session")
def strong_emb(digits_run) -> Path:
    """Digits through the real pretrained EfficientNet-Lite0 (offline weight package) at 32 px."""
    return digits_run.embeddings("strong")


@pytest.fixture(scope="session")
def finetune_inputs(session_dir, weak_emb) -> Path:
    """What the finetuning tests start from, made once: digits through a tiny random-weight strong network
    (test_efficientnet@32, weights seed 2: strong-weights.safetensors, s.safetensors) and the pseudo-labels
    of weak_emb's teacher (n = 100, N = 300, 200 test, subspace 30: p.safetensors)."""
    from w2s_cli.extraction.extract import extract
    from w2s_cli.options import BackboneSpec, DataOptions, SplitOptions, SubspaceOptions
    from w2s_cli.stages.teacher import pseudolabel, train_weak

    d = session_dir / "finetune-inputs"
    d.mkdir()
    weights = save_random("test_efficientnet", d / "strong-weights.safetensors", 2)
    extract(DataOptions("digits"), BackboneSpec("test_efficientnet", 32, str(weights)), d / "s.safetensors", QUIET)
    split = SplitOptions(n_labeled=100, n_pseudo=300, n_test=200)
    pseudolabel(
        train_weak(weak_emb, d / "t.safetensors", split=split, subspace=SubspaceOptions("30")), d / "p.safetensors"
    )
    return d


def copy_finetune_inputs(inputs: Path, d: Path) -> tuple[Path, Path, Path]:
    """A module's own copy of finetune_inputs in folder d (a finetune writes its prefix cache beside the
    strong embeddings): (d, pseudo-labels, strong embeddings)."""
    for name in ("strong-weights.safetensors", "s.safetensors", "p.safetensors"):
        shutil.copy(inputs / name, d / name)
    return d, d / "p.safetensors", d / "s.safetensors"


@pytest.fixture(scope="session")
def image_folder(session_dir) -> Path:
    """A real ImageFolder tree of PNG files (digits 0-2) with train/ and test/ parts."""
    root = session_dir / "folder"
    for i in range(90):
        part = "test" if i % 5 == 0 else "train"
        label = int(digits().target[i]) % 3
        folder = root / part / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        digit_image(i).save(folder / f"{i}.png")
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


def relabel(path, out, labels_of) -> None:
    """A copy of the artifact at `path` with some tensors replaced (`labels_of(name, array)` gives the new one
    or None), its record otherwise kept."""
    from w2s_cli.store import artifact as store

    art = store.load(path)
    tensors = {k: np.asarray(art[k]) for k in art.names()}
    for name in list(tensors):
        new = labels_of(name, tensors[name])
        if new is not None:
            tensors[name] = new
    meta = {k: v for k, v in art.meta.items() if k not in ("artifact_id", "content_sha256")}
    store.save(store.Artifact(art.kind, meta, tensors), out)


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
