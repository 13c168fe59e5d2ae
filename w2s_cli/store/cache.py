"""One cache for everything w2s reuses: the embeddings of a backbone (studies/run.py), the frozen prefix's
outputs (finetuning/prefix.py), finished trials (studies/run.py) and finetuned fits (stages/finetune.py).

Each thing is named by its identity, a dict of exactly what it depends on, hashed once (canonical JSON,
sha256: `key`). `obtain` is the one way to get one: a finished one that matches is reused and said
("reusing PATH (why)"), else it is made, by one process at a time (store/locks.py: another w2s process
making the same unit is waited for, and what it made meanwhile is reused). What a thing does not record of
itself (a trial's result does not say which options asked for it; a fit lives inside the result that made
it) is kept in an entry beside it: its identity, what was made, and any arrays (`write_entry`, `read_entry`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from safetensors import SafetensorError

from w2s_cli.progress import stderr
from w2s_cli.store.artifact import atomic_output
from w2s_cli.store.locks import agreed, producing

T = TypeVar("T")
ENTRY_KEY = "w2s_cache"  # the safetensors metadata key of an entry with arrays


def canonical(identity: Mapping[str, Any]) -> str:
    """An identity as one JSON text: keys sorted, no spaces, so that equal identities give equal texts."""
    return json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def key(identity: Mapping[str, Any]) -> str:
    """The identity's sha256 (hex): what names and compares cached things."""
    return hashlib.sha256(canonical(identity).encode()).hexdigest()


def arrays_sha256(*arrays: np.ndarray) -> str:
    """One hash of several arrays, each by dtype, shape and bytes (rows, targets, a head, a split)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def slug(text: str) -> str:
    """A name made safe for one path component: '/' -> '_', ':' -> '-', anything else outside
    [A-Za-z0-9=._@+-] -> '-' (model names, data names, sweep points, teachers, job logs)."""
    return re.sub(r"[^A-Za-z0-9=._@+-]", "-", text.replace("/", "_").replace(":", "-"))


def obtain(
    lock: Path,
    look: Callable[[], T | None],
    make: Callable[[], T],
    *,
    reuse: bool = True,
    say: Callable[[T], str] | None = None,
    prepare: Callable[[], None] | None = None,
) -> T:
    """What `look` finds (reused; `say(found)` said on stderr as 'reusing ...'), else what `make` makes.
    `lock`: the unit made by one process at a time (a second process waits, then looks again); `prepare`:
    checks run before the lock when something is to be made; `reuse` False: always made. On every rank of
    a torchrun job the decision is rank 0's."""
    found = agreed(look() if reuse else None)
    if found is None:
        if prepare is not None:
            prepare()
        with producing(lock):
            found = agreed(look() if reuse else None)
            if found is None:
                return make()
    if say is not None:
        stderr.print(f"reusing {say(found)}")
    return found


@dataclass(frozen=True)
class Entry:
    """What the cache keeps of one thing: its identity, what was made (JSON) and its arrays."""

    identity: dict[str, Any]
    made: dict[str, Any]
    arrays: dict[str, np.ndarray]


def write_entry(
    path: Path, identity: Mapping[str, Any], made: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
) -> Path:
    """Write an entry atomically: a JSON file (`.json`), or a safetensors file whose arrays are kept exactly
    and whose metadata holds the rest."""
    text = json.dumps({"key": key(identity), "identity": identity, "made": made})
    with atomic_output(path) as tmp:
        if path.suffix == ".json":
            if arrays:
                raise ValueError("a .json entry holds no arrays")
            tmp.write_text(text, encoding="utf-8")
        else:
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}, str(tmp), {ENTRY_KEY: text})
    return path


def read_entry(path: Path, identity: Mapping[str, Any]) -> Entry | None:
    """The entry at `path` if it is one of this identity; None when absent, unreadable or of another."""
    try:
        if path.suffix == ".json":
            raw, arrays = path.read_text(encoding="utf-8"), {}
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                raw = (f.metadata() or {})[ENTRY_KEY]
                arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iteration
        d = json.loads(raw)
        if key(d["identity"]) != key(identity):
            return None
        return Entry(d["identity"], d["made"], arrays)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):  # a damaged or foreign entry is a miss
        return None
