"""`w2s sweep`: `w2s run` over a grid of one or more varied parameters, with T trials per point.

Embeddings are extracted once per (model, input size, data) into OUT_DIR/embeddings and shared by every
point and trial; each point's trials and combined result live in OUT_DIR/points/<point>/, so a killed
sweep, rerun, computes only what is missing. The sweep is a `Sweep` record: per point its parameters and
the summary of its combined result (report/ shows it as a table, a CSV and a figure).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from enum import Enum
from pathlib import Path
from typing import Any

from w2s_cli.errors import W2SError, printable
from w2s_cli.options import (
    BackboneSpec,
    DataOptions,
    ExecutorOptions,
    ExtractOptions,
    RunOptions,
    StudentKind,
    SubspaceOptions,
    parse_subspace,
)
from w2s_cli.options.recipe import FinetuneRecipe, Loss, TrainSpec
from w2s_cli.stages.summary import load_result, summary
from w2s_cli.store.cache import slug
from w2s_cli.store.records import Summary, Sweep, SweepPoint
from w2s_cli.studies.executors import spread
from w2s_cli.studies.run import Progress, embedding_cache, experiment

PARAMETERS = (
    "n-pseudo",
    "n-labeled",
    "label-noise",
    "subspace",
    "weak-subspace",
    "strong-subspace",
    "weak",
    "strong",
    "student",
    "train",
    "loss",
    "epochs",
    "lr",
)
# the finetuning recipe's fields a sweep can vary, and how a value is read
RECIPE_FIELDS = {
    "train": ("train", lambda v: str(TrainSpec.parse(v))),
    "loss": ("loss", Loss),
    "epochs": ("epochs", int),
    "lr": ("lr", float),
}


def parse_vary(text: str) -> tuple[str, list[Any]]:
    """'n-pseudo=1000,2000' -> ('n-pseudo', [1000, 2000]), each value checked."""
    name, eq, raw = text.partition("=")
    name = name.strip()
    if not eq or name not in PARAMETERS:
        raise W2SError(
            f"--vary '{printable(text)}': expected PARAM=V1,V2,... with PARAM one of {', '.join(PARAMETERS)}"
        )
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if not values:
        raise W2SError(f"--vary {name}: no values")
    try:
        if name in ("n-pseudo", "n-labeled"):
            parsed = [int(v) for v in values]
            if min(parsed) <= 0:
                raise ValueError
        elif name == "label-noise":
            parsed = [float(v) for v in values]
            if min(parsed) < 0:
                raise ValueError
        elif name.endswith("subspace"):
            parsed = [str(v) for v in values]
            for v in parsed:
                parse_subspace(v)
        elif name == "student":
            parsed = [StudentKind(v) for v in values]
        elif name in RECIPE_FIELDS:
            field, read = RECIPE_FIELDS[name]
            parsed = [read(v) for v in values]
            for v in parsed:
                dataclasses.replace(FinetuneRecipe(), **{field: v})
        else:
            parsed = [BackboneSpec.parse(v) for v in values]
    except ValueError:
        raise W2SError(f"--vary {name}: '{printable(raw)}' holds a value that is not valid for {name}") from None
    if len(set(map(str, parsed))) != len(parsed):
        raise W2SError(f"--vary {name}: a value is repeated")
    return name, parsed


SPLIT_FIELDS = {"n-pseudo": "n_pseudo", "n-labeled": "n_labeled", "label-noise": "label_noise"}
SUBSPACE_FIELDS = {
    "subspace": ("weak_subspace", "strong_subspace"),
    "weak-subspace": ("weak_subspace",),
    "strong-subspace": ("strong_subspace",),
}


def with_value(options: RunOptions, name: str, value: Any) -> RunOptions:
    """options with one parameter set (weak/strong keep the run's weights and pretrained choice)."""
    if name in SPLIT_FIELDS:
        return dataclasses.replace(options, split=dataclasses.replace(options.split, **{SPLIT_FIELDS[name]: value}))
    if name in SUBSPACE_FIELDS:
        fields = SUBSPACE_FIELDS[name]
        return dataclasses.replace(options, **{f: SubspaceOptions(value, getattr(options, f).energy) for f in fields})
    if name == "student":
        return dataclasses.replace(options, student=value)
    if name in RECIPE_FIELDS:
        recipe = dataclasses.replace(options.finetune, **{RECIPE_FIELDS[name][0]: value})
        return dataclasses.replace(options, finetune=recipe)
    role = getattr(options, name)
    spec = dataclasses.replace(
        value, weights=role.weights if role.model == value.model else None, pretrained=role.pretrained
    )
    return dataclasses.replace(options, **{name: spec})


def label(value: Any) -> str:
    if isinstance(value, Enum):
        return value.value
    return value.label if isinstance(value, BackboneSpec) else f"{value:g}" if isinstance(value, float) else str(value)


def point_key(params: dict[str, Any]) -> str:
    return slug("_".join(f"{k}={label(v)}" for k, v in params.items()))


def points_of(base: RunOptions, varies: list[tuple[str, list[Any]]]) -> list[tuple[dict[str, Any], RunOptions]]:
    """The grid: each point's parameters and its options (the varied ones set on `base`)."""
    if not varies:
        raise W2SError("sweep needs at least one --vary PARAM=V1,V2,...")
    names = [n for n, _ in varies]
    if len(set(names)) != len(names):
        raise W2SError(f"--vary {names[0]}: given twice; give each parameter once with all its values")
    grid = []
    for combo in itertools.product(*(values for _, values in varies)):
        options, params = base, {}
        for (name, _), value in zip(varies, combo, strict=True):
            options, params[name] = with_value(options, name, value), value
        grid.append((params, options))
    return grid


def tasks_of(out_dir: Path, grid: list[tuple[dict[str, Any], RunOptions]]) -> list[tuple[str, Path, RunOptions]]:
    """Each point as an executor's task: its name, folder (OUT/points/<point>) and options."""
    return [(f"points/{point_key(p)}", out_dir / "points" / point_key(p), o) for p, o in grid]


def sweep(
    out_dir: str | os.PathLike,
    data: DataOptions,
    base: RunOptions,
    extract: ExtractOptions,
    varies: list[tuple[str, list[Any]]],
    *,
    reuse: bool = True,
    progress: Progress | None = None,
    executor: ExecutorOptions | None = None,
) -> Sweep:
    """Run every point of the grid (T trials each); return the sweep's record (its points' summaries).
    `executor`: where the trials run (studies/executors.py); by default one after another in this process."""
    names = [n for n, _ in varies]
    grid = points_of(base, varies)
    out_dir = Path(out_dir)
    cache = embedding_cache(out_dir, data, [o for _, o in grid], extract, reuse)
    resume = reuse
    if executor is not None and executor.spread:  # the jobs write every trial; the loop below combines them
        spread(executor, tasks_of(out_dir, grid), cache, extract, reuse, progress)
        progress, resume = None, True
    total, done, points = len(grid) * base.trials, 0, []
    for params, options in grid:
        key = point_key(params)
        paths = options.roles(cache.get)
        folder = out_dir / "points" / key

        def tick(trials: int, _: int, __: str, key: str = key, before: int = done) -> None:
            if progress is not None:  # the point's trials, counted among the whole sweep's
                progress(before + trials, total, key)

        path = experiment(paths, folder, options, quiet=True, progress=tick, resume=resume, extract=extract)
        done += options.trials
        params_text = {k: label(v) for k, v in params.items()}
        points.append(SweepPoint(params_text, key, str(path), summary(load_result(path))))
    correlations = None
    if any(n in ("weak", "strong") for n in names):
        correlations = overlap_correlations(points, [n for n in names if n not in ("weak", "strong")])
    return Sweep(names, base.trials, points, cache.seconds, correlations)


def overlap_correlations(points: list[SweepPoint], others: list[str]) -> dict[str, float | None]:
    """Spearman's rank correlation of PGR with d_sw/d_w across backbones, for each setting of the other
    varied parameters (e.g. once for a fixed subspace size and once for the energy rule)."""
    groups: dict[str, list[Summary]] = {}
    for p in points:
        groups.setdefault(", ".join(f"{k}={p.params[k]}" for k in others) or "all", []).append(p.summary)
    return {
        name: spearman(
            [s.theory.dimensions.overlap if s.theory else None for s in ss],
            [s.metrics.pgr for s in ss],
        )
        for name, ss in groups.items()
    }


def spearman(x: list[float | None], y: list[float | None]) -> float | None:
    """Spearman's rank correlation of the pairs where both are defined (None below three pairs)."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    if len(pairs) < 3:
        return None
    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)
