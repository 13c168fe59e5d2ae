"""`w2s rank-teachers --student finetune`: weak teachers ranked for finetuned students, without finetuning a
student per teacher in full.

Per candidate (a teacher, or teachers combined: ranking.candidates) and split draw (the draw `w2s run` makes
with the same seed): the pipeline up to its pseudo-labels, one short W2S finetune (the recipe's first
--proxy-epochs epochs, as studies/proxy.py runs it) and the label-light predictions in its after-kernel
(`in_kernel`: the linear ranking's computation there), from the n labels and unlabelled rows only.
Teachers are ordered by the predicted finetuned W2S error, not by predicted PGR: held against measurement
(docs/finetuning.md, "Held against measurement") the W2S error's miss is a bias that seeds and teachers share
(about -10%), which leaves their order alone, while PGR is over-predicted by 0.14-0.35 because the ceiling's
error is. Near-ties are judged as for linear students, by paired standard errors over the n labelled rows
(the same rows for every teacher), from the squared leave-one-out W2S errors in each teacher's after-kernel.

Each proxy is a unit of the cache (store/cache.py): an entry beside it keeps its identity, the seconds it took
and its rows' errors, so a rerun reuses it. --measure runs each teacher's finetuned pipeline through
`w2s run`'s trials (strong SFT and the ceiling through the fit cache, once per draw).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli.diagnostics.predict import after_kernel, kernel_method
from w2s_cli.distributed import main_writes
from w2s_cli.errors import W2SError
from w2s_cli.numerics.stats import mean_and_sem
from w2s_cli.options import (
    BackboneSpec,
    DataOptions,
    ExecutorOptions,
    ExtractOptions,
    RunOptions,
    StudentKind,
    SubspaceOptions,
)
from w2s_cli.options.recipe import PROXY_EPOCHS
from w2s_cli.store import artifact as store
from w2s_cli.store.cache import obtain, read_entry, write_entry
from w2s_cli.store.records import (
    Predicted,
    Proxy,
    RankedTeacher,
    Ranking,
    RankingCost,
    ResultRecord,
    W2SErrors,
    read_record,
)
from w2s_cli.studies.finetune_cost import calibrate, fit_passes
from w2s_cli.studies.proxy import check_proxy_epochs, short_finetune, short_recipe
from w2s_cli.studies.ranking import (
    Draw,
    candidate_label,
    candidates,
    folder_name,
    predict_w2s,
    rank_teachers,
    row_sem,
)
from w2s_cli.studies.run import Progress, pseudo_labels, result_name, trial_identity, weak_paths

KERNEL = "embeddings"  # the after-kernel of the proxies: the finetuned network's own embeddings (the cheap one)
PREDICTIONS = "in_kernel"  # a proxy's predictions: `in_kernel` (older proxies, by fit-student there, are redone)
NOTE = (
    "ordered by the predicted finetuned W2S error, whose miss is a bias shared by seeds and teachers (about -10% "
    "on the default), so the order holds; predicted PGR runs 0.14-0.35 above the measured one (the ceiling's "
    "error is over-predicted): shown, not ranked on (docs/finetuning.md, Held against measurement)"
)


def rank_teachers_finetuned(
    out_dir: str | os.PathLike,
    data: DataOptions,
    base: RunOptions,
    extract: ExtractOptions,
    teachers: list[BackboneSpec],
    *,
    combine: tuple[str, ...] = (),
    pairs: bool = False,
    epochs: int = PROXY_EPOCHS,
    measure: bool = False,
    reuse: bool = True,
    progress: Progress | None = None,
    executor: ExecutorOptions | None = None,
) -> Ranking:
    """Rank `teachers` (and their combinations by each `combine` rule: ranking.candidates) by the predicted
    W2S error of the student `base.finetune` would finetune (lowest first), from one proxy per candidate and
    split draw (`epochs` epochs); the cost beside the estimated cost of finetuning every candidate's student in
    full. `measure`: also finetune them all (studies/ranking.py)."""
    check_proxy_epochs(base.finetune, epochs)
    base = dataclasses.replace(base, student=StudentKind.finetune)
    runs = candidates(base, teachers, combine, pairs)
    proxies = Proxies(Path(out_dir), base, extract, epochs, reuse)
    ranking = rank_teachers(
        out_dir,
        data,
        base,
        extract,
        teachers,
        combine=combine,
        pairs=pairs,
        measure=measure,
        reuse=reuse,
        progress=progress,
        executor=executor,
        predict=proxies,
    )
    _, full = estimated_seconds(base, len(runs), epochs)
    took = finetuned_seconds(Path(out_dir), runs) if measure else None
    cost = RankingCost.of(round(proxies.seconds, 3), round(proxies.wall, 3), proxies.reused, round(full, 3), took)
    return dataclasses.replace(ranking, proxy=Proxy(base.finetune.record(), epochs, KERNEL, NOTE), cost=cost)


def finetuned_seconds(out_dir: Path, runs: list[RunOptions]) -> float:
    """The seconds --measure's finetunes took, as each candidate's trials recorded them when made (strong SFT
    and the ceiling paid for once, by the first finetune of each draw; the after-kernel predictions not counted)."""
    total = 0.0
    for options in runs:
        result = out_dir / "teachers" / folder_name(options) / result_name(options)
        total += read_record(store.load(result, "result"), ResultRecord).seconds.get("finetune", 0.0)
    return round(total, 3)


class Proxies:
    """The finetuned ranking's prediction of each teacher (a `ranking.Predict`), and what the proxies cost:
    `seconds` as measured when each was made, `wall` in this process, `reused` how many were found made."""

    def __init__(self, out_dir: Path, base: RunOptions, extract: ExtractOptions, epochs: int, reuse: bool) -> None:
        self.out_dir, self.base, self.extract, self.epochs, self.reuse = out_dir, base, extract, epochs, reuse
        self.seconds, self.wall, self.reused = 0.0, 0.0, 0

    def folder(self, options: RunOptions) -> Path:
        """A candidate's proxies, one folder per recipe and --proxy-epochs (beside --measure's trials)."""
        return self.out_dir / "teachers" / folder_name(options) / f"proxy-{self.base.finetune.key()}-e{self.epochs}"

    def __call__(self, options: RunOptions, paths: dict[str, Path]) -> tuple[RankedTeacher, np.ndarray | None]:
        """A candidate's entry: its proxies' predictions averaged over the split draws; the standard error of
        the predicted W2S error over draws (or, with one draw, over its n labelled rows); the first draw's rows."""
        begin = time.perf_counter()
        seeds = [options.split.seed + t for t in range(options.trials)]
        made = [self.proxy(paths, options, seed) for seed in seeds]
        predicted = [p.predicted for p in made]
        errors = {k: [p.error[k] for p in predicted] for k in ("weak", "w2s")}
        se = mean_and_sem(errors["w2s"])[1] if len(made) > 1 else row_sem(made[0].rows)
        entry = RankedTeacher(
            weak=candidate_label(options),
            **{k: float(np.mean([p.dimensions[k] for p in made])) for k in ("d_w", "d_s", "d_sw")},
            predicted=W2SErrors(
                error_w2s=mean_and_sem(errors["w2s"])[0],
                error_w2s_stderr=se,
                error_weak=mean_and_sem(errors["weak"])[0],
                pgr=mean_and_sem([p.pgr for p in predicted])[0],
                opr=mean_and_sem([p.opr for p in predicted])[0],
            ),
            proxy_seconds=round(sum(p.seconds for p in made), 3),
        )
        self.wall += time.perf_counter() - begin
        return entry, made[0].rows

    def proxy(self, paths: dict[str, Path], options: RunOptions, seed: int) -> MadeProxy:
        """The proxy of the split draw `seed`: reused when finished with this identity, else made."""
        target = self.folder(options) / f"trial-{seed}" / "proxy.safetensors"
        entry = target.with_name("proxy.entry.safetensors")
        identity = {
            **trial_identity(paths, options, seed),
            "proxy_epochs": self.epochs,
            "kernel": KERNEL,
            "predictions": PREDICTIONS,
        }

        def make() -> MadeProxy:
            begin = time.perf_counter()
            pseudo = pseudo_labels(paths, target.parent, options, seed)
            draws: list[Draw] = []

            def predict(made: Path) -> tuple[Predicted, dict[str, Any]]:
                """The linear ranking's computation in the short finetune's after-kernel."""
                predict_begin = time.perf_counter()
                features = after_kernel(made, kernel=KERNEL, extract=self.extract)
                weak = weak_paths(paths) if options.teachers else paths["weak"]
                draws.append(in_kernel(weak, features, options, seed))
                where = {
                    "kernel": KERNEL,
                    "epoch": "final",
                    "features": store.reference(store.load(features), made),
                    "seconds": round(time.perf_counter() - predict_begin, 3),
                }
                return dataclasses.replace(draws[0].predicted, method=kernel_method(draws[0].d_s)), where

            short_finetune(
                pseudo,
                paths["strong"],
                target,
                recipe=options.finetune,
                epochs=self.epochs,
                subspace=options.strong_subspace,
                extract=self.extract,
                kernel=KERNEL,
                predict=predict,
            )
            draw = draws[0]
            kept = {
                "result": target.name,
                "artifact_id": store.read_meta(target)["artifact_id"],
                "dimensions": {"d_w": draw.d_w, "d_s": draw.d_s, "d_sw": draw.d_sw},
                "seconds": round(time.perf_counter() - begin, 3),
            }
            arrays = {} if draw.w2s_rows is None else {"w2s_rows": draw.w2s_rows}
            main_writes(lambda: write_entry(entry, identity, kept, arrays), entry)
            return MadeProxy.read(target, kept, arrays.get("w2s_rows"))

        def look() -> MadeProxy | None:
            found = read_entry(entry, identity)
            try:
                same = found is not None and store.read_meta(target)["artifact_id"] == found.made["artifact_id"]
            except (W2SError, KeyError, TypeError):
                return None
            return MadeProxy.read(target, found.made, found.arrays.get("w2s_rows"), reused=True) if same else None

        say = "the proxy of the same teacher, draw, recipe and --proxy-epochs"
        made = obtain(target.parent, look, make, reuse=self.reuse, say=lambda p: f"{p.path} ({say})")
        self.seconds += made.seconds
        self.reused += made.reused
        return made


@dataclasses.dataclass(frozen=True)
class MadeProxy:
    """One finished proxy: its result, its predictions (diagnostics/predict.py), the dimensions in its
    after-kernel, the squared leave-one-out W2S errors of its n labelled rows, the seconds it took."""

    path: Path
    predicted: Predicted
    dimensions: dict[str, float]
    rows: np.ndarray | None
    seconds: float
    reused: bool = False

    @classmethod
    def read(cls, path: Path, made: dict[str, Any], rows: np.ndarray | None, reused: bool = False) -> MadeProxy:
        predicted = read_record(store.load(path, "result"), ResultRecord).trials[0].predicted
        return cls(path, predicted, made["dimensions"], rows, made["seconds"], reused)


def in_kernel(
    weak: str | os.PathLike | list[str | os.PathLike], features: str | os.PathLike, options: RunOptions, seed: int
) -> Draw:
    """The linear ranking's computation (ranking.predict_w2s) with a proxy's after-kernel `features` as the strong
    embeddings, in the basis its predictions used (fit-student's auto): the dimensions and the squared
    leave-one-out W2S errors of the n labelled rows, which read no label of the pool or of the test rows.
    `weak` a list: the teachers `options.combine` combines."""
    return predict_w2s(weak, features, dataclasses.replace(options, strong_subspace=SubspaceOptions("auto")), seed)


def estimated_seconds(base: RunOptions, teachers: int, epochs: int, rows: int | None = None) -> tuple[float, float]:
    """Seconds here (studies/finetune_cost.py's calibration of the strong network's trained part) of the
    proxies (per teacher and split draw, a W2S fit of `epochs` epochs and the after-kernel's forward pass over
    the `rows` samples; 0 when rows is None), and of finetuning every teacher's student in full (per draw a W2S
    fit per teacher, strong SFT and the ceiling once: the fit cache shares them). The frozen prefix's cache,
    which both need once, is in neither."""
    cut = calibrate(base.strong, base.finetune.spec)
    sp, recipe = base.split, base.finetune

    def fit(n_rows: int, r: Any) -> float:
        step, forward = fit_passes(n_rows, r, sp.n_test)
        return step * cut.step + forward * cut.forward

    full = base.trials * (teachers * fit(sp.n_pseudo, recipe) + fit(sp.n_labeled, recipe))
    full += base.trials * fit(sp.n_labeled + sp.n_pseudo, recipe)
    kernel = 0.0 if rows is None else rows * cut.forward
    proxies = base.trials * teachers * (fit(sp.n_pseudo, short_recipe(recipe, epochs)) + kernel)
    return proxies, full
