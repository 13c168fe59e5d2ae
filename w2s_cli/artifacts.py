"""Artifacts: safetensors files holding tensors plus one JSON metadata record.

Every stage reads and writes these. The record says what produced the tensors (kind, command, versions,
seed, model, dataset fingerprint, sample ids hash, split, solver) so that a consumer can refuse inputs
that do not belong together. Writes are atomic: a temp file in the target folder, then a rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from w2s_cli.errors import W2SError

SCHEMA_VERSION = 1
KINDS = ("embeddings", "teacher", "pseudolabels", "result", "intrinsic_dim")
_META_KEY = "w2s"


@dataclass
class Artifact:
    """Tensors (numpy arrays) plus the metadata record, and the path it was read from."""

    kind: str
    meta: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.tensors[name]
        except KeyError:
            raise W2SError(f"{self.path}: artifact of kind '{self.kind}' has no tensor '{name}'") from None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("w2s", "torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "safetensors"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def base_meta(kind: str, seed: int | None) -> dict[str, Any]:
    """The fields every artifact carries."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "artifact_id": uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "versions": package_versions(),
        "seed": seed,
    }


def ids_sha256(sample_ids: np.ndarray) -> str:
    """Hash of the sample ids (an int64 vector of dataset indices), in row order."""
    return hashlib.sha256(np.ascontiguousarray(sample_ids, dtype=np.int64).tobytes()).hexdigest()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path next to `path` (same suffix) to write to; renamed onto `path` when the block succeeds,
    removed when it fails, so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(artifact: Artifact, path: str | os.PathLike) -> Path:
    """Write atomically: a temp file next to `path`, then an atomic rename."""
    path = Path(path)
    if artifact.kind not in KINDS:
        raise ValueError(f"unknown artifact kind {artifact.kind!r}")
    if artifact.meta.get("kind") != artifact.kind:
        raise ValueError("artifact.meta['kind'] must equal artifact.kind")
    tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in artifact.tensors.items()}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(artifact.meta)})
    artifact.path = path
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata record only, without reading the tensors."""
    path = Path(path)
    if not path.exists():
        raise W2SError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise W2SError(f"{path}: not a safetensors file ({exc})") from None
    if raw is None:
        raise W2SError(f"{path}: a safetensors file without a w2s record (not made by w2s)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise W2SError(f"{path}: corrupt w2s record") from None
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise W2SError(f"{path}: schema version {meta.get('schema_version')} (this w2s reads {SCHEMA_VERSION})")
    return meta


def load(path: str | os.PathLike, kind: str | tuple[str, ...] | None = None) -> Artifact:
    """Read an artifact; refuse one of the wrong kind with a clear error."""
    path = Path(path)
    meta = read_meta(path)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and meta["kind"] not in kinds:
        want = " or ".join(kinds)
        raise W2SError(f"{path}: is a '{meta['kind']}' artifact, expected {want}")
    tensors: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name).numpy()
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise W2SError(f"{path}: unreadable tensors ({exc})") from None
    return Artifact(kind=meta["kind"], meta=meta, tensors=tensors, path=path)


def require_same_samples(a: dict[str, Any], b: dict[str, Any], what_a: str, what_b: str) -> None:
    """Refuse two records that are not about the same samples of the same dataset."""
    if a["dataset"]["fingerprint"] != b["dataset"]["fingerprint"]:
        raise W2SError(
            f"{what_a} and {what_b} come from different datasets "
            f"({a['dataset']['name']} {a['dataset']['fingerprint'][:12]} vs "
            f"{b['dataset']['name']} {b['dataset']['fingerprint'][:12]})"
        )
    if a["sample_ids_sha256"] != b["sample_ids_sha256"]:
        raise W2SError(
            f"{what_a} and {what_b} hold different samples of {a['dataset']['name']} "
            "(extract both with the same --limit and --seed)"
        )


def resolve_recorded_path(recorded: str, relative_to: Path) -> Path:
    """A path recorded in an artifact: absolute as written, else relative to the artifact's folder."""
    p = Path(recorded)
    if p.is_absolute():
        return p
    return (relative_to.parent / p).resolve()
