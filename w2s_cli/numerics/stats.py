"""Test-split metrics in float64 with standard errors: squared error against one-hot labels or targets,
accuracy, PGR and OPR (ratios, with paired delta-method standard errors). The stage that measures a trial
builds its `Metrics` record from these (stages/summary.py: evaluate, over_trials).

Error follows the authors' convention: the mean over test rows and output columns of
(model output - one-hot label)^2 for classification, (output - target)^2 for regression.
"""

from __future__ import annotations

import math

import numpy as np

MODELS = ("weak", "w2s", "strong_sft", "ceiling")


def sem(values) -> float:
    """Standard error of the mean (scipy.stats.sem, imported on first use: it costs half a second)."""
    from scipy.stats import sem as _sem

    return float(_sem(np.asarray(values, dtype=np.float64)))


NOISE_Z = 2.0  # a PGR denominator within NOISE_Z standard errors of zero is "within noise"


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes), dtype=np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def as_targets(values: np.ndarray, n_classes: int | None) -> np.ndarray:
    """(len, C) float64 targets of labels (one-hot over n_classes) or of numbers (one column)."""
    values = np.asarray(values)
    return one_hot(values.astype(np.int64), n_classes) if n_classes else values.astype(np.float64)[:, None]


def probabilities(Y: np.ndarray) -> np.ndarray:
    """Targets as class probabilities for the cross-entropy losses: a ridgeless teacher's outputs are
    clipped at 0 and renormalised (a row with no positive entry becomes uniform); one-hot rows are unchanged."""
    P = np.clip(Y, 0.0, None)
    s = P.sum(axis=1, keepdims=True)
    return np.where(s > 0, P / np.where(s > 0, s, 1.0), 1.0 / Y.shape[1])


def squared_errors(output: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-row squared error, averaged over output columns: shape (m,)."""
    output = np.asarray(output, np.float64).reshape(len(output), -1)
    truth = np.asarray(truth, np.float64).reshape(len(truth), -1)
    return ((output - truth) ** 2).mean(axis=1)


def accuracy(output: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(output).argmax(axis=1) == labels).mean())


def mean_and_sem(values) -> tuple[float | None, float | None]:
    """Mean and standard error (scipy.stats.sem), ignoring undefined (None/NaN) values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return None, None
    return float(v.mean()), (float(sem(v)) if len(v) > 1 else None)


def ratio(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    """mean(a) / mean(b) over paired observations and its delta-method standard error:
    se^2 = var(a - R b) / (len * mean(b)^2)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mb = float(b.mean())
    if mb == 0 or not math.isfinite(mb):
        return None, None
    R = float(a.mean()) / mb
    if len(a) < 2:
        return R, None
    return R, float(np.std(a - R * b, ddof=1) / (abs(mb) * math.sqrt(len(a))))


def pgr_from_rows(e_weak: np.ndarray, e_w2s: np.ndarray, e_ceiling: np.ndarray) -> tuple[float | None, float | None]:
    """PGR = (err_w - err_w2s) / (err_w - err_c) from paired per-row (or per-trial) errors, with its standard
    error; undefined (None) when the denominator is within NOISE_Z standard errors of zero."""
    denom = np.asarray(e_weak) - np.asarray(e_ceiling)
    d, d_se = float(denom.mean()), (float(sem(denom)) if len(denom) > 1 else 0.0)
    if not math.isfinite(d) or abs(d) <= max(NOISE_Z * d_se, 1e-12 * max(abs(float(np.mean(e_weak))), 1e-300)):
        return None, None
    return ratio(np.asarray(e_weak) - np.asarray(e_w2s), denom)


def opr_from_rows(e_sft: np.ndarray, e_w2s: np.ndarray) -> tuple[float | None, float | None]:
    """OPR = err_s / err_w2s from paired per-row (or per-trial) errors, with its standard error."""
    if float(np.mean(e_w2s)) <= 0:
        return None, None
    return ratio(e_sft, e_w2s)


def pgr(err_weak: float, err_w2s: float, err_ceiling: float) -> float | None:
    """(err_w - err_w2s) / (err_w - err_c) of point values; None when the denominator is zero."""
    denom = err_weak - err_ceiling
    if not math.isfinite(denom) or abs(denom) <= 1e-12 * max(abs(err_weak), 1e-300):
        return None
    return (err_weak - err_w2s) / denom


def opr(err_strong_sft: float, err_w2s: float) -> float | None:
    if not err_w2s > 0 or not math.isfinite(err_w2s):
        return None
    return err_strong_sft / err_w2s
