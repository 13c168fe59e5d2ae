"""Test-split metrics in float64: squared error against one-hot labels or targets, accuracy, PGR, OPR.

Error follows the authors' convention: the mean over test rows and output columns of
(model output - one-hot label)^2 for classification, (output - target)^2 for regression.
"""

from __future__ import annotations

import math

import numpy as np

MODELS = ("weak", "w2s", "strong_sft", "ceiling")
NOISE_Z = 2.0  # a PGR denominator within NOISE_Z standard errors of zero is "within noise"


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes), dtype=np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def squared_errors(output: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-row squared error, averaged over output columns: shape (m,)."""
    output = np.asarray(output, np.float64)
    truth = np.asarray(truth, np.float64)
    if output.ndim == 1:
        output = output[:, None]
    if truth.ndim == 1:
        truth = truth[:, None]
    return ((output - truth) ** 2).mean(axis=1)


def accuracy(output: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(output).argmax(axis=1) == labels).mean())


def pgr(err_weak: float, err_w2s: float, err_ceiling: float, denom_stderr: float = 0.0) -> float | None:
    """(err_w - err_w2s) / (err_w - err_c); None when the denominator is within noise of zero."""
    denom = err_weak - err_ceiling
    if not math.isfinite(denom) or abs(denom) <= max(NOISE_Z * denom_stderr, 1e-12 * max(abs(err_weak), 1e-300)):
        return None
    return (err_weak - err_w2s) / denom


def opr(err_strong_sft: float, err_w2s: float) -> float | None:
    """err_s / err_w2s; None when the student's error is zero."""
    if err_w2s <= 0 or not math.isfinite(err_w2s):
        return None
    return err_strong_sft / err_w2s


def evaluate(outputs: dict[str, np.ndarray], truth: np.ndarray, labels: np.ndarray | None) -> dict:
    """Errors (with paired standard errors), accuracies, PGR and OPR of the four models on one test split.

    outputs: model name -> (m, C) test outputs; truth: (m, C) one-hot labels or (m, 1) targets;
    labels: (m,) class labels for accuracy, None for regression.
    """
    per_row = {k: squared_errors(outputs[k], truth) for k in MODELS}
    m = len(truth)
    err = {k: float(v.mean()) for k, v in per_row.items()}
    se = {k: float(v.std(ddof=1) / math.sqrt(m)) if m > 1 else float("nan") for k, v in per_row.items()}
    # the PGR denominator is a paired difference on the same test rows
    diff = per_row["weak"] - per_row["ceiling"]
    denom_se = float(diff.std(ddof=1) / math.sqrt(m)) if m > 1 else float("inf")
    result = {
        "error": err,
        "error_stderr": se,
        "pgr": pgr(err["weak"], err["w2s"], err["ceiling"], denom_se),
        "pgr_denominator_stderr": denom_se,
        "opr": opr(err["strong_sft"], err["w2s"]),
        "n_test": m,
    }
    if labels is not None:
        result["accuracy"] = {k: accuracy(outputs[k], labels) for k in MODELS}
    return result


def mean_and_stderr(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and standard error over trials, ignoring undefined (None) values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return None, None
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return float(v.mean()), se


def summarize_trials(trials: list[dict]) -> dict:
    """Mean and standard error of every metric over trials (T = 1 gives the trial itself, se from the test rows).

    PGR and OPR of the mean errors are the headline; their trial-to-trial spread is the standard error.
    """
    if len(trials) == 1:
        t = trials[0]
        out = {k: t[k] for k in ("error", "error_stderr", "pgr", "opr", "n_test") if k in t}
        if "accuracy" in t:
            out["accuracy"] = t["accuracy"]
        out["trials"] = 1
        return out
    err, err_se = {}, {}
    for k in MODELS:
        err[k], err_se[k] = mean_and_stderr([t["error"][k] for t in trials])
    diffs = [t["error"]["weak"] - t["error"]["ceiling"] for t in trials]
    _, denom_se = mean_and_stderr(diffs)
    out = {
        "error": err,
        "error_stderr": err_se,
        "pgr": pgr(err["weak"], err["w2s"], err["ceiling"], denom_se or 0.0),
        "pgr_stderr": mean_and_stderr([t["pgr"] for t in trials])[1],
        "opr": opr(err["strong_sft"], err["w2s"]),
        "opr_stderr": mean_and_stderr([t["opr"] for t in trials])[1],
        "n_test": trials[0]["n_test"],
        "trials": len(trials),
        "pgr_undefined_trials": sum(t["pgr"] is None for t in trials),
    }
    if "accuracy" in trials[0]:
        acc, acc_se = {}, {}
        for k in MODELS:
            acc[k], acc_se[k] = mean_and_stderr([t["accuracy"][k] for t in trials])
        out["accuracy"], out["accuracy_stderr"] = acc, acc_se
    return out
