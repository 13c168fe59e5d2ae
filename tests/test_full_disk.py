"""A full disk while w2s writes an artifact, an extraction's shard, a finetune's checkpoint or weights, or
the frozen prefix's cache: one `w2s: error:` line, no half-written file, and the same command, rerun once
space is freed, resumes (an extraction from its finished shards) and finishes.

The disk is a small tmpfs mounted for the test, filled by a filler file up to a chosen number of free bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, w2s

from w2s_cli.store import artifact as store

pytestmark = pytest.mark.slow  # extractions and finetunes under a full disk

FULL = "No space left on device"
EXTRACT = ["extract", "--data", "digits", "--model", "test_efficientnet", "--image-size", 32, "--no-pretrained"]
EXTRACT += ["--num-workers", 0, "-q"]


@pytest.fixture
def disk(tmp_path) -> Iterator[Path]:
    """An 8 MiB file system of the test's own (tmpfs), unmounted at its end."""
    where = tmp_path / "disk"
    where.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("no mount command: a small file system to fill cannot be made here")
    if done.returncode != 0:
        pytest.skip(f"mounting a small tmpfs is not permitted here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def leave(disk: Path, free: int) -> None:
    """Fill `disk` until `free` bytes are left, with one filler file (replacing the one before)."""
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    st = os.statvfs(disk)
    size = st.f_bavail * st.f_frsize - free
    assert size > 0, f"less than {free} bytes free on the test disk"
    with open(filler, "wb") as f:
        for start in range(0, size, 1 << 20):
            f.write(b"\0" * min(1 << 20, size - start))


def free_all(disk: Path) -> None:
    (disk / "filler").unlink()


def strays(disk: Path) -> list[Path]:
    """Temp files left behind anywhere on the disk (an atomic write cut short that was not cleaned up)."""
    return [p for p in disk.rglob("*") if p.name.endswith(".tmp")]


def assert_error_after_notes(result, pattern: str) -> None:
    """A rerun that resumes says so, then fails: its notes, then one `w2s: error:` line (no traceback)."""
    assert result.exit_code == 2 and result.stdout == "", result.output
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("w2s: error:")] == lines[-1:], result.stderr
    assert pattern in lines[-1] and "Traceback" not in result.stderr


def test_an_artifact_on_a_full_disk(disk, tiny_run):
    args = ["train-weak", tiny_run.embeddings("weak"), "--n-labeled", 200, "--n-test", 300, "--n-pseudo", 300]
    args += ["--subspace", 20, "-o", disk / "t.safetensors"]
    leave(disk, 16 << 10)
    assert_user_error(w2s(*args), f"cannot write {disk / 't.safetensors'}: {FULL}")
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    free_all(disk)
    assert w2s(*args).exit_code == 0
    assert store.load(disk / "t.safetensors", "teacher")["coef"].shape[0] == 256


def test_an_extraction_on_a_full_disk_resumes_from_its_finished_shards(disk, tiny_run):
    """Shards of 100 rows (100 KiB each): the disk is full at once, then fills at the third shard, then (with
    room for that shard but not for the artifact) at the assembly; each rerun keeps the shards written."""
    out = disk / "e.safetensors"
    args = [*EXTRACT, "--limit", 300, "--batch-size", 50, "--shard-rows", 100, "-o", out]
    shards = disk / "e.safetensors.shards"
    leave(disk, 0)  # not even its manifest: nothing is left behind (no work folder, no lock file)
    assert_user_error(w2s(*args), f"manifest.json: {FULL}")
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    leave(disk, 250 << 10)
    assert_user_error(w2s(*args), f"shard-000002.safetensors: {FULL}")
    assert sorted(p.name for p in shards.glob("shard-*")) == ["shard-000000.safetensors", "shard-000001.safetensors"]
    assert not out.exists() and strays(disk) == []
    kept = {p: p.stat().st_mtime_ns for p in shards.glob("shard-*")}
    leave(disk, 160 << 10)
    failed = w2s(*args)
    assert_error_after_notes(failed, f"cannot write {out}: {FULL}")
    assert "2 of 3 shards already done" in failed.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # kept, not written again
    assert len(list(shards.glob("shard-*"))) == 3 and not out.exists() and strays(disk) == []
    free_all(disk)
    again = w2s(*args)
    assert again.exit_code == 0, again.output
    assert "resuming" in again.stderr and "3 of 3 shards already done" in again.stderr
    assert not shards.exists() and strays(disk) == []
    # the rows are those an uninterrupted extraction gives (the session's, of every digit)
    made, whole = store.load(out, "embeddings"), store.load(tiny_run.embeddings("weak"), "embeddings")
    ids = made["sample_ids"]
    np.testing.assert_array_equal(np.asarray(whole["sample_ids"])[ids], ids)
    np.testing.assert_allclose(made["embeddings"], whole.rows("embeddings", ids), rtol=1e-5, atol=1e-6)


def test_a_finetune_checkpoint_and_its_weights_on_a_full_disk(disk, finetune_inputs):
    """After each epoch the W2S fit writes that epoch's weights (kept for its kernel), then its checkpoint (in
    that order, so that a checkpoint always has its epoch's weights beside it): a disk that fills there gives
    one line naming the file, and no partial file; the rerun, with space, finishes."""
    d = finetune_inputs
    args = ["finetune", d / "p.safetensors", "--strong", d / "s.safetensors", "--train", "head"]
    args += ["--num-workers", 0, "-q", "-o", disk / "r.safetensors", "--epochs", 1]
    fits = disk / "r.safetensors.fits"
    for free in (4 << 10, 16 << 10):
        leave(disk, free)
        r = w2s(*args)
        assert_user_error(r, FULL)
        assert any(
            f"{fits / 'w2s' / name}: {FULL}" in r.stderr for name in ("epoch-1.safetensors", "checkpoint.safetensors")
        )
        assert not (disk / "r.safetensors").exists() and strays(disk) == []
        free_all(disk)
    done = w2s(*args)
    assert done.exit_code == 0, done.output
    kept = ["epoch-1.safetensors"] + ["final.safetensors"] * 3  # the fits' weights, and the W2S fit's after-kernel
    kept += [f"after-kernel-embeddings-final{x}.safetensors" for x in ("", ".result")]
    assert sorted(p.name for p in fits.glob("*/*")) == sorted(kept)
    assert store.load(disk / "r.safetensors", "result").meta["student"]["kind"] == "finetune"


def test_the_prefix_cache_on_a_full_disk_resumes(disk, finetune_inputs):
    """--train last:1 caches the frozen prefix's outputs (768 bytes a row, 500 rows a shard) beside the strong
    embeddings, which are on the disk: it fills at the third shard; the rerun resumes from row 1000."""
    d = finetune_inputs
    strong = shutil.copy(d / "s.safetensors", disk / "s.safetensors")
    args = [
        "finetune",
        d / "p.safetensors",
        "--strong",
        strong,
        "--train",
        "last:1",
        "--epochs",
        1,
    ]
    args += ["--shard-rows", 500, "--num-workers", 0, "-q", "-o", disk / "r.safetensors"]
    leave(disk, 900 << 10)
    assert_user_error(w2s(*args), f"shard-000002.safetensors: {FULL}")
    cache = disk / "activations"
    (shards,) = cache.glob("*.shards")
    assert len(list(shards.glob("shard-*"))) == 2 and strays(disk) == []
    assert not list(cache.glob("*.safetensors")) and not (disk / "r.safetensors").exists()
    free_all(disk)
    again = w2s(*args)
    assert again.exit_code == 0, again.output
    assert "resuming" in again.stderr and "from row 1000" in again.stderr
    (made,) = cache.glob("*.safetensors")
    assert store.load(made, "embeddings").shape("embeddings") == (1797, 192)
    assert not shards.exists() and strays(disk) == []
