"""`--dry-run`: the work that run, sweep, rank-teachers or finetune would do, the disk it needs, and the time
it would take on this machine, from a few seconds of calibration. Nothing is extracted or written.

The model of the time is deliberately simple: extraction is bound by each backbone's forward pass (the
extraction loop runs at 0.95 of the bare forward on 2 cores, docs/scale.md *Benchmarks*), so it is timed on a
batch of random images at the requested size with random weights (the speed does not depend on them);
a trial is bound by float64 products of its rows with the embeddings' width (moments for both bases, the
projections, the analysis), so one such product is timed and scaled; finetuning (studies/finetune_cost.py) is
bound by the frozen prefix's cache and the trained part's forward and backward passes, each timed on a batch
through the cut network.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli.inputs.sources import subset
from w2s_cli.options import COLLECT, BackboneSpec, DataOptions, ExecutorOptions, ExtractOptions, RunOptions, StudentKind
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.records import BackboneCost, CostEstimate
from w2s_cli.studies.executors import embeddings_plan, trial_plan
from w2s_cli.studies.finetune_cost import Fits, finetune_work
from w2s_cli.studies.proxy import check_proxy_epochs
from w2s_cli.studies.rank_finetune import estimated_seconds
from w2s_cli.studies.ranking import candidates
from w2s_cli.studies.run import EmbeddingCache, embedding_cache
from w2s_cli.studies.sweep import points_of, tasks_of

BATCH = 32
LOOP_EFFICIENCY = 0.95  # the extraction loop against the bare forward (bench/extract.py)
PRODUCTS_PER_TRIAL = 8  # row x width^2 products a trial does: moments and projections of both backbones
TRIAL_OVERHEAD = 1.0  # seconds of a trial that do not scale with its rows (files, small solves; digits, 2 cores)


def forward_seconds(spec: BackboneSpec, source: Any = None) -> tuple[int, float]:
    """The embedding width and seconds per image of a forward batch (the best of two, after a warm-up batch of
    the same shape: the first call of a shape pays for kernel selection)."""
    import torch

    from w2s_cli.inputs.backbones import create_backbone

    backbone = create_backbone(BackboneSpec(spec.model, spec.image_size, pretrained=False, stage=spec.stage))
    backbone.model.to(memory_format=torch.channels_last)
    x = torch.randn(BATCH, *backbone.input_size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            backbone.embed(x)
            times.append(time.perf_counter() - start)
    per_image = min(times[1:]) / BATCH
    if source is not None:  # no loader workers: each image's timm transform runs between the forwards
        from w2s_cli.inputs.preprocess import make_transform

        transform, start = make_transform(backbone.data_config), time.perf_counter()
        for i in range(min(BATCH, len(source))):
            transform(source.load(i).convert("RGB"))
        per_image += (time.perf_counter() - start) / min(BATCH, len(source))
    return backbone.width, per_image


def product_seconds(width: int, rows: int = 2000) -> float:
    """Seconds of one float64 (rows x width)' (rows x width) product on this machine."""
    X = np.random.default_rng(0).standard_normal((rows, width))
    X.T @ X
    start = time.perf_counter()
    X.T @ X
    return (time.perf_counter() - start) / rows


def backbones(cache: EmbeddingCache, specs: list[BackboneSpec], rows: int, reuse: bool) -> list[BackboneCost]:
    out = []
    for spec in dict.fromkeys(specs):
        found = cache.reusable(spec) if reuse else None
        serial = cache.extract.num_workers == 0
        width, per_image = forward_seconds(spec, cache.source() if serial and found is None else None)
        if found is not None:
            width = EmbeddingSet(found, "embeddings").width
        path = None if found is None else str(found)
        out.append(BackboneCost(spec.label, 0 if found else rows, found is not None, width, per_image, path))
    return out


def estimate(
    cache: EmbeddingCache,
    runs: list[RunOptions],
    *,
    reuse: bool = True,
    trials: int | None = None,
    executor: ExecutorOptions | None = None,
    predictions: int = 0,
) -> CostEstimate:
    """The work of `runs` (one per point or teacher) over the cache's samples, its disk and its time.
    `trials`: trials not already finished (default all); `predictions`: rank-teachers' label-light
    predictions (each about one trial's products)."""
    rows = len(subset(cache.source(), cache.limit, cache.seed))
    nets = backbones(cache, [s for o in runs for s in o.backbones()], rows, reuse)
    width = max(b.width for b in nets)
    trials = sum(o.trials for o in runs) if trials is None else trials
    trial_rows = max(o.split.n_labeled + o.split.n_pseudo + o.split.n_test for o in runs)
    per_trial = TRIAL_OVERHEAD + PRODUCTS_PER_TRIAL * trial_rows * product_seconds(width)
    ft = [o for o in runs if o.student == StudentKind.finetune]
    items = [Fits(o.strong, o.finetune, o.split.n_labeled, o.split.n_pseudo, o.split.n_test, o.trials) for o in ft]
    tuned = finetune_work(items, rows, {b.label: Path(b.path) if b.path else None for b in nets})
    seconds = {
        "extraction": sum(b.images * b.seconds_per_image / LOOP_EFFICIENCY for b in nets),
        "prefix_cache": tuned.prefix_seconds / LOOP_EFFICIENCY,
        "fits": (trials + predictions) * per_trial,
        "finetuning": tuned.fit_seconds,
    }
    spread = executor is not None and executor.kind == "local"  # K workers share the fits
    parallel = (seconds["fits"] + seconds["finetuning"]) / executor.workers if spread else None
    serial = seconds["extraction"] + seconds["prefix_cache"]
    classes = 10
    disk = sum(b.images * (b.width * 4 + 8) for b in nets) + trials * trial_rows * classes * 8 * 6 + tuned.disk_bytes
    return CostEstimate(
        backbones=tuple(nets),
        rows=rows,
        trials=trials,
        predictions=predictions,
        prefix_images=tuned.prefix_images,
        finetune_epochs=sum(o.trials * o.finetune.epochs * 3 for o in ft),
        finetune_step_rows=tuned.step_rows,
        finetune_forward_rows=tuned.forward_rows,
        jobs=trials if executor is not None and executor.kind not in ("inprocess", COLLECT) else 0,
        disk_bytes=int(disk),
        seconds=seconds,
        total_seconds=sum(seconds.values()) if parallel is None else serial + parallel,
    )


def estimate_run(
    out_dir: str | Path, data: DataOptions, options: RunOptions, extract: ExtractOptions, reuse: bool = True
) -> CostEstimate:
    """`w2s run --dry-run`: the sizes checked as run checks them, then the estimate."""
    return estimate(embedding_cache(out_dir, data, [options], extract, reuse), [options], reuse=reuse)


def estimate_sweep(
    out_dir: str | Path,
    data: DataOptions,
    base: RunOptions,
    extract: ExtractOptions,
    varies: list[tuple[str, list[Any]]],
    *,
    reuse: bool = True,
    executor: ExecutorOptions | None = None,
) -> CostEstimate:
    """`w2s sweep --dry-run`: the grid and sizes checked as sweep checks them; the trials already finished
    (and the embeddings already there) cost nothing."""
    grid = points_of(base, varies)
    runs = [o for _, o in grid]
    cache = embedding_cache(out_dir, data, runs, extract, reuse)
    where, _ = embeddings_plan(cache, [s for o in runs for s in o.backbones()])
    _, todo = trial_plan(tasks_of(Path(out_dir), grid), where, extract, reuse)
    return estimate(cache, runs, reuse=reuse, trials=len(todo), executor=executor)


def estimate_ranking(
    out_dir: str | Path,
    data: DataOptions,
    base: RunOptions,
    extract: ExtractOptions,
    teachers: list[BackboneSpec],
    *,
    combine: tuple[str, ...] = (),
    pairs: bool = False,
    measure: bool = False,
    reuse: bool = True,
    proxy_epochs: int | None = None,
) -> CostEstimate:
    """`w2s rank-teachers --dry-run`: each candidate's label-light predictions (and with `measure`, its
    trials; candidates: each teacher and their combinations, studies/ranking.py). `proxy_epochs` (--student
    finetune): each prediction is a proxy of that many epochs (its seconds under 'proxies'), beside the estimate
    of finetuning every candidate's student in full (`full_finetune_seconds`)."""
    runs = candidates(base, teachers, combine, pairs)
    if proxy_epochs is not None:
        check_proxy_epochs(base.finetune, proxy_epochs)
    cache = embedding_cache(out_dir, data, [o for o in runs if not o.teachers], extract, reuse)
    predictions = len(runs) * base.trials
    if proxy_epochs is None:
        return estimate(cache, runs, reuse=reuse, trials=None if measure else 0, predictions=predictions)
    # the finetuning counted is --measure's; the proxies' is added below
    counted = runs if measure else [replace(o, student=StudentKind.probe) for o in runs]
    work = estimate(cache, counted, reuse=reuse, trials=None if measure else 0, predictions=predictions)
    proxies, full = estimated_seconds(base, len(runs), proxy_epochs, work.rows)
    seconds = {**work.seconds, "proxies": proxies}
    images, prefix = work.prefix_images, 0.0
    if not measure:  # the proxies need the frozen prefix's cache too (once: trials=0 counts no fit)
        strong = {b.label: Path(b.path) if b.path else None for b in work.backbones}
        tuned = finetune_work([Fits(base.strong, base.finetune, 1, 1, 0, trials=0)], work.rows, strong)
        images, prefix = tuned.prefix_images, tuned.prefix_seconds / LOOP_EFFICIENCY
        seconds["prefix_cache"] += prefix
    return replace(
        work,
        prefix_images=images,
        seconds=seconds,
        total_seconds=work.total_seconds + prefix + proxies,
        full_finetune_seconds=full,
    )


def describe(e: CostEstimate, out_dir: Path, option: str = "--out-dir") -> list[str]:
    """The estimate as lines for stdout."""
    lines = [f"dry run: nothing extracted or written ({option} {out_dir})"]
    for b in e.backbones:
        what = "cached, 0 to embed" if b.cached else f"{b.images:,} images to embed"
        lines.append(f"  {b.label}: {what} (width {b.width}, {1 / b.seconds_per_image:,.0f} images/s here)")
    if e.trials or not e.finetune_epochs:
        lines.append(f"  trials to fit: {e.trials} (each: teacher, pseudo-labels, W2S student, strong SFT, ceiling)")
    if e.predictions:
        lines.append(f"  label-light predictions: {e.predictions}")
    if e.prefix_images:
        lines.append(f"  frozen prefix to cache: {e.prefix_images:,} images")
    if e.finetune_epochs:
        lines.append(
            f"  finetuning: {e.finetune_epochs} fit-epochs, {e.finetune_step_rows:,} rows through forward and "
            f"backward, {e.finetune_forward_rows:,} through forward alone"
        )
    if e.jobs:
        lines.append(f"  jobs: {e.jobs}")
    lines.append(f"  disk: {e.disk_bytes / 2**20:,.0f} MiB")
    parts = ", ".join(f"{k} {v:,.0f} s" for k, v in e.seconds.items() if v)
    lines.append(f"  estimated time here: {_clock(e.total_seconds)} ({parts or 'nothing to do'})")
    if e.full_finetune_seconds is not None:
        full, proxies = e.full_finetune_seconds, e.seconds.get("proxies", 0.0)
        ratio = f" ({proxies / full:.2f}x the full finetunes)" if full > 0 else ""
        lines.append(
            f"  proxies: {_clock(proxies)}{ratio}; finetuning a student per teacher in full instead: {_clock(full)}"
        )
    return lines


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"
