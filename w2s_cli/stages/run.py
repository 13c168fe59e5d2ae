"""`w2s run`: every stage with one set of options, repeated over T split draws (trials)."""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
from typing import Any

from w2s_cli.errors import W2SError
from w2s_cli.inputs.sources import TEST, ImageSource
from w2s_cli.options import BackboneSpec, DataOptions, ExtractOptions, RunOptions, SplitOptions
from w2s_cli.progress import stderr
from w2s_cli.stages.student import fit_student
from w2s_cli.stages.teacher import pseudolabel, train_weak
from w2s_cli.store import artifact as store


def auto_limit(split, n_test: int, n_train: int) -> int | None:
    """The smallest extraction that still holds n_test test samples and n_train training samples."""
    if split is None:
        return None
    m = len(split)
    test_frac = float((split == TEST).mean())
    need = max(math.ceil(n_test / max(test_frac, 1e-12)), math.ceil(n_train / max(1 - test_frac, 1e-12)))
    return None if need >= m else need


def extraction_request(data: DataOptions, spec: BackboneSpec, limit: int | None, seed: int) -> dict[str, Any]:
    """What identifies an extraction for reuse in --out-dir."""
    return {
        "data": data.data,
        "model": spec.model,
        "image_size": spec.image_size,
        "limit": limit,
        "seed": seed,
        "pretrained": spec.pretrained,
        "weights": str(Path(spec.weights).resolve()) if spec.weights else None,
    }


def cached_or_extract(
    out: Path,
    request: dict,
    data: DataOptions,
    spec: BackboneSpec,
    extract_opts: ExtractOptions,
    limit: int | None,
    seed: int,
    source_fn,
    reuse: bool,
) -> tuple[Path, float]:
    """The embeddings of `request` in out: reused when the file there was made for the same request and data,
    else extracted (resuming unfinished shards of the same extraction)."""
    if reuse and out.exists():
        try:
            meta = store.read_meta(out)
            if meta.get("request") == request and meta["dataset"]["fingerprint"] == source_fn().fingerprint:
                stderr.print(f"reusing {out} (same request and data; --no-reuse to extract again)")
                return out, 0.0
        except (W2SError, KeyError):  # an unreadable or foreign cache entry is simply extracted again
            pass
    from w2s_cli.extraction.extract import extract

    start = time.perf_counter()
    path = extract(data, spec, out, extract_opts, limit=limit, seed=seed, request=request, source=source_fn())
    return path, time.perf_counter() - start


class LazySource:
    """The data source, opened at most once and only if needed (a cached run never opens it)."""

    def __init__(self, data: DataOptions) -> None:
        self.data, self.source = data, None

    def __call__(self) -> ImageSource:
        if self.source is None:
            from w2s_cli.inputs.sources import open_source

            self.source = open_source(self.data)
        return self.source


def embeddings_for(
    out_dir: Path,
    data: DataOptions,
    options: RunOptions,
    extract_opts: ExtractOptions,
    reuse: bool,
    source: LazySource | None = None,
) -> tuple[dict[str, Path], dict[str, float]]:
    """Weak and strong embeddings for a run in out_dir (extracted or reused), and the seconds spent."""
    source = source or LazySource(data)
    limit = options.limit
    if limit is None:
        sp = options.split
        limit = auto_limit(source().split, sp.n_test, sp.n_labeled + sp.n_pseudo)
    paths, seconds = {}, {}
    for role, spec in (("weak", options.weak), ("strong", options.strong)):
        request = extraction_request(data, spec, limit, options.seed)
        target = out_dir / f"{role}-{spec.model.replace('/', '_')}-{spec.image_size or 'native'}px.safetensors"
        paths[role], seconds[f"extract_{role}"] = cached_or_extract(
            target, request, data, spec, extract_opts, limit, options.seed, source, reuse
        )
    return paths, seconds


def run_trials(
    paths: dict[str, Path], folder: Path, options: RunOptions, quiet: bool = False, progress=None
) -> list[Path]:
    """T trials (seeds seed..seed+T-1, the test split fixed) of train-weak, pseudolabel, fit-student."""
    teacher_solver, student_solver = options.head.solvers()
    results = []
    for t in range(options.trials):
        s = options.split.seed + t
        sub = folder / f"trial-{s}"
        split = SplitOptions(**{**options.split.__dict__, "seed": s})
        teacher = train_weak(paths["weak"], sub / "teacher.safetensors", split, options.weak_subspace,
                             teacher_solver, n_pseudo=options.split.n_pseudo)  # fmt: skip
        pseudo = pseudolabel(teacher, sub / "pseudolabels.safetensors", hard=options.head.hard)
        results.append(
            fit_student(
                pseudo,
                paths["strong"],
                sub / "result.safetensors",
                student_solver,
                options.strong_subspace,
                dimensions=options.dimensions,
            )  # fmt: skip
        )
        if progress is not None:
            progress()
        elif not quiet:
            acc = store.read_meta(results[-1])["trials"][0].get("accuracy")
            note = f" (weak {acc['weak']:.3f} -> w2s {acc['w2s']:.3f})" if acc else ""
            stderr.print(f"trial {t + 1}/{options.trials} done{note}")
    return results


def run(
    out_dir: str | os.PathLike = "w2s-run",
    data: DataOptions | None = None,
    options: RunOptions | None = None,
    extract: ExtractOptions | None = None,
    reuse: bool = True,
) -> Path:
    """Extract weak and strong embeddings once, then T trials; returns the path of the combined result."""
    data, options, extract = data or DataOptions(), options or RunOptions(), extract or ExtractOptions()
    if options.trials < 1:
        raise W2SError(f"--trials must be at least 1, got {options.trials}")
    options.split.check()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise W2SError(f"--out-dir {out_dir}: is a file, not a folder")
    paths, seconds = embeddings_for(out_dir, data, options, extract, reuse)
    results = run_trials(paths, out_dir, options, extract.quiet)
    return combine([store.load(p, "result") for p in results], out_dir / "result.safetensors", seconds)


def combine(results: list[store.Artifact], out: Path, extra_seconds: dict[str, float] | None = None) -> Path:
    """One `result` artifact holding the trials of several results of the same experiment."""
    first = results[0].meta
    for r in results[1:]:
        for key in ("weak_model", "strong_model", "n_labeled", "n_pseudo", "n_test", "solver", "sample_ids_sha256"):
            if r.meta[key] != first[key]:
                raise W2SError(f"cannot combine results that differ in {key}")
    meta = copy.deepcopy(first)
    meta.update(store.base_meta("result", first["seed"]))
    meta["trials"] = [t for r in results for t in r.meta["trials"]]
    meta["trial_results"] = [store.reference(r, out) for r in results]
    seconds = {k: round(v, 3) for k, v in (extra_seconds or {}).items()}
    for r in results:
        for k, v in r.meta["seconds"].items():
            seconds[k] = round(seconds.get(k, 0.0) + v, 3)
    meta["seconds"] = seconds
    return store.save(store.Artifact("result", meta, {"test_rows": results[0]["test_rows"]}), out)
