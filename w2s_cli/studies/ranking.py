"""`w2s rank-teachers`: which weak teacher will transfer best, before paying for students.

Every candidate is scored from the n labelled rows and unlabelled embeddings only (no test label, no label
of the N pseudo rows): the label-light predictions of the W2S student's error, PGR and OPR
(stages/analysis.py). The split is the one `w2s run` would draw with the same seed, so `--measure`
(which trains every pipeline) compares like with like. Candidates share the labelled rows, so the
ranking's near-ties are judged by paired standard errors over those rows. Finetuned students
(studies/rank_finetune.py) go through the same ranking with their own prediction of each teacher (`Predict`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from w2s_cli.errors import W2SError
from w2s_cli.numerics.solvers import fit_rows
from w2s_cli.numerics.stats import as_targets, mean_and_sem
from w2s_cli.numerics.subspaces import PrincipalBasis
from w2s_cli.numerics.variance import LabelNoise
from w2s_cli.options import BackboneSpec, DataOptions, ExecutorOptions, ExtractOptions, RunOptions, SplitOptions
from w2s_cli.stages.analysis import fit_on, theory_predictions
from w2s_cli.stages.design import gather
from w2s_cli.stages.heads import shared_basis
from w2s_cli.stages.split import draw_split, noisy_values
from w2s_cli.stages.summary import load_result, summary
from w2s_cli.store import artifact as store
from w2s_cli.store.cache import slug
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.records import NearTie, Predicted, RankedTeacher, Ranking, W2SErrors
from w2s_cli.studies.executors import spread
from w2s_cli.studies.run import Progress, embedding_cache, experiment, result_name
from w2s_cli.studies.sweep import spearman

# a teacher's entry in a ranking from its weak and the strong embeddings, with the squared leave-one-out W2S
# errors of the first draw's n labelled rows (None where undefined): what near-ties are judged by
Predict = Callable[[BackboneSpec, Path, Path], tuple[RankedTeacher, np.ndarray | None]]


class Draw(NamedTuple):
    """One teacher's label-light predictions on one split draw: d_w, d_s, d_sw, the predictions, and the
    squared leave-one-out W2S errors of the draw's n labelled rows (None where undefined)."""

    d_w: float
    d_s: float
    d_sw: float
    predicted: Predicted
    w2s_rows: np.ndarray | None


def predict_w2s(
    weak: str | os.PathLike,
    strong: str | os.PathLike,
    options: RunOptions,
    seed: int,
    strong_bases: dict[int, PrincipalBasis] | None = None,
) -> Draw:
    """The label-light predictions for one teacher and one split draw (ridgeless heads, soft labels).
    strong_bases: the strong basis of each seed's split, shared by all teachers (filled on first use)."""
    emb_w, emb_s = EmbeddingSet(weak, "weak embeddings"), EmbeddingSet(strong, "strong embeddings")
    store.require_same_samples(emb_w.meta, emb_s.meta, f"weak {weak}", f"strong {strong}")
    sp = SplitOptions(**{**options.split.__dict__, "seed": seed})
    s = draw_split(emb_w.n_rows, emb_w.split, sp, options.split.n_pseudo)
    noisy = noisy_values(emb_w.values(), emb_w.n_classes, sp.label_noise, seed)
    n = len(s.labeled)
    basis_w, _, _ = shared_basis(emb_w, s.train, options.weak_subspace.parsed(), options.weak_subspace.energy, n)
    strong_bases = {} if strong_bases is None else strong_bases
    if seed not in strong_bases:
        sub = options.strong_subspace
        strong_bases[seed] = shared_basis(emb_s, s.train, sub.parsed(), sub.energy, n)[0]
    basis_s = strong_bases[seed]
    Y_L = as_targets(noisy[s.labeled], emb_w.n_classes)
    teacher = fit_rows(basis_w.transform(emb_w.rows(s.labeled)), Y_L)
    pseudo = np.concatenate([teacher.predict(basis_w.transform(block)) for _, block in emb_w.chunks(s.pseudo)])
    unlabelled = np.zeros_like(pseudo)  # the N rows' labels are never read

    def targets_P(pos: np.ndarray) -> np.ndarray:
        return np.hstack([pseudo[pos], unlabelled[pos]])

    design = gather(emb_s, emb_w, basis_s, basis_w, s.labeled, s.pseudo, s.test, Y_L, targets_P)
    fits = {
        "w2s": fit_on(design.P, design.zs, design.y),
        "strong_sft": fit_on(design.L, design.zs, design.y),
        "ceiling": fit_on(design.train, design.zs, design.y),  # only its design enters (v_c)
    }
    out = theory_predictions(design, fits, LabelNoise(sp.label_noise, emb_w.n_classes))
    loo, dims = out.loo["w2s"], out.dimensions
    return Draw(dims.d_w, dims.d_s, dims.d_sw, out.predicted, None if loo is None else (loo**2).mean(axis=1))


def check_teachers(teachers: list[BackboneSpec]) -> None:
    """At least two teachers to rank, none given twice."""
    if len(teachers) < 2:
        raise W2SError("rank-teachers needs at least two --weak teachers to rank")
    if len({t.label for t in teachers}) != len(teachers):
        raise W2SError("a --weak teacher is given twice")


def rank_teachers(
    out_dir: str | os.PathLike,
    data: DataOptions,
    base: RunOptions,
    extract: ExtractOptions,
    teachers: list[BackboneSpec],
    *,
    measure: bool = False,
    reuse: bool = True,
    progress: Progress | None = None,
    executor: ExecutorOptions | None = None,
    predict: Predict | None = None,
) -> Ranking:
    """Rank `teachers` by predicted W2S error (lowest first), a `Ranking`; with `measure`, also train them all
    (one job per teacher and trial when `executor` spreads them, studies/executors.py). `progress(k, K, teacher)`
    after each of the K teachers. `predict`: each teacher's entry (default: the linear student's label-light
    predictions, `_predicted_entry`)."""
    check_teachers(teachers)
    out_dir = Path(out_dir)
    cache = embedding_cache(out_dir, data, [base], extract, reuse)
    resume = reuse
    if measure and executor is not None and executor.spread:  # the jobs write every trial; the loop combines
        tasks = [
            (f"teachers/{folder_name(t)}", out_dir / "teachers" / folder_name(t), base_with(base, t)) for t in teachers
        ]
        spread(executor, tasks, cache, extract, reuse)
        resume = True
    strong = cache.get(base.strong)
    entries, rows, strong_bases = [], {}, {}
    if predict is None:

        def predict(spec: BackboneSpec, weak: Path, strong: Path) -> tuple[RankedTeacher, np.ndarray | None]:
            return _predicted_entry(spec, weak, strong, base, strong_bases)

    for spec in teachers:
        weak = cache.get(spec)
        entry, rows[spec.label] = predict(spec, weak, strong)
        if measure:
            folder = out_dir / "teachers" / folder_name(spec)
            paths = {"weak": weak, "strong": strong}
            entry = dataclasses.replace(
                entry, measured=measured(paths, folder, base_with(base, spec), resume, extract=extract)
            )
        entries.append(entry)
        if progress is not None:
            progress(len(entries), len(teachers), spec.label)
    entries.sort(key=lambda e: (e.predicted.error_w2s is None, e.predicted.error_w2s or 0.0))
    spearman_rho, miss = _prediction_quality(entries) if measure else (None, None)
    return Ranking(
        strong=base.strong.label,
        n_labeled=base.split.n_labeled,
        n_pseudo=base.split.n_pseudo,
        trials=base.trials,
        teachers=tuple(entries),
        near_ties=tuple(near_ties(entries, rows)),
        spearman=spearman_rho,
        max_relative_error=miss,
    )


def _predicted_entry(
    spec: BackboneSpec,
    weak: Path,
    strong: Path,
    base: RunOptions,
    strong_bases: dict[int, PrincipalBasis],
) -> tuple[RankedTeacher, np.ndarray | None]:
    """A teacher's entry in the ranking: d_w, d_s, d_sw and its label-light predictions, averaged over the
    trials' split draws; and the squared leave-one-out W2S errors of the first draw's n labelled rows."""
    draws = [predict_w2s(weak, strong, base, base.split.seed + t, strong_bases) for t in range(base.trials)]
    errors = {k: [d.predicted.error[k] for d in draws] for k in ("weak", "w2s")}
    # the standard error of the predicted W2S error: over trials, or over the n labelled rows for one
    se = mean_and_sem(errors["w2s"])[1] if base.trials > 1 else _row_sem(draws[0].w2s_rows)
    entry = RankedTeacher(
        weak=spec.label,
        **{k: float(np.mean([getattr(d, k) for d in draws])) for k in ("d_w", "d_s", "d_sw")},
        predicted=W2SErrors(
            error_w2s=mean_and_sem(errors["w2s"])[0],
            error_w2s_stderr=se,
            error_weak=mean_and_sem(errors["weak"])[0],
            pgr=mean_and_sem([d.predicted.pgr for d in draws])[0],
            opr=mean_and_sem([d.predicted.opr for d in draws])[0],
        ),
    )
    return entry, draws[0].w2s_rows


def _prediction_quality(entries: list[RankedTeacher]) -> tuple[float | None, float | None]:
    """How the predicted W2S errors of measured teachers compare with the measured ones: their Spearman rank
    correlation and the largest relative error."""
    pred = [e.predicted.error_w2s for e in entries]
    meas = [e.measured.error_w2s for e in entries]
    miss = max((abs(p - m) / m for p, m in zip(pred, meas, strict=True) if p is not None and m), default=None)
    return spearman(pred, meas), miss


def measured(
    paths: dict[str, Path],
    folder: Path,
    options: RunOptions,
    resume: bool,
    *,
    extract: ExtractOptions | None = None,
) -> W2SErrors:
    """The W2S error (with its standard error), the weak error, PGR and OPR of a teacher's whole pipeline
    (linear or finetuned students, by `options.student`; `extract`: where a finetune runs)."""
    quiet = dataclasses.replace(extract, quiet=True) if extract is not None else None
    out = folder / result_name(options)
    made = experiment(paths, folder, options, out=out, quiet=True, resume=resume, extract=quiet)
    m = summary(load_result(made)).metrics
    return W2SErrors(m.error["w2s"], m.error_stderr["w2s"], m.error["weak"], m.pgr, m.opr)


def folder_name(spec: BackboneSpec) -> str:
    return slug(spec.label)


def base_with(base: RunOptions, weak: BackboneSpec) -> RunOptions:
    return RunOptions(**{**base.__dict__, "weak": weak})


def _row_sem(rows: np.ndarray | None) -> float | None:
    return None if rows is None else mean_and_sem(rows.tolist())[1]


def near_ties(entries: list[RankedTeacher], rows: dict[str, np.ndarray | None]) -> list[NearTie]:
    """Neighbours in the ranking whose predicted W2S errors differ by less than two paired standard errors
    over the shared labelled rows: their order is not settled by the n labels."""
    ties = []
    for a, b in zip(entries, entries[1:], strict=False):
        ra, rb = rows.get(a.weak), rows.get(b.weak)
        if ra is None or rb is None:
            continue
        diff, se = mean_and_sem((rb - ra).tolist())
        if se is not None and abs(diff) < 2 * se:
            ties.append(NearTie((a.weak, b.weak), diff, se))
    return ties
