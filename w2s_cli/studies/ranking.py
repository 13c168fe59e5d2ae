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
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from w2s_cli.errors import W2SError, printable
from w2s_cli.numerics.solvers import fit_rows
from w2s_cli.numerics.stats import as_targets, mean_and_sem
from w2s_cli.numerics.subspaces import PrincipalBasis
from w2s_cli.numerics.variance import LabelNoise, loo_residuals
from w2s_cli.options import BackboneSpec, DataOptions, ExecutorOptions, ExtractOptions, RunOptions, SplitOptions
from w2s_cli.stages.analysis import fit_on, theory_predictions
from w2s_cli.stages.combine import MAX_STACK, combine, weights_from_loo
from w2s_cli.stages.design import gather
from w2s_cli.stages.heads import shared_basis
from w2s_cli.stages.split import draw_split, noisy_values
from w2s_cli.stages.summary import load_result, summary
from w2s_cli.store import artifact as store
from w2s_cli.store.cache import slug
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.records import COMBINE_RULES, NearTie, Predicted, RankedTeacher, Ranking, W2SErrors
from w2s_cli.studies.executors import spread
from w2s_cli.studies.run import Progress, embedding_cache, experiment, result_name, weak_paths
from w2s_cli.studies.sweep import spearman

# a candidate's entry in a ranking from its run's options and embeddings by role (weak, weak1..., strong), with
# the squared leave-one-out W2S errors of the first draw's n labelled rows (None where undefined): what
# near-ties are judged by
Predict = Callable[[RunOptions, dict[str, Path]], tuple[RankedTeacher, np.ndarray | None]]


class Draw(NamedTuple):
    """One teacher's label-light predictions on one split draw: d_w, d_s, d_sw, the predictions, and the
    squared leave-one-out W2S errors of the draw's n labelled rows (None where undefined)."""

    d_w: float
    d_s: float
    d_sw: float
    predicted: Predicted
    w2s_rows: np.ndarray | None


def predict_w2s(
    weak: str | os.PathLike | list[str | os.PathLike],
    strong: str | os.PathLike,
    options: RunOptions,
    seed: int,
    strong_bases: dict[int, PrincipalBasis] | None = None,
) -> Draw:
    """The label-light predictions for one teacher (or, `weak` a list, the combination of several by
    `options.combine`, as `w2s pseudolabel --combine` makes it) and one split draw (ridgeless heads, soft
    labels). strong_bases: the strong basis of each seed's split, shared by all teachers (filled on first use)."""
    several = isinstance(weak, list)
    weaks = [EmbeddingSet(w, "weak embeddings") for w in (weak if several else [weak])]
    emb_s = EmbeddingSet(strong, "strong embeddings")
    for emb_w in weaks:
        store.require_same_samples(emb_w.meta, emb_s.meta, f"weak {emb_w.path}", f"strong {strong}")
    emb_w = weaks[0]
    sp = SplitOptions(**{**options.split.__dict__, "seed": seed})
    s = draw_split(emb_w.n_rows, emb_w.split, sp, options.split.n_pseudo)
    noisy = noisy_values(emb_w.values(), emb_w.n_classes, sp.label_noise, seed)
    n = len(s.labeled)
    sub_w = options.weak_subspace
    bases_w = [shared_basis(e, s.train, sub_w.parsed(), sub_w.energy, n)[0] for e in weaks]
    strong_bases = {} if strong_bases is None else strong_bases
    if seed not in strong_bases:
        sub = options.strong_subspace
        strong_bases[seed] = shared_basis(emb_s, s.train, sub.parsed(), sub.energy, n)[0]
    basis_s = strong_bases[seed]
    Y_L = as_targets(noisy[s.labeled], emb_w.n_classes)
    Z_L = [b.transform(e.rows(s.labeled)) for b, e in zip(bases_w, weaks, strict=True)]
    teachers = [fit_rows(z, Y_L) for z in Z_L]
    outputs = [
        np.concatenate([t.predict(b.transform(block)) for _, block in e.chunks(s.pseudo)])
        for t, b, e in zip(teachers, bases_w, weaks, strict=True)
    ]
    weights = None
    if several:
        loo = [loo_residuals(t, z, Y_L) for t, z in zip(teachers, Z_L, strict=True)]
        weights, _ = weights_from_loo(options.combine, loo, Y_L)
    pseudo = outputs[0] if weights is None else combine(outputs, options.combine, weights)[0]
    unlabelled = np.zeros_like(pseudo)  # the N rows' labels are never read

    def targets_P(pos: np.ndarray) -> np.ndarray:
        return np.hstack([pseudo[pos], unlabelled[pos]])

    weak_side, bases_side = (weaks, bases_w) if several else (emb_w, bases_w[0])
    design = gather(emb_s, weak_side, basis_s, bases_side, s.labeled, s.pseudo, s.test, Y_L, targets_P)
    fits = {
        "w2s": fit_on(design.P, design.zs, design.y),
        "strong_sft": fit_on(design.L, design.zs, design.y),
        "ceiling": fit_on(design.train, design.zs, design.y),  # only its design enters (v_c)
    }
    out = theory_predictions(design, fits, LabelNoise(sp.label_noise, emb_w.n_classes), weights=weights)
    loo, dims = out.loo["w2s"], out.dimensions
    return Draw(dims.d_w, dims.d_s, dims.d_sw, out.predicted, None if loo is None else (loo**2).mean(axis=1))


def check_teachers(teachers: list[BackboneSpec]) -> None:
    """At least two teachers to rank, none given twice."""
    if len(teachers) < 2:
        raise W2SError("rank-teachers needs at least two --weak teachers to rank")
    if len({t.label for t in teachers}) != len(teachers):
        raise W2SError("a --weak teacher is given twice")


def candidates(
    base: RunOptions, teachers: list[BackboneSpec], combine: tuple[str, ...] = (), pairs: bool = False
) -> list[RunOptions]:
    """What rank-teachers ranks, as the options of the run each would be: every teacher alone, then under each
    `combine` rule all of them combined and, with `pairs`, every pair. A per-sample rule (confident) is refused:
    it is not linear in the teachers' labels, so it has no label-light prediction to rank by."""
    check_teachers(teachers)
    if pairs and not combine:
        raise W2SError("--pairs goes with --combine (the rule the pairs are combined by)")
    if len(set(combine)) != len(combine):
        raise W2SError("a --combine rule is given twice")
    for rule in combine:
        if rule not in ("mean", "stack"):
            why = (
                " (a per-sample rule is not linear in the teachers' labels, so it has no label-light prediction)"
                if rule in COMBINE_RULES
                else ""
            )
            raise W2SError(f"rank-teachers --combine takes mean or stack, not '{printable(rule)}'{why}")
        if rule == "stack" and len(teachers) > MAX_STACK:
            raise W2SError(f"--combine stack takes at most {MAX_STACK} teachers, not {len(teachers)}")
    groups = [list(g) for g in itertools.combinations(teachers, 2)] if pairs else []
    if len(teachers) > 2 or not pairs:  # two teachers: their pair is all of them
        groups.append(list(teachers))
    combined = [
        dataclasses.replace(base, weak=g[0], teachers=tuple(g[1:]), combine=rule) for rule in combine for g in groups
    ]
    return [base_with(base, t) for t in teachers] + combined


def candidate_label(options: RunOptions) -> str:
    """A candidate's name in the ranking: MODEL@PX, or RULE(MODEL@PX+MODEL@PX...) as a combination's record
    names it."""
    if not options.teachers:
        return options.weak.label
    return f"{options.combine}({'+'.join(s.label for s in (options.weak, *options.teachers))})"


def rank_teachers(
    out_dir: str | os.PathLike,
    data: DataOptions,
    base: RunOptions,
    extract: ExtractOptions,
    teachers: list[BackboneSpec],
    *,
    combine: tuple[str, ...] = (),
    pairs: bool = False,
    measure: bool = False,
    reuse: bool = True,
    progress: Progress | None = None,
    executor: ExecutorOptions | None = None,
    predict: Predict | None = None,
) -> Ranking:
    """Rank `teachers` (and, by each `combine` rule, all of them combined and with `pairs` every pair:
    `candidates`) by predicted W2S error (lowest first), a `Ranking`; with `measure`, also train them all
    (one job per candidate and trial when `executor` spreads them, studies/executors.py). `progress(k, K,
    candidate)` after each of the K candidates. `predict`: each candidate's entry (default: the linear
    student's label-light predictions, `_predicted_entry`)."""
    runs = candidates(base, teachers, combine, pairs)
    out_dir = Path(out_dir)
    cache = embedding_cache(out_dir, data, [o for o in runs if not o.teachers], extract, reuse)
    resume = reuse
    if measure and executor is not None and executor.spread:  # the jobs write every trial; the loop combines
        tasks = [(f"teachers/{folder_name(o)}", out_dir / "teachers" / folder_name(o), o) for o in runs]
        spread(executor, tasks, cache, extract, reuse)
        resume = True
    entries, rows, strong_bases = [], {}, {}
    if predict is None:

        def predict(options: RunOptions, paths: dict[str, Path]) -> tuple[RankedTeacher, np.ndarray | None]:
            return _predicted_entry(options, paths, strong_bases)

    for options in runs:
        paths = options.roles(cache.get)
        entry, rows[entry.weak] = predict(options, paths)
        if measure:
            folder = out_dir / "teachers" / folder_name(options)
            entry = dataclasses.replace(entry, measured=measured(paths, folder, options, resume, extract=extract))
        entries.append(entry)
        if progress is not None:
            progress(len(entries), len(runs), entry.weak)
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
    options: RunOptions, paths: dict[str, Path], strong_bases: dict[int, PrincipalBasis]
) -> tuple[RankedTeacher, np.ndarray | None]:
    """A candidate's entry in the ranking: d_w, d_s, d_sw and its label-light predictions, averaged over the
    trials' split draws; and the squared leave-one-out W2S errors of the first draw's n labelled rows."""
    weak = weak_paths(paths) if options.teachers else paths["weak"]
    seeds = [options.split.seed + t for t in range(options.trials)]
    draws = [predict_w2s(weak, paths["strong"], options, seed, strong_bases) for seed in seeds]
    errors = {k: [d.predicted.error[k] for d in draws] for k in ("weak", "w2s")}
    # the standard error of the predicted W2S error: over trials, or over the n labelled rows for one
    se = mean_and_sem(errors["w2s"])[1] if options.trials > 1 else row_sem(draws[0].w2s_rows)
    entry = RankedTeacher(
        weak=candidate_label(options),
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


def folder_name(options: RunOptions) -> str:
    """A candidate's folder in the ranking's --out-dir (teachers/NAME: its --measure trials, its proxies)."""
    return slug(candidate_label(options))


def base_with(base: RunOptions, weak: BackboneSpec) -> RunOptions:
    return RunOptions(**{**base.__dict__, "weak": weak})


def row_sem(rows: np.ndarray | None) -> float | None:
    """The standard error of a mean over the n labelled rows' squared errors (None where they are undefined)."""
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
