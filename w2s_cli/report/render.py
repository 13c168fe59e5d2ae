"""Tables and footers for every command's human output (rich on a terminal, markdown on request), and the
strict JSON the commands print. The CLI only chooses which one."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from w2s_cli.numerics.stats import MODELS
from w2s_cli.numerics.synth import SynthPoint, SynthResult
from w2s_cli.store.records import (
    Basis,
    Decomposition,
    FitRecord,
    IntrinsicDim,
    KernelCheck,
    Ranking,
    SeveralTeachers,
    Summary,
    Sweep,
    SweepPoint,
    TheorySummary,
    VarianceRow,
)

LABELS = {"weak": "weak teacher", "w2s": "W2S student", "strong_sft": "strong SFT", "ceiling": "strong ceiling"}


@dataclass
class Block:
    """A titled table and the lines that follow it."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def show(blocks: list[Block], markdown: bool = False, out=None) -> None:
    out = out or sys.stdout
    if markdown:
        parts = []
        for b in blocks:
            text = [f"**{b.title}**", "", "| " + " | ".join(b.columns) + " |", "|" + "---|" * len(b.columns)]
            text += ["| " + " | ".join(r) + " |" for r in b.rows]
            text += [""] + [f"{line}  " for line in b.lines]
            parts.append("\n".join(text))
        out.write("\n\n".join(parts) + "\n")
        return
    # a terminal folds what does not fit; a file or pipe gets every table at its natural width
    terminal = Console(file=out).is_terminal
    console = Console(file=out, width=max(120, Console().width) if terminal else 100_000, highlight=False)
    for b in blocks:
        if b.columns:
            table = Table(title=b.title)
            for c in b.columns:
                table.add_column(c, overflow="fold")
            for r in b.rows:
                table.add_row(*r)
            console.print(table)
        elif b.title:
            console.print(b.title, markup=False)
        for line in b.lines:
            console.print(line, markup=False, soft_wrap=True)


def fmt(x: float | None, se: float | None = None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "undefined"
    if abs(x) < 0.5 * 10**-digits:
        x = 0.0  # no "-0.0000"
    text = f"{x:.{digits}f}"
    if se is not None and isinstance(se, float) and math.isfinite(se):
        text += f" ± {se:.{digits}f}"
    return text


def _clean(x: Any) -> Any:
    """NaN/inf become null: the JSON we print is strict; a record is its JSON layout."""
    if hasattr(x, "to_json"):
        return _clean(x.to_json())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "tolist"):
        return _clean(x.tolist())
    if hasattr(x, "value") and hasattr(x, "name"):  # an enum
        return x.value
    return x


def json_text(obj: Any) -> str:
    """obj as strict JSON (what --json prints)."""
    return json.dumps(_clean(obj))


def print_json(obj: Any) -> None:
    sys.stdout.write(json_text(obj) + "\n")


# the report ----------------------------------------------------------------------------------------------
def _trained_on(s: Summary) -> dict[str, str]:
    n, N = s.n_labeled, s.n_pseudo
    weak = s.weak_model if s.weak_input_size is None else f"{s.weak_model}@{s.weak_input_size}"
    strong = f"{s.strong_model}@{s.strong_input_size}"
    noisy = " noisy" if s.noise_rate else ""
    return {
        "weak": f"{weak}, {n}{noisy} labels",
        "w2s": f"{strong}, {N} {s.labels} pseudo-labels",
        "strong_sft": f"{strong}, {n}{noisy} labels",
        "ceiling": f"{strong}, {n + N}{noisy} labels",
    }


def _fit(s: Summary, k: str) -> FitRecord | None:
    return None if s.fits is None or k not in s.fits else s.fits[k]


def _ill_determined(fits: dict[str, FitRecord] | None) -> list[str]:
    """A warning for ridgeless fits whose design the float64 moments cannot resolve (numerics/solvers.py)."""
    ill = [(k, f) for k, f in (fits or {}).items() if k in MODELS and f.ill_determined]
    if not ill:
        return []
    parts = [
        f"{LABELS[k]} (rank {f.rank}, condition number {f.condition_number:.3g}, from the "
        + ("rows, as lstsq)" if f.solved_from == "rows" else "moments: the rows were not kept)")
        for k, f in ill
    ]
    why = "singular values below sqrt(max(rows, d) eps) of the largest, beyond what moments resolve; fragile"
    return [f"warning: ill-determined fit ({why}): " + "; ".join(parts)]


def _dim(s: Summary, k: str) -> str:
    fit = _fit(s, k)
    if fit is None or (k == "weak" and s.members):  # combined: each member has its own basis and fit
        return ""
    if fit.solver == "finetune":
        return f"ft/{fit.rows}"
    return "" if fit.rank is None else f"{fit.rank}/{fit.rows}"


def _predictions(s: Summary):
    """The label-light predictions: the probe's (its theory), or a finetuned student's (its after-kernel)."""
    return s.theory.predicted if s.theory else s.predicted


def _model_row(s: Summary, k: str, trained: dict[str, str]) -> list[str]:
    m, pred, start = s.metrics, _predictions(s), s.init
    row = [LABELS[k], trained[k], _dim(s, k), fmt(m.error[k], m.error_stderr[k])]
    if s.classification:
        row.append(fmt(m.accuracy[k], m.accuracy_stderr[k]))
    if pred:
        row.append(fmt(pred.error[k]))
    if start:
        row.append("" if k == "weak" else fmt(start.error[k], start.error_stderr[k]))
    return row


def _headline(s: Summary) -> str:
    m = s.metrics
    pgr = fmt(m.pgr, m.pgr_stderr, 3)
    if m.pgr is None:
        pgr += " (err_weak - err_ceiling is within noise of zero)"
    headline = f"PGR = {pgr}   OPR = {fmt(m.opr, m.opr_stderr, 3)}"
    if _predictions(s):
        pred = _predictions(s)
        light = fmt(pred.pgr, pred.pgr_stderr, 3)
        if pred.pgr is None and pred.error["weak"] is not None and pred.error["ceiling"] is not None:
            light += " (its err_weak - err_ceiling within noise of zero)"
        headline += f"   (label-light predictions: PGR {light}, "
        headline += f"OPR {fmt(pred.opr, pred.opr_stderr, 3)})"
    return headline


def _ran(student) -> str:
    """Where and in what precision a finetune ran, as its record says (older records: nothing)."""
    p = student.precision
    if p is None:
        return ""
    amp = " with AMP" if p.autocast else ""
    asked = f" ({p.requested} was asked for: AMP needs a CUDA device)" if p.requested != p.used else ""
    return f"; ran on {student.device} in {p.used}{amp}{asked}"


def report_blocks(s: Summary) -> list[Block]:
    trained, start = _trained_on(s), s.init
    cols = ["model", "trained on", "d/rows", "test MSE"] + (["accuracy"] if s.classification else [])
    cols += ["label-light prediction"] if _predictions(s) else []
    cols += ["test MSE at epoch 0 (LP-FT start)"] if start else []
    rows = [_model_row(s, k, trained) for k in MODELS]
    for i, m in enumerate(s.members or ()):  # a combined teacher's members, under it
        member = [f"  member {i + 1}", f"{m.label}, {s.n_labeled} labels", "", fmt(m.error, m.error_stderr)]
        member += [fmt(m.accuracy, m.accuracy_stderr)] if s.classification else []
        rows.insert(1 + i, member + [""] * (len(cols) - len(member)))
    task = " vs one-hot label" if s.task == "classification" else ""
    solver = s.solver or {"teacher": None, "student": None}
    if solver["student"] == "logistic":
        task = " of the softmax vs one-hot label: Brier / C, the authors' error"
    title = f"W2S on {s.dataset}: test error (mean squared error{task})"
    se_note = "standard errors over the test rows (paired delta method for PGR and OPR)"
    if s.trials > 1:
        se_note = f"standard errors over {s.trials} trials (PGR and OPR: ratio of mean errors, paired delta method)"
    noise = s.label_noise
    lines = [
        _headline(s),
        f"n_labeled = {s.n_labeled}, n_pseudo = {s.n_pseudo}, n_test = {s.metrics.n_test}, trials = {s.trials}"
        f" (seeds {', '.join(map(str, s.seeds))}); {se_note}",
        f"heads: teacher {solver['teacher']}, student/SFT/ceiling {solver['student']}"
        + (f"; label noise {noise.rate:g} ({noise.kind})" if s.noise_rate else ""),
    ]
    if start:
        chosen = ", ".join(
            f"{LABELS[k]} {None if _fit(s, k) is None else _fit(s, k).chosen_epoch}" for k in MODELS if k != "weak"
        )
        lines.append(f"student: {s.student.description} (chosen epoch: {chosen}; last trial){_ran(s.student)}")
        lines.append(
            f"at epoch 0 (the linear students): PGR = {fmt(start.pgr, start.pgr_stderr, 3)}   "
            f"OPR = {fmt(start.opr, start.opr_stderr, 3)}"
        )
    if s.pseudo_label_accuracy is not None:
        lines.append(f"pseudo-label accuracy: {s.pseudo_label_accuracy:.4f}")
    bases = {k: v for k, v in s.subspace.items() if v and not (k == "weak" and s.members)}
    if bases:  # a combined teacher's members have a basis each (their d_w: "Combined teachers")
        lines.append("subspaces: " + "; ".join(f"{k} {_basis_text(v)}" for k, v in bases.items()))
    lines += _ill_determined(s.fits)
    blocks = [Block(title, cols, rows, lines)]
    if s.theory:
        blocks.append(theory_block(s.theory))
    else:
        blocks[0].lines.append(f"theory: not analysed ({s.analysis_note})")
        if s.predicted is not None:
            blocks[0].lines.append(f"label-light predictions: {s.predicted.method}")
    if s.teachers is not None:
        blocks.append(teachers_block(s.teachers))
    blocks[-1].lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s.seconds.items()))
    return blocks


def _basis_text(b: Basis) -> str:
    if not b.dim:
        return f"none (full {b.width}-wide embedding, rank {b.rank})"
    held = 1 if b.energy_held is None else b.energy_held
    return f"K = {b.dim} ({b.rule}, {100 * held:.1f}% of the variance, {b.rows} rows)"


def _theory_row(k: str, v: VarianceRow, parts: Decomposition | None) -> list[str]:
    bias = fmt(None if parts is None else parts.bias)
    if parts is not None and parts.bias_inherited is not None:
        bias += f" (inherited {fmt(parts.bias_inherited)}, rest {fmt(parts.bias_rest)})"
    return [
        LABELS[k],
        fmt(v.exact),
        fmt(v.theory),
        fmt(v.ratio, digits=3),
        fmt(None if parts is None else parts.noise),
        bias,
        fmt(None if parts is None else parts.variance),
    ]


def theory_block(t: TheorySummary) -> Block:
    d, dec = t.dimensions, t.decomposition
    cols = ["model", "exact-design variance", "paper's coefficient", "ratio", "noise", "bias", "variance"]
    rows = [_theory_row(k, t.variance[k], dec[k] if k in dec else None) for k in MODELS]
    lines = [
        f"dimensions: d_w = {d.d_w:g}, d_s = {d.d_s:g}, d_sw = {d.d_sw:.1f} (chance {d.d_sw_null:.1f}, "
        f"null-corrected {fmt(d.d_sw_corrected, digits=1)}) over the {d.m} training rows",
    ]
    th = t.theory
    if th.available:
        lim = th.limits
        lines.append(
            f"variance-only theory: PGR {fmt(th.pgr, digits=3)}, OPR {fmt(th.opr, digits=3)}; N -> inf: PGR "
            f"{fmt(lim['pgr'], digits=3)}, OPR {fmt(lim['opr'], digits=3)}; W2S beats the teacher in variance iff "
            f"N > {lim['n_pseudo_threshold']:g}"
        )
    else:
        lines.append(f"variance-only theory: undefined ({th.note})")
    lines.append(
        f"sigma^2 (RSS / (rows - d - 1)): weak teacher {fmt(t.sigma2['weak'])}, strong ceiling "
        f"{fmt(t.sigma2['strong'])}; variance = sigma^2 x exact coefficient; noise = the ceiling's error less its "
        "variance; bias = the rest"
    )
    if t.decomposition_note:
        lines.append(f"decomposition: {t.decomposition_note}")
    pred = t.predicted
    if pred.misfit is not None:
        lines.append(
            f"student-teacher misfit on the N pseudo rows {fmt(pred.misfit)}: weak error - misfit = "
            f"{fmt(pred.error_w2s_by_misfit)} (Charikar et al.: the W2S error when the target is realisable)"
        )
    if t.near_interpolation:
        names = ", ".join(LABELS[k] for k in t.near_interpolation)
        lines.append(f"warning: near the interpolation threshold (d >= 0.8 x training rows): {names}")
    return Block(
        "What the theory explains (per unit label-noise variance; error = noise + bias + variance)", cols, rows, lines
    )


def teachers_block(t: SeveralTeachers) -> Block:
    """A combined teacher's members: weights, dimensions, own variance; the pairs' overlaps."""
    cols = ["member", "weight", "d_w", "d_sw (null-corrected)", "own exact variance"]
    rows = [
        [
            f"{i + 1}: {m.label}",
            fmt(m.weight, digits=3),
            f"{m.d_w:g}",
            f"{m.d_sw:.1f} ({fmt(m.d_sw_corrected, digits=1)})",
            fmt(m.variance_exact),
        ]
        for i, m in enumerate(t.members)
    ]
    pairs = "; ".join(f"{p.a + 1}-{p.b + 1} {p.d_ww:.1f} (chance {p.d_ww_null:.1f})" for p in t.pairs)
    lines = [
        f"dimension shared by each pair of teachers: {pairs}",
        f"combined teacher's variance coefficient: exact {fmt(t.variance_exact)}, by the overlaps "
        f"(1 + sum_kl w_k w_l d_kl) / n {fmt(t.variance_by_overlap)}",
    ]
    return Block(f"Combined teachers ({t.rule})", cols, rows, lines)


# intrinsic-dim -------------------------------------------------------------------------------------------
def intrinsic_blocks(r: IntrinsicDim) -> list[Block]:
    mats = [(role, x) for role, x in (("weak", r.weak), ("strong", r.strong)) if x is not None]
    standard = list(r.weak.d_at)  # "0.90", "0.95", "0.99"
    chosen = f"{r.energy:.2f}" not in standard
    extra = [k for k in ("twonn", "mle") if getattr(r.weak, k) is not None]
    cols = ["", "samples", "width", "rank"] + [f"d@{e}" for e in standard]
    cols += [f"d@{r.energy:g}"] if chosen else []
    cols += ["PR"] + [{"twonn": "TwoNN", "mle": "MLE"}[k] for k in extra]
    rows = []
    for role, x in mats:
        row = [role, str(x.m), str(x.width), str(x.rank)] + [str(x.d_at[e]) for e in standard]
        row += [str(x.d)] if chosen else []
        row += [f"{x.participation_ratio:.1f}"] + [fmt(getattr(x, k), digits=1) for k in extra]
        rows.append(row)
    lines = []
    if r.d_sw is not None:
        line = f"d_sw = {r.d_sw:.2f} (chance d_s d_w / m = {r.d_sw_null:.2f}"
        if r.d_sw_corrected is not None:
            line += f", null-corrected shared dimension {fmt(r.d_sw_corrected, digits=2)}"
        lines.append(line + f"); method: {r.method}")
        if r.canonical_correlations is not None:
            top = ", ".join(f"{c:.3f}" for c in r.canonical_correlations[:8])
            lines.append(f"canonical correlations (top 8 of {len(r.canonical_correlations)}): {top}")
    return [Block(f"intrinsic dimension ({'centred' if r.center else 'uncentred'})", cols, rows, lines)]


def kernel_check_blocks(r: KernelCheck) -> list[Block]:
    """`w2s kernel-check`: per fit, how far the weights moved and how much of the output change the
    linearisation leaves unexplained; the test errors of the start, the finetuned model and its first order."""
    kinds = ["start", "finetuned", "first_order"]
    kinds += ["linearised"] if any("linearised" in f.error for f in r.fits.values()) else []
    cols = ["model", "weights moved", "output change (rms)", "unexplained by J dθ", "test MSE start"]
    cols += ["finetuned", "first order f0 + J dθ"] + (["linearised (from start)"] if len(kinds) > 3 else [])
    rows = []
    for k, f in r.fits.items():
        e, u = f.error, f.unexplained
        rows.append(
            [LABELS.get(k, k), fmt(f.weight_change, digits=4), fmt(f.output_change_rms, digits=4)]
            + [fmt(u.value, u.stderr, 3) if u.value is not None else "no change"]
            + [fmt(e[x].value, e[x].stderr) if x in e else "–" for x in kinds]
        )
    p, w = r.pgr, r.error_weak
    lines = [
        f"{r.recipe}; {r.n_test} test rows; weak teacher test MSE {fmt(w.value, w.stderr)}",
        "PGR: " + ", ".join(f"{x.replace('_', ' ')} {fmt(p[x].value, p[x].stderr, 3)}" for x in p),
        "weights moved: |θ1 - θ0| / |θ0| over the trained parameters; unexplained: |Δf - J dθ| / |Δf| on the test rows "
        "(0: the kernel regime; 1 or more: outside it)",
    ]
    if len(kinds) > 3:
        lines.append("linearised (from start): f0 + the ridgeless fit of the residual on the fit's gradient features")
    return [Block("first-order (kernel-regime) check of a finetune", cols, rows, lines)]


# synth ---------------------------------------------------------------------------------------------------
def synth_blocks(r: SynthResult) -> list[Block]:
    c = r.config
    cols = ["quantity", "measured ± se", "predicted (exact)", "asymptotic", "(measured - predicted) / se"]
    rows = []
    for k in ("weak", "w2s", "strong_sft", "ceiling", "pgr", "opr"):
        m, se, p, a = r.measured[k], r.stderr[k], r.predicted[k], r.asymptotic[k]
        z = "" if None in (m, p) or not se else f"{(m - p) / se:+.2f}"
        name = {"pgr": "PGR", "opr": "OPR"}.get(k, f"ER {k}")
        rows.append([name, fmt(m, se), fmt(p), fmt(a), z])
    lim = r.limits
    line = (
        f"d_s = {c.d_s}, d_w = {c.d_w}, d_sw = {r.d_sw:.3f} (drawn subspaces); n = {c.n_labeled}, "
        f"N = {c.n_pseudo}, sigma = {c.sigma}; N -> inf: PGR -> {lim['pgr']:.3f}, OPR -> "
        f"{fmt(lim['opr'], digits=3)}; W2S beats the teacher iff N > {lim['n_pseudo_threshold']:g}"
    )
    return [Block(f"synthetic ridgeless W2S, {c.trials} trials: measured vs predicted", cols, rows, [line])]


def synth_sweep_blocks(points: list[SynthPoint], sweep: str) -> list[Block]:
    cols = [
        sweep,
        "d_sw",
        "ER w2s measured",
        "ER w2s predicted",
        "PGR measured",
        "PGR predicted",
        "OPR measured",
        "OPR predicted",
    ]
    body = []
    for point in points:
        r = point.result
        m, p = r.measured, r.predicted
        body.append(
            [
                f"{point.value:g}",
                f"{r.d_sw:.2f}",
                fmt(m["w2s"]),
                fmt(p["w2s"]),
                fmt(m["pgr"]),
                fmt(p["pgr"]),
                fmt(m["opr"]),
                fmt(p["opr"]),
            ]
        )
    return [Block(f"synth sweep over {sweep}", cols, body)]


# sweep ---------------------------------------------------------------------------------------------------
def _sweep_row(names: list[str], p: SweepPoint) -> list[str]:
    s = p.summary
    m, t = s.metrics, s.theory
    d = t.dimensions if t else None
    pred = t.predicted if t else None
    acc = m.accuracy or dict.fromkeys(MODELS)
    return (
        [p.params[n] for n in names]
        + [fmt(d and d.d_w, digits=0), fmt(d and d.d_s, digits=0), fmt(d and d.d_sw, digits=1)]
        + [fmt(acc["weak"], digits=3), fmt(acc["w2s"], digits=3)]
        + [fmt(m.pgr, m.pgr_stderr, 3), fmt(pred and pred.pgr, digits=3), fmt(t and t.theory.pgr, digits=3)]
        + [fmt(m.opr, m.opr_stderr, 3), fmt(pred and pred.opr, digits=3), fmt(t and t.theory.opr, digits=3)]
    )


def sweep_blocks(result: Sweep) -> list[Block]:
    names = result.vary
    cols = names + [
        "d_w",
        "d_s",
        "d_sw",
        "weak acc",
        "W2S acc",
        "PGR ± se",
        "PGR label-light",
        "PGR theory",
        "OPR ± se",
        "OPR label-light",
        "OPR theory",
    ]
    body = [_sweep_row(names, p) for p in result.points]
    lines = [f"{result.trials} trial(s) per point; ± one standard error over trials (over test rows for one)"]
    for group, rho in (result.spearman_pgr_vs_overlap or {}).items():
        lines.append(f"Spearman's rank correlation of PGR with d_sw/d_w ({group}): {fmt(rho, digits=2)}")
    return [Block(f"sweep over {', '.join(names)}", cols, body, lines)]


# rank-teachers -------------------------------------------------------------------------------------------
def rank_blocks(r: Ranking) -> list[Block]:
    measured, finetuned = r.measured, r.proxy is not None
    pgr = "predicted PGR (biased high)" if finetuned else "predicted PGR"
    cols = ["rank", "weak teacher", "d_w", "d_sw", "d_sw/d_w", "predicted W2S error", pgr, "predicted OPR"]
    cols += ["measured W2S error", "measured PGR", "measured OPR"] if measured else []
    body = []
    for i, t in enumerate(r.teachers, start=1):
        p = t.predicted
        row = [
            str(i),
            t.weak,
            fmt(t.d_w, digits=0),
            fmt(t.d_sw, digits=1),
            fmt(t.d_sw / t.d_w, digits=3),
            fmt(p.error_w2s, p.error_w2s_stderr),
            fmt(p.pgr, digits=3),
            fmt(p.opr, digits=3),
        ]
        if measured:
            m = t.measured
            row += [fmt(m.error_w2s, m.error_w2s_stderr), fmt(m.pgr, digits=3), fmt(m.opr, digits=3)]
        body.append(row)
    lines = [
        f"strong {r.strong}; n = {r.n_labeled} labels, N = {r.n_pseudo} unlabelled rows; {r.trials} split "
        "draw(s); predictions use no test label and no label of the N rows (leave-one-out on the n labelled rows)"
    ]
    if finetuned:
        lines += _proxy_lines(r)
    for tie in r.near_ties:
        a, b = tie.teachers
        lines.append(
            f"near-tie: {a} and {b} differ by {tie.difference:.4f} ± {tie.stderr:.4f} (paired over the n "
            "labelled rows): their order is not settled"
        )
    if measured:
        miss = r.max_relative_error
        lines.append(
            f"Spearman's rank correlation, predicted vs measured W2S error: {fmt(r.spearman, digits=2)}; largest "
            f"relative miss {fmt(None if miss is None else 100 * miss, digits=1)}%"
        )
    student = "finetuned W2S student" if finetuned else "W2S student"
    return [Block(f"weak teachers ranked by predicted {student} error (lowest first)", cols, body, lines)]


def _proxy_lines(r: Ranking) -> list[str]:
    """A finetuned ranking: how it predicted, why it ranks by W2S error, and its cost beside the full finetunes."""
    p, c = r.proxy, r.cost
    train, epochs = p.recipe.get("train"), p.recipe.get("epochs")
    reused = f", {c.reused} reused" if c.reused else ""
    times = "" if c.ratio is None else f"{c.ratio:.2f}x "
    cost = (
        f"cost: the proxies took {c.seconds:,.0f} s ({c.wall_seconds:,.0f} s in this run{reused}), {times}the "
        f"{c.full_estimated_seconds:,.0f} s estimated here for finetuning a student per teacher in full"
    )
    if c.full_measured_seconds is not None:
        times = "" if c.measured_ratio is None else f"{c.measured_ratio:.2f}x "
        cost += f"; {times}the {c.full_measured_seconds:,.0f} s those finetunes took (--measure)"
    return [
        f"per teacher and draw: a {p.epochs}-epoch W2S finetune (--train {train}, of the recipe's {epochs} epochs), "
        f"then the label-light predictions in its after-kernel ({p.kernel})",
        p.note,
        cost,
    ]
