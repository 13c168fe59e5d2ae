"""The summary of a `result` artifact (one trial or several): measured errors, PGR and OPR with standard
errors, and what the theory explains (dimensions, exact-design variance, decomposition, label-light
predictions, the variance-only prediction), as one JSON-ready dict."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from w2s_cli.errors import W2SError
from w2s_cli.numerics import theory
from w2s_cli.numerics.stats import MODELS, mean_and_sem, opr_from_rows, pgr_from_rows, summarize_trials
from w2s_cli.store import artifact as store


def load_result(path: str | os.PathLike) -> store.Artifact:
    """A result artifact whose trials hold what the report reads."""
    art = store.load(path, "result", what="result")
    for t in art.meta["trials"]:
        missing = [k for k in ("error", "n_test", "pgr", "opr") if not isinstance(t, dict) or k not in t]
        if missing or not all(k in t["error"] for k in MODELS):
            raise W2SError(f"result {art.path}: corrupt w2s record: a trial without '{(missing or ['error'])[0]}'")
    return art


def _mean(values: list) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def summary(result: store.Artifact) -> dict[str, Any]:
    """The JSON-ready summary of a result artifact."""
    meta = result.meta
    trials = meta["trials"]
    s = summarize_trials(trials)
    s.update(
        {
            "n_labeled": meta["n_labeled"],
            "n_pseudo": meta["n_pseudo"],
            "n_test": meta["n_test"],
            "task": meta.get("task"),
            "dataset": meta["dataset"]["name"],
            "weak_model": meta.get("weak_model"),
            "weak_input_size": (meta.get("weak_input_size") or [None])[-1],
            "strong_model": meta.get("strong_model"),
            "strong_input_size": (meta.get("strong_input_size") or [None])[-1],
            "solver": meta.get("solver"),
            "labels": meta.get("labels"),
            "subspace": meta.get("subspace"),
            "label_noise": meta.get("label_noise"),
            "fits": meta.get("fits"),
            "seconds": meta.get("seconds", {}),
            "seeds": [t.get("seed") for t in trials],
        }
    )
    if meta.get("student"):  # a finetuned student: its recipe, and its LP-FT start (epoch 0) measured alike
        s["student"] = meta["student"]
        starts = [t.get("init") for t in trials]
        if all(starts):
            s["init"] = summarize_trials([{**i, "n_test": t["n_test"]} for i, t in zip(starts, trials, strict=True)])
    pla = [t.get("pseudo_label_accuracy") for t in trials]
    if all(p is not None for p in pla):
        s["pseudo_label_accuracy"] = float(np.mean(pla))
    analyses = [t.get("analysis") for t in trials]
    if all(analyses):
        s.update(theory_block(analyses, s))
    else:
        s["analysis_note"] = meta.get("analysis_note") or "not analysed"
    return s


def theory_block(analyses: list[dict], measured: dict) -> dict[str, Any]:
    """Dimensions, variance, decomposition and predictions, averaged over trials; the label-light PGR/OPR from
    the mean predicted errors with their standard error over trials (the measured headline's estimator)."""
    n, N = measured["n_labeled"], measured["n_pseudo"]
    dims = {
        k: _mean([a["dimensions"][k] for a in analyses]) for k in ("d_w", "d_s", "d_sw", "d_sw_null", "d_sw_corrected")
    }
    dims["m"] = analyses[0]["dimensions"]["m"]
    dims["basis"] = {
        "weak": (measured.get("subspace") or {}).get("weak"),
        "strong": (measured.get("subspace") or {}).get("strong"),
    }
    variance = {}
    for k in MODELS:
        exact = _mean([a["variance"][k]["exact"] for a in analyses])
        paper = _mean([a["variance"][k]["theory"] for a in analyses])
        variance[k] = {"exact": exact, "theory": paper, "ratio": None if not paper or exact is None else exact / paper}
    decomposition = {}
    if all(a["decomposition"] for a in analyses):
        for k in MODELS:
            decomposition[k] = {
                p: _mean([a["decomposition"][k].get(p) for a in analyses]) for p in analyses[0]["decomposition"][k]
            }
    pred_errors = {k: [a["predicted"]["error"][k] for a in analyses] for k in MODELS}
    ok = all(v is not None for vals in pred_errors.values() for v in vals)
    predicted: dict[str, Any] = {
        "error": {k: _mean(v) for k, v in pred_errors.items()},
        "error_stderr": {k: mean_and_sem(v)[1] for k, v in pred_errors.items()},
        "method": analyses[0]["predicted"]["method"],
    }
    if ok and len(analyses) > 1:
        e = {k: np.array(v, dtype=float) for k, v in pred_errors.items()}
        predicted["pgr"], predicted["pgr_stderr"] = pgr_from_rows(e["weak"], e["w2s"], e["ceiling"])
        predicted["opr"], predicted["opr_stderr"] = opr_from_rows(e["strong_sft"], e["w2s"])
    else:
        predicted["pgr"] = _mean([a["predicted"]["pgr"] for a in analyses])
        predicted["opr"] = _mean([a["predicted"]["opr"] for a in analyses])
    if "misfit" in analyses[0]["predicted"]:
        predicted["misfit"] = _mean([a["predicted"]["misfit"] for a in analyses])
        predicted["error_w2s_by_misfit"] = _mean([a["predicted"]["error_w2s_by_misfit"] for a in analyses])
    out: dict[str, Any] = {
        "dimensions": dims,
        "variance": variance,
        "decomposition": decomposition,
        "predicted": predicted,
        "near_interpolation": sorted({k for a in analyses for k in a["near_interpolation"]}),
        "sigma2": {k: _mean([a["sigma2"][k] for a in analyses]) for k in ("weak", "strong")},
    }
    out["theory"] = variance_only(dims, n, N)
    return out


def variance_only(dims: dict, n: int, N: int) -> dict[str, Any]:
    """The paper's variance-only prediction of PGR and OPR from the measured d_s, d_w, d_sw (exact formulas),
    or the reason it does not apply."""
    d_s, d_w, d_sw = dims["d_s"], dims["d_w"], min(dims["d_sw"], dims["d_s"], dims["d_w"])
    out: dict[str, Any] = {"inputs": {"d_s": d_s, "d_w": d_w, "d_sw": d_sw, "n": n, "N": N}}
    try:
        pred = theory.predict(d_s, d_w, d_sw, n, N, 1.0, exact=True)
        out.update({"available": True, "pgr": pred["pgr"], "opr": pred["opr"], "limits": theory.limits(d_s, d_w, d_sw)})
    except W2SError as exc:
        out.update({"available": False, "note": exc.message})
    return out
