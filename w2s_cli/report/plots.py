"""Figures (matplotlib, Agg) and CSV tables, written atomically."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli.numerics.stats import MODELS
from w2s_cli.numerics.synth import SynthPoint
from w2s_cli.report.render import LABELS
from w2s_cli.store.artifact import atomic_output
from w2s_cli.store.records import Summary, Sweep, SweepPoint

COLORS = {"weak": "tab:red", "w2s": "tab:blue", "strong_sft": "tab:green", "ceiling": "tab:gray"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _plt().close(fig)
    return Path(path)


def write_csv(header: list[str], rows: list[list[Any]], path: str | os.PathLike) -> Path:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([["" if v is None else v for v in r] for r in rows])
    return Path(path)


def plot_spectra(spectra: dict[str, np.ndarray], dims: dict[str, int], energy: float, path) -> Path:
    """Cumulative energy of each spectrum against k, with the cut-off at `energy` marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, spectrum), color in zip(spectra.items(), ("tab:red", "tab:blue"), strict=False):
        k = np.arange(1, len(spectrum) + 1)
        ax.plot(k, np.cumsum(spectrum) / spectrum.sum(), color=color, label=f"{name} (d = {dims[name]})")
        ax.axvline(dims[name], color=color, ls="--", lw=0.8)
    ax.axhline(energy, color="gray", ls=":", lw=0.8, label=f"energy {energy}")
    ax.set_xscale("log")
    ax.set_xlabel("k (principal directions)")
    ax.set_ylabel("cumulative energy")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def _log_x(ax) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def synth_csv(points: list[SynthPoint], sweep: str, path) -> Path:
    cols = ["weak", "w2s", "strong_sft", "ceiling", "pgr", "opr"]
    header = [sweep, "d_sw"] + [f"{kind}_{c}" for c in cols for kind in ("measured", "stderr", "predicted")]
    body = [
        [p.value, p.result.d_sw]
        + [getattr(p.result, kind)[c] for c in cols for kind in ("measured", "stderr", "predicted")]
        for p in points
    ]
    return write_csv(header, body, path)


def plot_synth_sweep(points: list[SynthPoint], sweep: str, fixed: dict[str, Any], d_s: int, path) -> Path:
    """Three panels over the swept quantity: ER of the four models, PGR, OPR. Measured: error bars; predicted: lines."""
    plt = _plt()
    x = np.array([p.value for p in points], dtype=float)
    rows = [p.result for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for k in MODELS:
        axes[0].plot(x, [r.predicted[k] for r in rows], "-", color=COLORS[k], label=f"{LABELS[k]} (theory)")
        axes[0].errorbar(
            x,
            [r.measured[k] for r in rows],
            yerr=[2 * r.stderr[k] for r in rows],
            fmt="o",
            color=COLORS[k],
            ms=4,
            capsize=2,
            label=f"{LABELS[k]} (measured)",
        )
    axes[0].set_yscale("log")
    axes[0].set_ylabel("excess risk")
    for ax, key in ((axes[1], "pgr"), (axes[2], "opr")):
        pred = [r.predicted[key] for r in rows]
        ax.plot(x, [np.nan if p is None else p for p in pred], "-", color="black", label="theory (exact)")
        meas = [np.nan if r.measured[key] is None else r.measured[key] for r in rows]
        err = [0 if r.stderr[key] is None else 2 * r.stderr[key] for r in rows]
        ax.errorbar(x, meas, yerr=err, fmt="o", color="tab:blue", ms=4, capsize=2, label="measured (±2 se)")
        ax.set_ylabel(key.upper())
    axes[1].axhline(0, color="gray", lw=0.5)
    axes[2].axhline(1, color="gray", lw=0.5)
    for ax in axes:
        ax.set_xlabel(sweep)
        if sweep in ("n-pseudo", "n-labeled"):
            _log_x(ax)
        if sweep == "n-pseudo":
            ax.axvline(2 * d_s + 1, color="gray", ls="--", lw=0.8, label="N = 2 d_s + 1")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2, loc="best")
    axes[1].legend(fontsize=7, loc="lower right")
    axes[2].legend(fontsize=7, loc="lower right")
    fig.suptitle("w2s synth: " + ", ".join(f"{k}={v}" for k, v in fixed.items()), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _sweep_x(result: Sweep) -> tuple[str, list[float], list[str]]:
    """The x axis of a sweep figure: the first varied parameter, or d_sw/d_w when it is a backbone."""
    first = result.vary[0]
    labels = [p.params[first] for p in result.points]
    if first in ("weak", "strong"):  # a finetuned point takes the overlap of its probe twin (same backbones)
        ratio = {p.params[first]: p.summary.theory.dimensions.overlap for p in result.points if p.summary.theory}
        ratio = {lab: np.nan if r is None else r for lab, r in ratio.items()}
        return "d_sw / d_w", [ratio[lab] if lab in ratio else np.nan for lab in labels], labels
    try:
        return first, [float(v) for v in labels], labels
    except ValueError:  # auto / none among subspace values
        order = sorted(set(labels), key=labels.index)
        return first, [float(order.index(v)) for v in labels], labels


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def plot_sweep(result: Sweep, path) -> Path:
    """Panels over the first varied parameter: test MSE of the four models (one series only), PGR and OPR.
    Points: measured ± 2 standard errors; dashed: label-light prediction; dotted: variance-only theory."""
    plt = _plt()
    xname, x, labels = _sweep_x(result)
    rest = result.vary[1:]
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(result.points):
        groups.setdefault(", ".join(f"{k}={p.params[k]}" for k in rest), []).append(i)
    panels = ["error", "pgr", "opr"] if len(groups) == 1 else ["pgr", "opr"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2))
    s = [p.summary for p in result.points]
    categorical = xname != "d_sw / d_w" and any(not _is_number(v) for v in labels)
    for ax, panel in zip(axes, panels, strict=True):
        for g, (name, idx) in enumerate(groups.items()):
            order = sorted(idx, key=lambda i: x[i])
            xs, points = [x[i] for i in order], [s[i] for i in order]
            if panel == "error":
                _error_series(ax, xs, points)
            else:
                _ratio_series(ax, panel, xs, points, f"C{g}", f" ({name})" if name else "")
        _sweep_axis(ax, panel, xname, x, labels, s, categorical)
    fig.suptitle(f"w2s sweep over {', '.join(result.vary)} ({result.trials} trials per point)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _val(v: float | None) -> float:
    return np.nan if v is None else float(v)


def _error_series(ax, xs: list[float], points: list[Summary]) -> None:
    """Test MSE of the four models (teacher, W2S student, strong SFT, ceiling) at xs: measured ± 2 standard
    errors (points) and the label-light prediction (dashed)."""
    predicted = [p.theory.predicted if p.theory else None for p in points]  # label-light (None: not analysed)
    for k in MODELS:
        ax.errorbar(
            xs,
            [p.metrics.error[k] for p in points],
            yerr=[2 * _val(p.metrics.error_stderr[k]) for p in points],
            fmt="o",
            ms=4,
            capsize=2,
            color=COLORS[k],
            label=f"{LABELS[k]}",
        )
        ax.plot(xs, [_val(pred and pred.error[k]) for pred in predicted], "--", color=COLORS[k], lw=1)
    ax.set_ylabel("test MSE (dashed: label-light prediction)")


def _ratio_series(ax, panel: str, xs: list[float], points: list[Summary], color: str, tag: str) -> None:
    """PGR or OPR (`panel`) of one series at xs: measured ± 2 standard errors (points), the label-light
    prediction (dashed) and the variance-only theory (dotted)."""
    predicted = [p.theory.predicted if p.theory else None for p in points]  # label-light (None: not analysed)
    ax.errorbar(
        xs,
        [_val(getattr(p.metrics, panel)) for p in points],
        yerr=[2 * _val(getattr(p.metrics, f"{panel}_stderr")) for p in points],
        fmt="o",
        ms=4,
        capsize=2,
        color=color,
        label=f"measured ±2 se{tag}",
    )
    ax.plot(
        xs, [_val(pred and getattr(pred, panel)) for pred in predicted], "--", color=color, label=f"label-light{tag}"
    )
    theory = [_val(p.theory and getattr(p.theory.theory, panel)) for p in points]
    ax.plot(xs, theory, ":", color=color, label=f"variance-only theory{tag}")
    ax.set_ylabel(panel.upper())


def _sweep_axis(
    ax, panel: str, xname: str, x: list[float], labels: list[str], s: list[Summary], categorical: bool
) -> None:
    """The x axis of a sweep panel (log for n and N, teachers named on the PGR panel over d_sw / d_w,
    the values' names when categorical), its grid and legend."""
    if xname in ("n-pseudo", "n-labeled"):
        _log_x(ax)
        ticks = sorted(set(x))
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks], fontsize=7)
    if xname == "d_sw / d_w" and panel == "pgr":  # name each teacher (without their common prefix)
        prefix = os.path.commonprefix(labels).rpartition("_")[0]
        names = [lab[len(prefix) + 1 :] if prefix else lab for lab in labels]
        for xi, si, lab in zip(x, s, names, strict=True):
            if si.metrics.pgr is not None:
                ax.annotate(lab, (xi, si.metrics.pgr), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if categorical:
        ticks = sorted(set(x))
        ax.set_xticks(ticks, [labels[x.index(v)] for v in ticks], fontsize=7)
    ax.set_xlabel(xname)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def sweep_rows(result: Sweep) -> tuple[list[str], list[list[Any]]]:
    """The sweep as a table (--csv): one row per point: the parameters, the experiment, d_w, d_s, d_sw, and for
    each model its measured error and accuracy (mean and standard error over trials), its label-light and
    exact-design predictions; PGR and OPR beside their predictions; a finetuned student's epoch-0 errors."""
    names = result.vary
    header = list(names) + [
        "student",
        "trials",
        "n_labeled",
        "n_pseudo",
        "label_noise",
        "weak",
        "strong",
        "d_w",
        "d_s",
        "d_sw",
        "d_sw_null",
        "d_sw_corrected",
        "d_sw_over_d_w",
    ]
    for k in MODELS:
        header += [
            f"error_{k}",
            f"error_{k}_se",
            f"accuracy_{k}",
            f"accuracy_{k}_se",
            f"error_{k}_predicted",
            f"variance_{k}_exact",
            f"variance_{k}_theory",
        ]
    header += ["pgr", "pgr_se", "opr", "opr_se", "pgr_predicted", "opr_predicted", "pgr_theory", "opr_theory"]
    header += [f"error_{k}_epoch0" for k in MODELS[1:]] + ["pgr_epoch0", "pgr_epoch0_se"]
    body = [_row(names, p) for p in result.points]
    return header, body


def _row(names: list[str], p: SweepPoint) -> list[Any]:
    """One point of the table of `sweep_rows`."""
    s = p.summary
    m, t, start = s.metrics, s.theory, s.init
    d, pred = (t.dimensions, t.predicted) if t else (None, None)
    acc = (m.accuracy, m.accuracy_stderr) if m.accuracy is not None else (dict.fromkeys(MODELS),) * 2
    row = [p.params[n] for n in names]
    row += [
        s.student.description if s.student else "linear probe",
        s.trials,
        s.n_labeled,
        s.n_pseudo,
        None if s.label_noise is None else s.label_noise.rate,
        f"{s.weak_model}@{s.weak_input_size}",
        f"{s.strong_model}@{s.strong_input_size}",
    ]
    row += [getattr(d, k) if d else None for k in ("d_w", "d_s", "d_sw", "d_sw_null", "d_sw_corrected")]
    row.append(d.overlap if d else None)
    for k in MODELS:
        var = t.variance[k] if t else None
        row += [m.error[k], m.error_stderr[k], acc[0][k], acc[1][k], pred.error[k] if pred else None]
        row += [var.exact, var.theory] if var else [None, None]
    row += [m.pgr, m.pgr_stderr, m.opr, m.opr_stderr]
    row += [pred.pgr, pred.opr] if pred else [None, None]
    row += [t.theory.pgr, t.theory.opr] if t else [None, None]
    row += [start.error[k] if start else None for k in MODELS[1:]]
    row += [start.pgr, start.pgr_stderr] if start else [None, None]
    return row
