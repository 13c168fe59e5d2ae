"""`w2s run`: every stage with one set of options, repeated over T split draws (trials)."""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli import artifacts
from w2s_cli.data import TEST, ImageSource, open_source
from w2s_cli.errors import W2SError
from w2s_cli.extract import extract
from w2s_cli.progress import stderr
from w2s_cli.student import fit_student
from w2s_cli.teacher import pseudolabel, train_weak

DEFAULTS: dict[str, Any] = {
    "data": "fashion-mnist",
    "weak": "tf_efficientnet_lite0",
    "weak_size": 64,
    "strong": "tf_efficientnet_lite2",
    "strong_size": 112,
    "n_labeled": 1000,
    "n_pseudo": 8000,
    "n_test": 2000,
}


def auto_limit(split, n_test: int, n_train: int) -> int | None:
    """The smallest extraction that still holds n_test test samples and n_train training samples."""
    m = len(split) if split is not None else None
    if split is None:
        return None
    test_frac = float((split == TEST).mean())
    need = max(math.ceil(n_test / max(test_frac, 1e-12)), math.ceil(n_train / max(1 - test_frac, 1e-12)))
    return None if need >= m else need


def _cached_or_extract(
    out: Path, request: dict[str, Any], source: ImageSource, reuse: bool, quiet: bool, **kwargs: Any
) -> tuple[Path, float]:
    if reuse and out.exists():
        try:
            meta = artifacts.read_meta(out)
            if meta.get("request") == request and meta["dataset"]["fingerprint"] == source.fingerprint:
                stderr.print(f"reusing {out} (same request and data; --no-reuse to extract again)")
                return out, 0.0
        except (W2SError, KeyError):  # an unreadable or foreign cache entry is simply extracted again
            pass
    start = time.perf_counter()
    path = extract(out=out, quiet=quiet, request=request, source=source, **kwargs)
    return path, time.perf_counter() - start


def run(
    out_dir: str | os.PathLike = "w2s-run",
    data: str = DEFAULTS["data"],
    weak: str = DEFAULTS["weak"],
    weak_size: int | None = DEFAULTS["weak_size"],
    strong: str = DEFAULTS["strong"],
    strong_size: int | None = DEFAULTS["strong_size"],
    weak_weights: str | None = None,
    strong_weights: str | None = None,
    pretrained: bool = True,
    n_labeled: int = DEFAULTS["n_labeled"],
    n_pseudo: int = DEFAULTS["n_pseudo"],
    n_test: int = DEFAULTS["n_test"],
    trials: int = 1,
    seed: int = 0,
    test_seed: int = 0,
    teacher_solver: str = "ridgeless",
    student_solver: str = "ridgeless",
    subspace: str = "none",
    energy: float = 0.99,
    hard: bool = False,
    limit: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int | None = None,
    root: str | None = None,
    download: bool = False,
    reuse: bool = True,
    dimensions: bool = True,
    quiet: bool = False,
) -> Path:
    """Extract weak and strong embeddings once, then T times: train-weak, pseudolabel, fit-student.

    Writes every artifact under out_dir and returns the path of the combined result (all trials).
    """
    if trials < 1:
        raise W2SError(f"--trials must be at least 1, got {trials}")
    out_dir = Path(out_dir)
    source = open_source(data, root=root, download=download)  # once, for the limit and both extractions
    if limit is None:
        limit = auto_limit(source.split, n_test, n_labeled + n_pseudo)
    common = {
        "data": data,
        "limit": limit,
        "seed": seed,
        "batch_size": batch_size,
        "device": device,
        "num_workers": num_workers,
        "root": root,
        "download": download,
        "pretrained": pretrained,
    }
    seconds: dict[str, float] = {}
    paths = {}
    for role, model, size, weights in (
        ("weak", weak, weak_size, weak_weights),
        ("strong", strong, strong_size, strong_weights),
    ):
        request = {
            "data": data,
            "model": model,
            "image_size": size,
            "limit": limit,
            "seed": seed,
            "pretrained": pretrained,
            "weights": str(Path(weights).resolve()) if weights else None,
        }
        target = out_dir / f"{role}-{model}-{size or 'native'}px.safetensors"
        paths[role], seconds[f"extract_{role}"] = _cached_or_extract(
            target, request, source, reuse, quiet, model=model, image_size=size, weights=weights, **common
        )
    trial_results = []
    for t in range(trials):
        s = seed + t
        folder = out_dir / f"trial-{s}"
        teacher = train_weak(
            paths["weak"],
            folder / "teacher.safetensors",
            n_labeled,
            n_test,
            s,
            test_seed,
            teacher_solver,
            subspace,
            energy,
        )
        pseudo = pseudolabel(teacher, folder / "pseudolabels.safetensors", n_pseudo, hard)
        result = fit_student(
            pseudo,
            paths["strong"],
            folder / "result.safetensors",
            student_solver,
            subspace,
            energy,
            dimensions=dimensions,
        )
        trial_results.append(artifacts.load(result, "result"))
        if not quiet:
            acc = trial_results[-1].meta["trials"][0].get("accuracy")
            note = f" (weak {acc['weak']:.3f} -> w2s {acc['w2s']:.3f})" if acc else ""
            stderr.print(f"trial {t + 1}/{trials} done{note}")
    return combine(trial_results, out_dir / "result.safetensors", seconds)


def combine(results: list[artifacts.Artifact], out: Path, extra_seconds: dict[str, float] | None = None) -> Path:
    """One `result` artifact holding the trials of several results of the same experiment."""
    first = results[0].meta
    for r in results[1:]:
        for key in ("weak_model", "strong_model", "n_labeled", "n_pseudo", "n_test", "solver", "sample_ids_sha256"):
            if r.meta[key] != first[key]:
                raise W2SError(f"cannot combine results that differ in {key}")
    meta = copy.deepcopy(first)
    meta.update(artifacts.base_meta("result", first["seed"]))
    meta["trials"] = [t for r in results for t in r.meta["trials"]]
    meta["trial_results"] = [str(Path(r.path).resolve()) for r in results]
    seconds = {k: round(v, 3) for k, v in (extra_seconds or {}).items()}
    for r in results:
        for k, v in r.meta["seconds"].items():
            seconds[k] = round(seconds.get(k, 0.0) + v, 3)
    meta["seconds"] = seconds
    dims = [r.meta.get("dimensions") for r in results]
    if len(results) > 1 and all(dims):
        keys = ("d_s", "d_w", "d_sw", "d_sw_null", "d_sw_corrected", "m", "sigma2")
        meta["dimensions"] = {k: float(np.mean([d[k] for d in dims])) for k in keys if all(k in d for d in dims)}
        meta["dimensions"]["source"] = f"{dims[0]['source']}, mean over {len(results)} trials"
    return artifacts.save(artifacts.Artifact("result", meta, {"test_rows": results[0]["test_rows"]}), out)
