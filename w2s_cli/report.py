"""The report: errors, accuracies, PGR and OPR of a `result` artifact (one trial or several), as a table,
markdown, or one JSON object; with the theory's predictions next to them when the dimensions are known."""

from __future__ import annotations

import math
import os
from typing import Any

from rich.console import Console
from rich.table import Table

from w2s_cli import artifacts
from w2s_cli.metrics import MODELS, summarize_trials
from w2s_cli.theory import theory_for_result

LABELS = {"weak": "weak teacher", "w2s": "W2S student", "strong_sft": "strong SFT", "ceiling": "strong ceiling"}


def summary(result: artifacts.Artifact) -> dict[str, Any]:
    """The JSON-ready summary of a result artifact."""
    meta = result.meta
    s = summarize_trials(meta["trials"])
    s.update(
        {
            "n_labeled": meta["n_labeled"],
            "n_pseudo": meta["n_pseudo"],
            "n_test": meta["n_test"],
            "task": meta["task"],
            "dataset": meta["dataset"]["name"],
            "weak_model": meta["weak_model"],
            "weak_input_size": meta["weak_input_size"][-1],
            "strong_model": meta["strong_model"],
            "strong_input_size": meta["strong_input_size"][-1],
            "solver": meta["solver"],
            "labels": meta["labels"],
            "subspace": meta["subspace"],
            "seconds": meta["seconds"],
            "seeds": [t["seed"] for t in meta["trials"]],
        }
    )
    pla = [t.get("pseudo_label_accuracy") for t in meta["trials"]]
    if all(p is not None for p in pla):
        s["pseudo_label_accuracy"] = sum(pla) / len(pla)
    s["theory"] = theory_for_result(meta, s)
    return s


def _fmt(x: float | None, se: float | None = None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "undefined"
    text = f"{x:.{digits}f}"
    if se is not None and not math.isnan(se):
        text += f" ± {se:.{digits}f}"
    return text


def _trained_on(s: dict[str, Any]) -> dict[str, str]:
    n, N = s["n_labeled"], s["n_pseudo"]
    weak = f"{s['weak_model']}@{s['weak_input_size']}"
    strong = f"{s['strong_model']}@{s['strong_input_size']}"
    return {
        "weak": f"{weak}, {n} true labels",
        "w2s": f"{strong}, {N} {s['labels']} pseudo-labels",
        "strong_sft": f"{strong}, {n} true labels",
        "ceiling": f"{strong}, {n + N} true labels",
    }


def rows(s: dict[str, Any]) -> list[list[str]]:
    trained = _trained_on(s)
    out = []
    for k in MODELS:
        row = [LABELS[k], trained[k], _fmt(s["error"][k], s["error_stderr"].get(k))]
        if "accuracy" in s:
            row.append(_fmt(s["accuracy"][k], (s.get("accuracy_stderr") or {}).get(k)))
        out.append(row)
    return out


def footer_lines(s: dict[str, Any]) -> list[str]:
    pgr_text = _fmt(s["pgr"], s.get("pgr_stderr"), 3)
    if s["pgr"] is None:
        pgr_text += " (err_weak - err_ceiling is within noise of zero)"
    lines = [
        f"PGR = {pgr_text}   OPR = {_fmt(s['opr'], s.get('opr_stderr'), 3)}",
        f"n_labeled = {s['n_labeled']}, n_pseudo = {s['n_pseudo']}, n_test = {s['n_test']}, trials = {s['trials']}"
        f" (seeds {', '.join(map(str, s['seeds']))}); solver: teacher {s['solver']['teacher']}, "
        f"student {s['solver']['student']}",
    ]
    if "pseudo_label_accuracy" in s:
        lines.append(f"pseudo-label accuracy: {s['pseudo_label_accuracy']:.4f}")
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()))
    lines += s["theory"]["lines"]
    return lines


def render(s: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"W2S on {s['dataset']}: test error (mean squared error"
        f"{' vs one-hot label' if s['task'] == 'classification' else ''})"
    )
    for col in ["model", "trained on", "test MSE"] + (["accuracy"] if "accuracy" in s else []):
        table.add_column(col)
    for r in rows(s):
        table.add_row(*r)
    console.print(table)
    for line in footer_lines(s):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def markdown(s: dict[str, Any]) -> str:
    head = ["model", "trained on", "test MSE"] + (["accuracy"] if "accuracy" in s else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(s)]
    lines.append("")
    lines += [f"{line}  " for line in footer_lines(s)]
    return "\n".join(lines)


def load_result(path: str | os.PathLike) -> artifacts.Artifact:
    return artifacts.load(path, "result")
