"""Work in progress of an extraction: atomic shards of rows plus a manifest, beside the output file.

`OUT.shards/manifest.json` says which extraction the shards belong to (model, weights, preprocessing,
data, samples, batch layout); `shard-K.safetensors` holds rows [K s, (K+1) s). A shard is written to a temp
file, synced and renamed, so after SIGKILL or a power loss every shard present is complete. The finished
artifact is one safetensors file at OUT, written from the shards in order; then the folder goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from w2s_cli.errors import W2SError
from w2s_cli.store.artifact import atomic_output


class ShardPlan:
    def __init__(self, out: Path, identity: dict[str, Any], n_rows: int, shard_rows: int) -> None:
        self.out, self.n_rows, self.shard_rows = Path(out), n_rows, shard_rows
        name = self.out.name + ".shards"
        if len(os.fsencode(name)) > 255:  # an output name near the file system's limit
            name = f".{hashlib.sha256(os.fsencode(self.out.name)).hexdigest()[:16]}.shards"
        self.folder = self.out.with_name(name)
        self.identity = {**identity, "n_rows": n_rows, "shard_rows": shard_rows}
        self.count = max(1, -(-n_rows // shard_rows))

    def rows(self, k: int) -> tuple[int, int]:
        return k * self.shard_rows, min((k + 1) * self.shard_rows, self.n_rows)

    def work_sha256(self) -> str:
        """A hash of what makes the shards (the manifest's content)."""
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()

    def path(self, k: int) -> Path:
        return self.folder / f"shard-{k:06d}.safetensors"

    def prepare(self) -> str | None:
        """Create the folder or adopt one left by the same extraction. Returns a note for stderr when work
        of another extraction was discarded."""
        note = None
        manifest = self.folder / "manifest.json"
        if self.folder.exists():
            try:
                same = json.loads(manifest.read_text()) == self.identity
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(self.folder, ignore_errors=True)
                note = f"discarded unfinished work of a different extraction in {self.folder}"
        self.folder.mkdir(parents=True, exist_ok=True)
        for stray in self.folder.glob(".w2s-*.tmp"):  # a temp file of a shard killed mid-write
            stray.unlink(missing_ok=True)
        if not manifest.exists():
            try:
                with atomic_output(manifest) as tmp:
                    tmp.write_text(json.dumps(self.identity, sort_keys=True))
            except W2SError:  # e.g. a full disk: no work began, so leave no folder (a rerun would call it foreign)
                self.remove()
                raise
        return note

    def done(self, k: int) -> bool:
        p = self.path(k)
        if not p.exists():
            return False
        try:
            with safe_open(str(p), framework="numpy") as f:
                start, stop = self.rows(k)
                return f.get_slice("embeddings").get_shape()[0] == stop - start
        except (SafetensorError, OSError):
            return False

    def write(self, k: int, z: np.ndarray) -> None:
        start, stop = self.rows(k)
        assert len(z) == stop - start, (k, len(z), start, stop)
        with atomic_output(self.path(k)) as tmp:
            save_file({"embeddings": np.ascontiguousarray(z, np.float32)}, str(tmp), {"rows": f"{start}:{stop}"})
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        _sync_folder(self.folder)

    def blocks(self):
        """The finished rows, shard by shard, in order."""
        for k in range(self.count):
            with safe_open(str(self.path(k)), framework="numpy") as f:
                yield f.get_tensor("embeddings")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _sync_folder(folder: Path) -> None:
    """fsync a folder so that a rename inside it survives a power loss (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
