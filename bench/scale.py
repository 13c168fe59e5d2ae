"""Scale: train-weak -> pseudolabel -> fit-student -> report through the CLI on synthetic embedding
artifacts of R rows, with peak memory and seconds per stage.

    python bench/scale.py --rows 1000000 [--rows 250000] [--width 1280] [--n-labeled 10000] [--dir DIR]

Each stage runs as its own process and its peak resident memory is read from the kernel (VmHWM).
The artifacts are written in row blocks (never whole in memory): weak and strong embeddings of
R x width float32 from 96 latent factors (48 shared), 10 classes from the shared ones, a 10% test split.
With two --rows the slope in seconds per million rows is printed. The last line is
`rows=R width=D seconds=S peak_rss_mib=M` for the largest R.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from w2s_cli.store import artifact as store

BIN = Path(sys.executable).parent
CHUNK = 20_000


def blocks(rows: int, width: int, role: str, seed: int = 0):
    """Row blocks of one backbone's embeddings, deterministic per block."""
    rng0 = np.random.default_rng([seed, 99])
    mix = {r: rng0.normal(size=(96, width)).astype(np.float32) / np.sqrt(96) for r in ("weak", "strong")}
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        rng = np.random.default_rng([seed, start])
        shared = rng.normal(size=(n, 48)).astype(np.float32)
        own = np.random.default_rng([seed, start, 0 if role == "weak" else 1]).normal(size=(n, 48)).astype(np.float32)
        scale = np.linspace(3, 0.3, 96, dtype=np.float32)
        z = np.hstack([shared, own]) * scale
        noise = np.random.default_rng([seed, start, 2]).normal(scale=0.05, size=(n, width)).astype(np.float32)
        yield z @ mix[role] + noise + 1.0


def labels(rows: int, seed: int = 0) -> np.ndarray:
    out = np.empty(rows, np.int64)
    w = np.random.default_rng([seed, 7]).normal(size=(48, 10))
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        shared = np.random.default_rng([seed, start]).normal(size=(n, 48)).astype(np.float32)
        out[start : start + n] = (shared * np.linspace(3, 0.3, 96)[:48] @ w).argmax(axis=1)
    return out


def write(path: Path, rows: int, width: int, role: str) -> None:
    ids = np.arange(rows, dtype=np.int64)
    meta = store.base_meta("embeddings", 0)
    meta.update(
        {
            "model": {
                "name": f"synthetic-{role}",
                "weights": {"source": "synthetic", "state_dict_sha256": role},
                "width": width,
            },
            "preprocessing": {"input_size": [3, 0, 0]},
            "dataset": {
                "name": "synthetic",
                "fingerprint": f"{rows}x{width}".ljust(64, "0"),
                "task": "classification",
                "classes": [str(k) for k in range(10)],
            },
            "sample_ids_sha256": store.ids_sha256(ids),
        }
    )
    split = (np.random.default_rng(5).random(rows) < 0.1).astype(np.int8)
    tensors = {
        "embeddings": store.Chunked((rows, width), np.dtype(np.float32), blocks(rows, width, role)),
        "sample_ids": ids,
        "labels": labels(rows),
        "split": split,
    }
    store.save(store.Artifact("embeddings", meta, tensors), path)


def stage(args: list, cwd: Path) -> tuple[float, float, str]:
    """(seconds, peak resident memory in MiB, stdout) of one CLI stage in its own process. The peak is the
    kernel's high-water mark of the stage's own address space (VmHWM), read while it runs: wait4's
    ru_maxrss would also count this (large) parent's memory at the fork."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(BIN / "w2s"), *map(str, args)], cwd=cwd, stdout=out, stderr=err)
        peak = 0.0
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) / 1024)
            except (OSError, IndexError, ValueError):  # the process is exiting
                pass
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{args[0]} failed: {err.read().decode()}")
        return seconds, peak, out.read().decode()


def run(rows: int, width: int, n_labeled: int, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for role in ("weak", "strong"):
        write(folder / f"{role}.safetensors", rows, width, role)
    write_seconds = time.perf_counter() - start
    n_test = min(10_000, rows // 20)
    n_pseudo = int(0.85 * rows) - n_labeled
    stages = {
        "train-weak": [
            "train-weak",
            "weak.safetensors",
            "--n-labeled",
            n_labeled,
            "--n-pseudo",
            n_pseudo,
            "--n-test",
            n_test,
            "-o",
            "t.safetensors",
        ],
        "pseudolabel": ["pseudolabel", "t.safetensors", "-o", "p.safetensors"],
        "fit-student": ["fit-student", "p.safetensors", "--strong", "strong.safetensors", "-o", "r.safetensors"],
        "report": ["report", "r.safetensors", "--json"],
    }
    seconds, peaks = {}, {}
    for name, args in stages.items():
        seconds[name], peaks[name], out = stage(args, folder)
    s = json.loads(out)
    return {
        "rows": rows,
        "width": width,
        "n_labeled": n_labeled,
        "n_pseudo": n_pseudo,
        "write_seconds": write_seconds,
        "seconds": seconds,
        "peak_rss_mib": peaks,
        "pgr": s["pgr"],
        "d_w": s["dimensions"]["d_w"],
        "d_s": s["dimensions"]["d_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, action="append", help="rows (repeat for the per-million slope)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--n-labeled", type=int, default=10_000)
    ap.add_argument("--dir", default=None, help="where to write the artifacts (default: a temp folder, removed)")
    args = ap.parse_args()
    sizes = sorted(args.rows or [1_000_000])
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="w2s-scale-"))
    results = []
    try:
        for rows in sizes:
            r = run(rows, args.width, args.n_labeled, base / f"{rows}")
            results.append(r)
            total = sum(r["seconds"].values())
            print(
                f"rows={rows} width={args.width}: wrote inputs in {r['write_seconds']:.0f} s; "
                + ", ".join(f"{k} {v:.1f} s / {r['peak_rss_mib'][k]:.0f} MiB" for k, v in r["seconds"].items())
                + f"; total {total:.1f} s; d_w {r['d_w']} d_s {r['d_s']} PGR {r['pgr']:.3f}",
                flush=True,
            )
            shutil.rmtree(base / f"{rows}", ignore_errors=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    if len(results) > 1:
        (a, b) = results[0], results[-1]
        ta, tb = sum(a["seconds"].values()), sum(b["seconds"].values())
        slope = (tb - ta) / (b["rows"] - a["rows"]) * 1e6
        print(
            f"slope {slope:.1f} s per million rows; seconds per row {ta / a['rows'] * 1e6:.1f} vs "
            f"{tb / b['rows'] * 1e6:.1f} per million (linear: equal)"
        )
    last = results[-1]
    print(
        f"rows={last['rows']} width={last['width']} seconds={sum(last['seconds'].values()):.1f} "
        f"peak_rss_mib={max(last['peak_rss_mib'].values()):.0f}"
    )


if __name__ == "__main__":
    main()
