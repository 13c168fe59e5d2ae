"""The finetuning share of `--dry-run` (studies/cost.py): the frozen prefix's cache and the three fits of each
trial, timed by a few batches through the cut network on this machine.

Per strong backbone and cut (`--train last:K`), the frozen prefix runs once over every row of the strong
embeddings (its cache is shared by fits, trials and points, and costs nothing once on disk). Per trial, each
fit of R rows (W2S: N, strong SFT: n, ceiling: n + N) takes `epochs` passes of forward and backward over its
R - round(val_fraction R) training rows, a forward over its validation rows before and after every epoch,
and a forward over the test rows before and after training. `head` trains the linear head on the embeddings
(no prefix, no network pass); `lora:R` and `all` pass images through the whole network (their timm
transforms are not timed).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2s_cli.options import BackboneSpec
from w2s_cli.options.recipe import FinetuneRecipe, TrainSpec
from w2s_cli.store.records import CostEstimate

BATCH = 64  # the default --ft-batch-size
REPEATS = 6  # timed calls of each part; the best one counts (the machine may be shared)


@dataclass(frozen=True)
class CutCost:
    """Seconds per row of one backbone's parts when cut for one `--train` spec, measured here."""

    cached: bool  # whether the frozen prefix's outputs are cached (last:K)
    prefix: float  # the frozen prefix's forward, per image
    forward: float  # the trained part's forward, per row
    step: float  # the trained part's forward and backward, per row
    row_bytes: int  # bytes of one row of the prefix's cache
    trained_parameters: int
    cut_record: dict | None = None  # where the network is cut (names the cache: stages/finetune.prefix_cache_path)


def _best(fn: Any, repeats: int = REPEATS) -> float:
    """The best of `repeats` timed calls after a warm-up call of the same shapes."""
    fn()
    times = []
    for _ in range(repeats - 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@functools.cache
def calibrate(spec: BackboneSpec, train: TrainSpec) -> CutCost:
    """Time a batch of random images through the prefix, and its activations through the trained part (forward,
    and forward with backward), with random weights (the speed does not depend on them). Timed once per
    process, so that the estimates one process makes (a dry run adds several) rest on the same timing."""
    import torch

    from w2s_cli.finetuning.network import cut
    from w2s_cli.inputs.backbones import create_backbone

    bb = create_backbone(BackboneSpec(spec.model, spec.image_size, pretrained=False))
    c = cut(bb.model, train, bb.name)
    x = torch.randn(BATCH, *bb.input_size)
    with torch.inference_mode():
        a = c.prefix(x)
    cached = c.record["input"] == "activations"
    prefix = _best(lambda: c.prefix(x)) / BATCH if cached else 0.0
    if c.record["input"] == "embeddings":  # the head alone: a (rows x width) product, nothing to time
        return CutCost(False, 0.0, 0.0, 0.0, 0, sum(p.numel() for p in c.trained))
    a = a.clone()

    def step() -> None:
        c.suffix(a).square().sum().backward()

    with torch.inference_mode():
        forward = _best(lambda: c.suffix(a)) / BATCH
    seconds = _best(step) / BATCH
    trained = sum(p.numel() for m in c.trained for p in m.parameters())
    if not cached:
        return CutCost(False, 0.0, forward, seconds, 0, int(trained))
    return CutCost(True, prefix, forward, seconds, int(a[0].numel()) * 4, int(trained), c.record)


def fit_passes(rows: int, recipe: FinetuneRecipe, n_test: int) -> tuple[int, int]:
    """(rows through forward and backward, rows through forward alone) of one fit of `rows` rows."""
    val = int(round(recipe.val_fraction * rows))
    return (rows - val) * recipe.epochs, val * (recipe.epochs + 1) + 2 * n_test


def trial_passes(n_labeled: int, n_pseudo: int, recipe: FinetuneRecipe, n_test: int) -> tuple[int, int]:
    """The passes of one trial's three fits: W2S (N rows), strong SFT (n) and ceiling (n + N)."""
    fits = [fit_passes(r, recipe, n_test) for r in (n_pseudo, n_labeled, n_labeled + n_pseudo)]
    return sum(f[0] for f in fits), sum(f[1] for f in fits)


@dataclass(frozen=True)
class Fits:
    """The finetuned trials of one run or point: the strong network, the recipe and the split's sizes."""

    strong: BackboneSpec
    recipe: FinetuneRecipe
    n_labeled: int
    n_pseudo: int
    n_test: int
    trials: int = 1


@dataclass(frozen=True)
class FinetuneWork:
    """The finetuning share of an estimate: images through the frozen prefix to cache and their seconds, rows
    through forward and backward and through forward alone, the fits' seconds, the disk (caches, weights)."""

    prefix_images: int = 0
    prefix_seconds: float = 0.0
    step_rows: int = 0
    forward_rows: int = 0
    fit_seconds: float = 0.0
    disk_bytes: int = 0


def finetune_work(items: list[Fits], rows: int, strong: dict[str, Path | None]) -> FinetuneWork:
    """The finetuning of `items`: the prefix caches to build over `rows` images (none where one is already
    beside the strong embeddings, `strong`: their path by backbone label, None when not extracted yet), the
    fits' passes, their seconds and disk."""
    costs: dict[tuple[str, str], CutCost] = {}
    out = {"prefix_images": 0, "step_rows": 0, "forward_rows": 0, "prefix_seconds": 0.0, "fit_seconds": 0.0}
    out["disk_bytes"] = 0
    for f in items:
        key = (f.strong.label, str(f.recipe.spec))
        if key not in costs:
            costs[key] = c = calibrate(f.strong, f.recipe.spec)
            path = strong.get(f.strong.label)
            if c.cached and (path is None or not _cache_exists(path, c.cut_record)):
                out["prefix_images"] += rows
                out["prefix_seconds"] += rows * c.prefix
                out["disk_bytes"] += rows * c.row_bytes
        c = costs[key]
        step, forward = trial_passes(f.n_labeled, f.n_pseudo, f.recipe, f.n_test)
        out["step_rows"] += f.trials * step
        out["forward_rows"] += f.trials * forward
        out["fit_seconds"] += f.trials * (step * c.step + forward * c.forward)
        out["disk_bytes"] += f.trials * 3 * c.trained_parameters * 4  # each fit's trained weights (float32)
    return FinetuneWork(**out)


def estimate_finetune(pseudo_path: str | Path, strong: str | Path, recipe: FinetuneRecipe) -> CostEstimate:
    """`w2s finetune --dry-run`: the work of the three fits on these pseudo-labels, in studies/cost.py's form."""
    from w2s_cli.errors import printable
    from w2s_cli.finetuning.network import spec_from_record
    from w2s_cli.stages.finetune import training_sets
    from w2s_cli.store import artifact as store
    from w2s_cli.store.embeddings import EmbeddingSet

    pseudo = store.load(pseudo_path, "pseudolabels", what="pseudo-labels")
    emb_s = EmbeddingSet(strong, "strong embeddings")
    store.require_same_samples(
        pseudo.meta, emb_s.meta, f"pseudo-labels {printable(pseudo.path)}", f"strong embeddings {printable(strong)}"
    )
    fits = training_sets(pseudo, emb_s)
    spec = spec_from_record(emb_s.meta)[0]
    n, N = len(fits["strong_sft"].rows), len(fits["w2s"].rows)
    item = Fits(spec, recipe, n, N, len(pseudo["test_rows"]))
    work = finetune_work([item], emb_s.n_rows, {spec.label: emb_s.path})
    seconds = {"prefix_cache": work.prefix_seconds, "finetuning": work.fit_seconds}
    return CostEstimate(
        backbones=(),
        rows=emb_s.n_rows,
        trials=0,
        predictions=0,
        prefix_images=work.prefix_images,
        finetune_epochs=recipe.epochs * 3,
        finetune_step_rows=work.step_rows,
        finetune_forward_rows=work.forward_rows,
        jobs=0,
        disk_bytes=int(work.disk_bytes),
        seconds=seconds,
        total_seconds=sum(seconds.values()),
    )


def _cache_exists(strong: Path, cut_record: dict) -> bool:
    from w2s_cli.finetuning.prefix import prefix_cache_path

    return prefix_cache_path(strong, cut_record).exists()
