"""The `w2s` command line: each subcommand parses options, calls one library function, prints.

Data on stdout (an artifact's path, a table, or one JSON object), progress and notes on stderr. A user
mistake prints one line `w2s: error: ...` on stderr and exits 2. Stage modules are imported inside their
commands so that `w2s --help` answers without loading torch and timm.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from w2s_cli.errors import W2SError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Weak-to-strong (W2S) experiments on real vision backbones.",
)


def _json_default(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def _clean(x: Any) -> Any:
    """NaN/inf become null: the JSON we print is strict."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(_clean(obj), default=_json_default) + "\n")


def user_errors(fn: Callable) -> Callable:
    """Turn W2SError (and Ctrl-C) into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except W2SError as exc:
            sys.stderr.write(f"w2s: error: {exc.message}\n")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            sys.stderr.write("w2s: interrupted\n")
            raise typer.Exit(130) from None

    return wrapper


def input_path(arg: str | None, what: str) -> Path:
    """The main input: the argument, or (when it is '-' or omitted) the path on stdin's first line."""
    if arg not in (None, "-"):
        return Path(arg)
    if sys.stdin is None or sys.stdin.isatty():
        raise W2SError(f"missing {what}: give a path, or pipe one in from the previous command")
    for line in sys.stdin:
        if line.strip():
            return Path(line.strip())
    raise W2SError(f"missing {what}: nothing arrived on stdin (did the previous command fail?)")


def emit_path(path: Path, summary: str = "") -> None:
    """An artifact-producing command's stdout is its artifact's path; anything else goes to stderr."""
    if summary:
        sys.stderr.write(summary + "\n")
    sys.stdout.write(f"{path}\n")


def default_out(src: Path, kind: str) -> Path:
    """weak.safetensors -> weak.teacher.safetensors; weak.teacher.safetensors -> weak.pseudolabels.safetensors."""
    stem = src.name.removesuffix(".safetensors")
    for k in ("teacher", "pseudolabels", "result"):
        stem = stem.removesuffix(f".{k}")
    return src.with_name(f"{stem}.{kind}.safetensors")


SUBSPACE_HELP = (
    "Fit inside the top-K principal directions of the training samples: none, auto (K = spectral "
    "intrinsic dimension at --energy) or K."
)


@app.command()
@user_errors
def extract(
    data: str = typer.Option(..., "--data", help="fashion-mnist | digits | folder:PATH | csv:PATH | torchvision:NAME"),
    model: str = typer.Option(..., "--model", help="timm model name, e.g. tf_efficientnet_lite0"),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size in px (default: the model's)."),
    weights: str | None = typer.Option(None, "--weights", help="Weights file (.safetensors, or .pth)."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="Pretrained or seeded random."),
    limit: int | None = typer.Option(None, "--limit", help="Extract K random samples (each split keeps its share)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --limit draw and of random weights."),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps"),
    num_workers: int | None = typer.Option(None, "--num-workers", help="DataLoader workers (default: cores-1)."),
    root: str | None = typer.Option(None, "--root", help="Folder holding the dataset files."),
    download: bool = typer.Option(False, "--download", help="Let torchvision download the dataset."),
    target_column: str | None = typer.Option(None, "--target-column", help="csv: the target column."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Output artifact (.safetensors)."),
) -> None:
    """Penultimate pooled embeddings of every sample, from any timm backbone."""
    from w2s_cli.extract import extract as run_extract

    if out is None:
        slug = data.replace(":", "-").replace("/", "_").strip("_")
        out = Path(f"{slug}_{model}_{image_size or 'native'}px.safetensors")
    path = run_extract(
        data,
        model,
        out,
        image_size,
        weights,
        pretrained,
        limit,
        seed,
        batch_size,
        device,
        num_workers,
        root,
        download,
        target_column,
        quiet,
    )
    emit_path(path)


@app.command("train-weak")
@user_errors
def train_weak(
    weak: str | None = typer.Argument(None, help="Weak embeddings artifact (or '-' / stdin)."),
    n_labeled: int = typer.Option(1000, "--n-labeled", help="n: true labels the teacher is fit on."),
    n_test: int = typer.Option(2000, "--n-test", help="Test samples (from the dataset's test split if it has one)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the labelled / pseudo-label draws."),
    test_seed: int = typer.Option(0, "--test-seed", help="Seed of the test draw (keep it fixed across trials)."),
    solver: str = typer.Option("ridgeless", "--solver", help="ridgeless | ridge | logistic"),
    subspace: str = typer.Option("none", "--subspace", help=SUBSPACE_HELP),
    energy: float = typer.Option(0.99, "--energy", help="Energy fraction for --subspace auto."),
    out: Path | None = typer.Option(None, "-o", "--out"),
) -> None:
    """Draw and store the split; fit the weak teacher on n true labels."""
    from w2s_cli import artifacts
    from w2s_cli.teacher import train_weak as run

    src = input_path(weak, "weak embeddings")
    path = run(src, out or default_out(src, "teacher"), n_labeled, n_test, seed, test_seed, solver, subspace, energy)
    meta = artifacts.read_meta(path)
    acc = meta["test_accuracy"]
    emit_path(
        path, f"teacher: test MSE {meta['test_error']:.4f}" + (f", accuracy {acc:.4f}" if acc is not None else "")
    )


@app.command()
@user_errors
def pseudolabel(
    teacher: str | None = typer.Argument(None, help="Teacher artifact (or '-' / stdin)."),
    n_pseudo: int = typer.Option(8000, "--n-pseudo", help="N: pool samples to label."),
    hard: bool = typer.Option(False, "--hard/--soft", help="One-hot (hard) or the teacher's raw outputs (soft)."),
    embeddings: str | None = typer.Option(None, "--embeddings", help="Weak embeddings (default: the teacher's)."),
    out: Path | None = typer.Option(None, "-o", "--out"),
) -> None:
    """Label N samples of the pool with the weak teacher."""
    from w2s_cli import artifacts
    from w2s_cli.teacher import pseudolabel as run

    src = input_path(teacher, "teacher")
    path = run(src, out or default_out(src, "pseudolabels"), n_pseudo, hard, embeddings)
    acc = artifacts.read_meta(path)["pseudo_label_accuracy"]
    emit_path(path, f"pseudo-label accuracy {acc:.4f}" if acc is not None else "")


@app.command("fit-student")
@user_errors
def fit_student(
    pseudo: str | None = typer.Argument(None, help="Pseudo-labels artifact (or '-' / stdin)."),
    strong: str = typer.Option(..., "--strong", help="Strong embeddings artifact (same samples)."),
    solver: str = typer.Option("ridgeless", "--solver", help="ridgeless | ridge"),
    subspace: str = typer.Option("none", "--subspace", help=SUBSPACE_HELP),
    energy: float = typer.Option(0.99, "--energy", help="Energy fraction for --subspace auto and for d_s, d_w."),
    dimensions: bool = typer.Option(True, "--dimensions/--no-dimensions", help="Measure d_s, d_w, d_sw."),
    out: Path | None = typer.Option(None, "-o", "--out"),
) -> None:
    """Fit the W2S student, strong SFT and ceiling; evaluate all four models on the test split."""
    from w2s_cli import artifacts
    from w2s_cli.student import fit_student as run

    src = input_path(pseudo, "pseudo-labels")
    path = run(src, strong, out or default_out(src, "result"), solver, subspace, energy, dimensions)
    t = artifacts.read_meta(path)["trials"][0]
    pgr = "undefined" if t["pgr"] is None else f"{t['pgr']:.3f}"
    emit_path(path, f"test MSE: weak {t['error']['weak']:.4f}, w2s {t['error']['w2s']:.4f}; PGR {pgr}")


@app.command()
@user_errors
def report(
    result: str | None = typer.Argument(None, help="Result artifact (or '-' / stdin)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    as_markdown: bool = typer.Option(False, "--markdown", help="A markdown table."),
) -> None:
    """Errors, accuracies, PGR, OPR (and the theory's predictions) of a result."""
    from w2s_cli.report import load_result, summary

    s = summary(load_result(input_path(result, "result")))
    _show(s, as_json, as_markdown)


def _show(s: dict, as_json: bool, as_markdown: bool) -> None:
    from w2s_cli.report import markdown, render

    if as_json:
        theory = dict(s["theory"])
        theory.pop("lines", None)
        print_json({**s, "theory": theory})
    elif as_markdown:
        sys.stdout.write(markdown(s) + "\n")
    else:
        render(s, Console(width=max(120, Console().width)))


@app.command()
@user_errors
def run(
    data: str = typer.Option("fashion-mnist", "--data", help="Dataset SPEC (see extract)."),
    weak: str = typer.Option("tf_efficientnet_lite0", "--weak", help="Weak timm model."),
    weak_size: int | None = typer.Option(64, "--weak-size", help="Weak input size (px)."),
    strong: str = typer.Option("tf_efficientnet_lite2", "--strong", help="Strong timm model."),
    strong_size: int | None = typer.Option(112, "--strong-size", help="Strong input size (px)."),
    weak_weights: str | None = typer.Option(None, "--weak-weights"),
    strong_weights: str | None = typer.Option(None, "--strong-weights"),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained"),
    n_labeled: int = typer.Option(1000, "--n-labeled"),
    n_pseudo: int = typer.Option(8000, "--n-pseudo"),
    n_test: int = typer.Option(2000, "--n-test"),
    trials: int = typer.Option(1, "--trials", help="Split draws (seeds seed..seed+T-1); mean and standard error."),
    seed: int = typer.Option(0, "--seed"),
    test_seed: int = typer.Option(0, "--test-seed"),
    teacher_solver: str = typer.Option("ridgeless", "--teacher-solver", help="ridgeless | ridge | logistic"),
    solver: str = typer.Option("ridgeless", "--solver", help="Student solver: ridgeless | ridge"),
    subspace: str = typer.Option("none", "--subspace", help=SUBSPACE_HELP),
    energy: float = typer.Option(0.99, "--energy"),
    hard: bool = typer.Option(False, "--hard/--soft"),
    limit: int | None = typer.Option(None, "--limit", help="Samples to extract (default: just enough)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    num_workers: int | None = typer.Option(None, "--num-workers"),
    root: str | None = typer.Option(None, "--root"),
    download: bool = typer.Option(False, "--download"),
    reuse: bool = typer.Option(True, "--reuse/--no-reuse", help="Reuse embeddings already extracted to --out-dir."),
    dimensions: bool = typer.Option(True, "--dimensions/--no-dimensions", help="Measure d_s, d_w, d_sw."),
    out_dir: Path = typer.Option(Path("w2s-run"), "--out-dir"),
    as_json: bool = typer.Option(False, "--json"),
    as_markdown: bool = typer.Option(False, "--markdown"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """The whole pipeline: extract weak and strong, train-weak, pseudolabel, fit-student, report."""
    from w2s_cli.pipeline import run as run_all
    from w2s_cli.report import load_result, summary

    path = run_all(
        out_dir,
        data,
        weak,
        weak_size,
        strong,
        strong_size,
        weak_weights,
        strong_weights,
        pretrained,
        n_labeled,
        n_pseudo,
        n_test,
        trials,
        seed,
        test_seed,
        teacher_solver,
        solver,
        subspace,
        energy,
        hard,
        limit,
        batch_size,
        device,
        num_workers,
        root,
        download,
        reuse,
        dimensions,
        quiet,
    )
    sys.stderr.write(f"result: {path}\n")
    _show(summary(load_result(path)), as_json, as_markdown)


@app.command("intrinsic-dim")
@user_errors
def intrinsic_dim(
    weak: str | None = typer.Argument(
        None, help="Weak embeddings: our artifact, or .npy/.npz/.safetensors (or stdin)."
    ),
    strong: str | None = typer.Argument(None, help="Strong embeddings of the same samples (optional)."),
    energy: float = typer.Option(0.99, "--energy", help="Energy fraction for the spectral d."),
    center: bool = typer.Option(True, "--center/--no-center", help="Centre the embeddings first."),
    estimator: str = typer.Option("spectral,pr,twonn,mle", "--estimator", help="Comma list: spectral,pr,twonn,mle."),
    method: str = typer.Option("subspace", "--method", help="d_sw: subspace (ours) or authors (for parity)."),
    max_samples: int = typer.Option(5000, "--max-samples", help="Rows drawn for the nearest-neighbour estimators."),
    seed: int = typer.Option(0, "--seed"),
    plot: Path | None = typer.Option(None, "--plot", help="PNG of the spectra's cumulative energy."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Also write an intrinsic_dim artifact."),
) -> None:
    """Intrinsic dimensions d_w (and d_s) and the weak-strong overlap d_sw of embeddings."""
    from w2s_cli.intrinsic import intrinsic_dim as run

    r = run(
        input_path(weak, "weak embeddings"), strong, energy, center, estimator, method, max_samples, seed, plot, out
    )
    if out is not None:
        sys.stderr.write(f"wrote {r['artifact']}\n")
    if as_json:
        print_json(r)
        return
    roles = [k for k in ("weak", "strong") if k in r]
    table = Table(title=f"intrinsic dimension ({'centred' if center else 'uncentred'})")
    cols = ["", "samples", "width", "rank", "d@0.90", "d@0.95", "d@0.99", f"d@{energy:g}", "PR"]
    chosen = f"{energy:.2f}" not in r["weak"]["d_at"]  # show the chosen energy's d only when it is not listed
    if not chosen:
        cols.remove(f"d@{energy:g}")
    extra = [k for k in ("twonn", "mle") if k in r["weak"]]
    for col in cols + [{"twonn": "TwoNN", "mle": "MLE"}[k] for k in extra]:
        table.add_column(col)
    for role in roles:
        x = r[role]
        table.add_row(
            role,
            str(x["m"]),
            str(x["width"]),
            str(x["rank"]),
            *(str(v) for v in x["d_at"].values()),
            str(x["d"]),
            f"{x['participation_ratio']:.1f}",
            *(f"{x[k]:.1f}" for k in extra),
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    if "d_sw" in r:
        line = f"d_sw = {r['d_sw']:.2f} (null d_s d_w / m = {r['d_sw_null']:.2f}"
        if "d_sw_corrected" in r:
            line += f", null-corrected {r['d_sw_corrected']:.2f}"
        line += f"); method: {r['method']}"
        console.print(line, highlight=False, markup=False)
        if "canonical_correlations" in r:
            top = ", ".join(f"{c:.3f}" for c in r["canonical_correlations"][:8])
            console.print(
                f"canonical correlations (top 8 of {len(r['canonical_correlations'])}): {top}", highlight=False
            )


@app.command()
@user_errors
def synth(
    ambient: int = typer.Option(50, "--ambient", help="D: ambient dimension of x ~ N(0, I_D)."),
    d_s: int = typer.Option(8, "--d-s", help="Dimension of the strong subspace V_s."),
    d_w: int = typer.Option(24, "--d-w", help="Dimension of the weak subspace V_w."),
    shared: int = typer.Option(3, "--shared", help="Directions V_s and V_w share exactly."),
    rest: str = typer.Option("random", "--rest", help="The rest of V_w: random, or orthogonal to V_s."),
    n_labeled: int = typer.Option(90, "--n-labeled", help="n: labels for the teacher."),
    n_pseudo: int = typer.Option(300, "--n-pseudo", help="N: pseudo-labels for the student."),
    sigma: float = typer.Option(0.7, "--sigma", help="Label noise standard deviation."),
    trials: int = typer.Option(2000, "--trials"),
    seed: int = typer.Option(0, "--seed"),
    sweep: str | None = typer.Option(None, "--sweep", help="n-pseudo | n-labeled | sigma | shared"),
    values: str | None = typer.Option(None, "--values", help="Comma-separated sweep values (default: a range)."),
    plot: Path | None = typer.Option(None, "--plot", help="Sweep figure (default synth-<sweep>.png)."),
    csv_out: Path | None = typer.Option(None, "--csv", help="Sweep table (default synth-<sweep>.csv)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Monte-Carlo check of the theory on synthetic ridgeless W2S: measured vs predicted."""
    from w2s_cli.synth import SynthConfig, plot_sweep, run_sweep, run_synth, write_csv

    cfg = SynthConfig(ambient, d_s, d_w, shared, n_labeled, n_pseudo, sigma, trials, seed, rest)
    if sweep is None:
        r = run_synth(cfg)
        if as_json:
            print_json(r)
        else:
            _show_synth(r)
        return
    try:
        vals = [float(v) for v in values.split(",")] if values else None
    except ValueError:
        raise W2SError(f"--values must be comma-separated numbers, not '{values}'") from None
    rows = run_sweep(cfg, sweep, vals)
    png = plot_sweep(rows, sweep, cfg, plot or Path(f"synth-{sweep}.png"))
    table = write_csv(rows, sweep, csv_out or Path(f"synth-{sweep}.csv"))
    sys.stderr.write(f"wrote {png} and {table}\n")
    if as_json:
        print_json({"sweep": sweep, "plot": str(png), "csv": str(table), "points": rows})
    else:
        _show_sweep(rows, sweep)


def _show_synth(r: dict) -> None:
    c = r["config"]
    table = Table(title=f"synthetic ridgeless W2S, {c['trials']} trials: measured vs predicted")
    for col in ("quantity", "measured ± se", "predicted (exact)", "asymptotic", "(measured - predicted) / se"):
        table.add_column(col)
    for k in ("weak", "w2s", "strong_sft", "ceiling", "pgr", "opr"):
        m, se, p, a = r["measured"][k], r["stderr"][k], r["predicted"][k], r["asymptotic"][k]
        z = "" if None in (m, p) or not se else f"{(m - p) / se:+.2f}"
        name = {"pgr": "PGR", "opr": "OPR"}.get(k, f"ER {k}")
        table.add_row(name, f"{m:.4f} ± {se:.4f}", f"{p:.4f}", f"{a:.4f}" if a is not None else "undefined", z)
    console = Console(width=max(120, Console().width))
    console.print(table)
    lim = r["limits"]
    opr_lim = "undefined" if lim["opr"] is None else f"{lim['opr']:.3f}"
    console.print(
        f"d_s = {c['d_s']}, d_w = {c['d_w']}, d_sw = {r['d_sw']:.3f} (drawn subspaces); n = {c['n_labeled']}, "
        f"N = {c['n_pseudo']}, sigma = {c['sigma']}; N -> inf: PGR -> {lim['pgr']:.3f}, OPR -> {opr_lim}; "
        f"W2S beats the teacher iff N > {lim['n_pseudo_threshold']:g}",
        highlight=False,
        soft_wrap=True,
    )


def _show_sweep(rows: list, sweep: str) -> None:
    table = Table(title=f"synth sweep over {sweep}")
    for col in (
        sweep,
        "d_sw",
        "ER w2s measured",
        "ER w2s predicted",
        "PGR measured",
        "PGR predicted",
        "OPR measured",
        "OPR predicted",
    ):
        table.add_column(col)

    def f(x: float | None) -> str:
        return "undefined" if x is None else f"{x:.4f}"

    for r in rows:
        m, p = r["measured"], r["predicted"]
        table.add_row(
            f"{r['value']:g}",
            f"{r['d_sw']:.2f}",
            f(m["w2s"]),
            f(p["w2s"]),
            f(m["pgr"]),
            f(p["pgr"]),
            f(m["opr"]),
            f(p["opr"]),
        )
    Console(width=max(120, Console().width)).print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
