"""The summary of a `result` artifact (one trial or several): measured errors, PGR and OPR with standard
errors, and what the theory explains (dimensions, exact-design variance, decomposition, label-light
predictions, the variance-only prediction), as one `Summary` record (`to_json()`: what report --json prints)."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from w2s_cli.errors import W2SError
from w2s_cli.numerics import theory
from w2s_cli.numerics.stats import MODELS, mean_and_sem, opr_from_rows, pgr_from_rows, summarize_trials
from w2s_cli.store import artifact as store
from w2s_cli.store.records import (
    Analysis,
    Decomposition,
    Dimensions,
    Metrics,
    Predicted,
    ResultRecord,
    Summary,
    TheorySummary,
    VarianceOnly,
    VarianceRow,
    read_record,
)


def load_result(path: str | os.PathLike) -> ResultRecord:
    """The record of a result artifact, checked (a record that does not fit is one error naming the field)."""
    return read_record(store.load(path, "result", what="result"), ResultRecord)


def _mean(values: list) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def _over_trials(metrics: list[Metrics], n_test: int) -> Metrics:
    """The trials' metrics averaged (numerics.stats.summarize_trials), with the result's n_test."""
    out = summarize_trials([{**m.to_json(), "n_test": n_test} for m in metrics])
    return Metrics.from_json({**out, "n_test": n_test})


def summary(result: ResultRecord) -> Summary:
    """What the report says about a result: its trials averaged, the theory beside them."""
    trials = result.trials
    starts = [t.init for t in trials]
    analyses = [t.analysis for t in trials]
    pla = [t.pseudo_label_accuracy for t in trials]
    weak_size, strong_size = result.input_sizes
    measured = _over_trials([t.metrics for t in trials], result.n_test)
    return Summary(
        metrics=measured,
        n_labeled=result.n_labeled,
        n_pseudo=result.n_pseudo,
        dataset=result.dataset["name"],
        task=result.task,
        weak_model=result.weak_model,
        weak_input_size=weak_size,
        strong_model=result.strong_model,
        strong_input_size=strong_size,
        solver=result.solver,
        labels=result.labels,
        subspace=result.subspace,
        label_noise=result.label_noise,
        fits=result.fits,
        seconds=result.seconds,
        seeds=[t.seed for t in trials],
        student=result.student,
        # a finetuned student: its LP-FT start (epoch 0) measured alike
        init=_over_trials(starts, result.n_test) if result.student and all(starts) else None,
        pseudo_label_accuracy=float(np.mean(pla)) if all(p is not None for p in pla) else None,
        theory=theory_summary(analyses, result) if all(analyses) else None,
        analysis_note=None if all(analyses) else result.analysis_note or "not analysed",
        predicted=_predicted([t.predicted for t in trials]) if all(t.predicted for t in trials) else None,
    )


def theory_summary(analyses: list[Analysis], result: ResultRecord) -> TheorySummary:
    """Dimensions, variance, decomposition and predictions, averaged over trials; the label-light PGR/OPR from
    the mean predicted errors with their standard error over trials (the measured headline's estimator)."""
    dims = Dimensions(
        **{k: _mean([getattr(a.dimensions, k) for a in analyses]) for k in Dimensions.NUMBERS},
        m=analyses[0].dimensions.m,
        basis=result.subspace,
    )
    variance = {}
    for k in MODELS:
        exact = _mean([a.variance[k].exact for a in analyses])
        paper = _mean([a.variance[k].theory for a in analyses])
        variance[k] = VarianceRow(exact, paper, None if not paper or exact is None else exact / paper)
    decomposition = {}
    if all(a.decomposition for a in analyses):
        for k in MODELS:
            parts = [a.decomposition[k] for a in analyses]
            inherited = parts[0].bias_inherited is not None
            decomposition[k] = Decomposition(
                **{
                    f.name: _mean([getattr(p, f.name) for p in parts])
                    for f in dataclasses.fields(Decomposition)
                    if inherited or not f.name.startswith("bias_")
                }
            )
    return TheorySummary(
        dimensions=dims,
        variance=variance,
        decomposition=decomposition,
        predicted=_predicted([a.predicted for a in analyses]),
        near_interpolation=sorted({k for a in analyses for k in a.near_interpolation}),
        sigma2={k: _mean([a.sigma2[k] for a in analyses]) for k in ("weak", "strong")},
        theory=variance_only(dims, result.n_labeled, result.n_pseudo),
        decomposition_note=next((a.decomposition_note for a in analyses if a.decomposition_note), None),
    )


def _predicted(trials: list[Predicted]) -> Predicted:
    """The label-light predictions over trials: mean errors; PGR and OPR from the mean errors with their
    paired standard error over trials (one trial: its own)."""
    pred_errors = {k: [p.error[k] for p in trials] for k in MODELS}
    ok = all(v is not None for vals in pred_errors.values() for v in vals)
    over = ok and len(trials) > 1
    ratios: dict[str, Any] = {}
    if over:
        e = {k: np.array(v, dtype=float) for k, v in pred_errors.items()}
        ratios["pgr"], ratios["pgr_stderr"] = pgr_from_rows(e["weak"], e["w2s"], e["ceiling"])
        ratios["opr"], ratios["opr_stderr"] = opr_from_rows(e["strong_sft"], e["w2s"])
    else:
        ratios["pgr"] = _mean([p.pgr for p in trials])
        ratios["opr"] = _mean([p.opr for p in trials])
    misfit = trials[0].misfit is not None
    return Predicted(
        error={k: _mean(v) for k, v in pred_errors.items()},
        error_stderr={k: mean_and_sem(v)[1] for k, v in pred_errors.items()},
        method=trials[0].method,
        over_trials=over,
        **ratios,
        misfit=_mean([p.misfit for p in trials]) if misfit else None,
        error_w2s_by_misfit=_mean([p.error_w2s_by_misfit for p in trials]) if misfit else None,
    )


def variance_only(dims: Dimensions, n: int, N: int) -> VarianceOnly:
    """The paper's variance-only prediction of PGR and OPR from the measured d_s, d_w, d_sw (exact formulas),
    or the reason it does not apply."""
    d_s, d_w, d_sw = dims.d_s, dims.d_w, min(dims.d_sw, dims.d_s, dims.d_w)
    inputs = {"d_s": d_s, "d_w": d_w, "d_sw": d_sw, "n": n, "N": N}
    try:
        pred = theory.predict(d_s, d_w, d_sw, n, N, 1.0, exact=True)
    except W2SError as exc:
        return VarianceOnly(inputs, available=False, note=exc.message)
    return VarianceOnly(inputs, True, pred["pgr"], pred["opr"], theory.limits(d_s, d_w, d_sw))
