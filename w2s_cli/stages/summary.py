"""The measured metrics of one trial (`evaluate`: errors, accuracies, PGR and OPR on its test rows, a `Metrics`
record) and the summary of a `result` artifact (one trial or several): measured errors, PGR and OPR with
standard errors, and what the theory explains (dimensions, exact-design variance, decomposition, label-light
predictions, the variance-only prediction), as one `Summary` record (`to_json()`: what report --json prints)."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from w2s_cli.errors import W2SError
from w2s_cli.numerics import theory
from w2s_cli.numerics.stats import (
    MODELS,
    accuracy,
    mean_and_sem,
    opr_from_rows,
    pgr_from_rows,
    sem,
    squared_errors,
)
from w2s_cli.store import artifact as store
from w2s_cli.store.records import (
    Analysis,
    Decomposition,
    Dimensions,
    MemberError,
    Metrics,
    Predicted,
    ResultRecord,
    SeveralTeachers,
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


def evaluate(outputs: dict[str, np.ndarray], truth: np.ndarray, labels: np.ndarray | None) -> Metrics:
    """Errors with standard errors, accuracies, PGR and OPR (paired delta-method standard errors over the
    test rows) of the four models on one test split.

    outputs: model -> (m, C) test outputs; truth: (m, C) one-hot labels or (m, 1) targets; labels: (m,) or None.
    """
    per_row = {k: squared_errors(outputs[k], truth) for k in MODELS}
    m = len(truth)
    pgr, pgr_stderr = pgr_from_rows(per_row["weak"], per_row["w2s"], per_row["ceiling"])
    opr, opr_stderr = opr_from_rows(per_row["strong_sft"], per_row["w2s"])
    right = None if labels is None else {k: np.asarray(outputs[k]).argmax(axis=1) == labels for k in MODELS}
    return Metrics(
        error={k: float(v.mean()) for k, v in per_row.items()},
        error_stderr={k: (float(sem(v)) if m > 1 else None) for k, v in per_row.items()},
        pgr=pgr,
        pgr_stderr=pgr_stderr,
        opr=opr,
        opr_stderr=opr_stderr,
        n_test=m,
        accuracy=None if labels is None else {k: accuracy(outputs[k], labels) for k in MODELS},
        accuracy_stderr=None
        if right is None
        else {k: float(sem(right[k].astype(float))) if m > 1 else None for k in MODELS},
    )


def over_trials(metrics: list[Metrics], n_test: int) -> Metrics:
    """Mean and standard error of every metric over trials, with the result's n_test (T = 1: the trial itself,
    se over test rows).

    PGR and OPR over T > 1 trials come from one estimator: the ratio of the mean errors, with its paired
    delta-method standard error over trials.
    """
    if len(metrics) == 1:
        return dataclasses.replace(metrics[0], n_test=n_test, trials=1)
    err = {k: [t.error[k] for t in metrics] for k in MODELS}
    pgr, pgr_stderr = pgr_from_rows(np.array(err["weak"]), np.array(err["w2s"]), np.array(err["ceiling"]))
    opr, opr_stderr = opr_from_rows(np.array(err["strong_sft"]), np.array(err["w2s"]))
    acc = None if metrics[0].accuracy is None else {k: [t.accuracy[k] for t in metrics] for k in MODELS}
    return Metrics(
        error={k: mean_and_sem(v)[0] for k, v in err.items()},
        error_stderr={k: mean_and_sem(v)[1] for k, v in err.items()},
        pgr=pgr,
        pgr_stderr=pgr_stderr,
        opr=opr,
        opr_stderr=opr_stderr,
        n_test=n_test,
        accuracy=None if acc is None else {k: mean_and_sem(v)[0] for k, v in acc.items()},
        accuracy_stderr=None if acc is None else {k: mean_and_sem(v)[1] for k, v in acc.items()},
        trials=len(metrics),
    )


def member_errors(pseudo: Any, truth: np.ndarray, labels: np.ndarray | None) -> tuple[MemberError, ...] | None:
    """Each combined teacher's test error and accuracy (with standard errors over the test rows), from the
    members' test outputs the combined pseudo-labels keep; None for one teacher."""
    made = pseudo.record
    if getattr(made, "combination", None) is None:
        return None
    out = []
    for k, m in enumerate(made.combination.members):
        f = np.asarray(pseudo[f"member{k}_test_output"], np.float64)
        rows = squared_errors(f, truth)
        right = None if labels is None else (f.argmax(axis=1) == labels).astype(float)
        out.append(
            MemberError(
                label=m.label,
                error=float(rows.mean()),
                error_stderr=float(sem(rows)) if len(rows) > 1 else None,
                accuracy=None if right is None else float(right.mean()),
                accuracy_stderr=None if right is None or len(right) < 2 else float(sem(right)),
            )
        )
    return tuple(out)


def members_over_trials(trials: list[tuple[MemberError, ...] | None]) -> tuple[MemberError, ...] | None:
    """Each member's error and accuracy over trials (T = 1: the trial's, se over test rows)."""
    if not trials or any(t is None for t in trials):
        return None
    if len(trials) == 1:
        return trials[0]
    out = []
    for k, first in enumerate(trials[0]):
        err = mean_and_sem([t[k].error for t in trials])
        acc = None if first.accuracy is None else mean_and_sem([t[k].accuracy for t in trials])
        out.append(MemberError(first.label, err[0], err[1], *(acc or (None, None))))
    return tuple(out)


def teachers_over_trials(analyses: list[Analysis | None]) -> SeveralTeachers | None:
    """A combination's dimensions and overlaps, the mean over trials (every trial has the same members)."""
    several = [a.teachers for a in analyses if a is not None and a.teachers is not None]
    if not several or len(several) != len(analyses):
        return None

    def mean(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else float(np.mean(values))

    first = several[0]
    members = tuple(
        dataclasses.replace(
            m,
            **{
                f: mean([getattr(t.members[k], f) for t in several])
                for f in ("d_w", "d_sw", "d_sw_corrected", "variance_exact")
            },
        )
        for k, m in enumerate(first.members)
    )
    pairs = tuple(
        dataclasses.replace(
            p, **{f: mean([getattr(t.pairs[k], f) for t in several]) for f in ("d_ww", "d_ww_null", "d_ww_corrected")}
        )
        for k, p in enumerate(first.pairs)
    )
    return dataclasses.replace(
        first,
        members=members,
        pairs=pairs,
        variance_exact=mean([t.variance_exact for t in several]),
        variance_by_overlap=mean([t.variance_by_overlap for t in several]),
    )


def summary(result: ResultRecord) -> Summary:
    """What the report says about a result: its trials averaged, the theory beside them."""
    trials = result.trials
    starts = [t.init for t in trials]
    analyses = [t.analysis for t in trials]
    pla = [t.pseudo_label_accuracy for t in trials]
    weak_size, strong_size = result.input_sizes
    measured = over_trials([t.metrics for t in trials], result.n_test)
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
        init=over_trials(starts, result.n_test) if result.student and all(starts) else None,
        pseudo_label_accuracy=float(np.mean(pla)) if all(p is not None for p in pla) else None,
        theory=theory_summary(analyses, result) if all(analyses) else None,
        analysis_note=None if all(analyses) else result.analysis_note or "not analysed",
        predicted=_predicted([t.predicted for t in trials]) if all(t.predicted for t in trials) else None,
        members=members_over_trials([t.members for t in trials]),
        teachers=teachers_over_trials(analyses),
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
        theory=variance_only(dims, result.n_labeled, result.n_pseudo)
        if analyses[0].teachers is None
        else VarianceOnly(
            {},
            available=False,
            note="the paper's variance-only PGR is one teacher's; see the combined teacher's overlaps",
        ),
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
