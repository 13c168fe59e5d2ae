"""The `w2s` command line: each subcommand parses options, calls one library function, prints.

Data on stdout (an artifact's path, a table, or one JSON object), progress and notes on stderr. A user
mistake (a bad value, a missing file, mismatched artifacts) prints one line `w2s: error: ...` on stderr and
exits 2. Stage modules are imported inside their commands so that `w2s --help` answers without torch.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from w2s_cli.cli.options import SUBSPACE_HELP, takes
from w2s_cli.errors import W2SError, printable
from w2s_cli.options import (
    BackboneSpec,
    DataOptions,
    ExtractOptions,
    HeadOptions,
    RunOptions,
    Solver,
    SplitOptions,
    SubspaceOptions,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Weak-to-strong (W2S) experiments on real vision backbones.",
)


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
    from w2s_cli.distributed import world

    if not world().main:
        return
    if summary:
        sys.stderr.write(summary + "\n")
    sys.stdout.write(f"{path}\n")


def _show_report(result: Path, as_json: bool, as_markdown: bool) -> None:
    from w2s_cli.report.render import print_json, report_blocks, show
    from w2s_cli.report.summary import load_result, summary

    s = summary(load_result(result))
    if as_json:
        print_json(s)
    else:
        show(report_blocks(s), markdown=as_markdown)


@app.command()
@takes(required=("data",), data=DataOptions, extract=ExtractOptions)
def extract(
    data: DataOptions,
    extract: ExtractOptions,
    model: str = typer.Option(..., "--model", help="timm model name: plain, tagged (resnet18.a1_in1k) or hf-hub:..."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size in px (default: the model's)."),
    weights: str | None = typer.Option(None, "--weights", help="Weights file (.safetensors, or a torch checkpoint)."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="Pretrained or seeded random."),
    limit: int | None = typer.Option(None, "--limit", help="Extract K random samples (each split keeps its share)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --limit draw and of random weights."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Output artifact (.safetensors)."),
) -> None:
    """Penultimate pooled embeddings of every sample, from any timm backbone (resumable; torchrun-ready)."""
    from w2s_cli.extraction.extract import extract as run_extract

    if out is None:
        slug = data.data.replace(":", "-").replace("/", "_").strip("_")
        out = Path(f"{slug}_{model.replace('/', '_')}_{image_size or 'native'}px.safetensors")
    spec = BackboneSpec(model, image_size, weights, pretrained)
    emit_path(run_extract(data, spec, out, extract, limit=limit, seed=seed))


@app.command("train-weak")
@takes(split=SplitOptions)
def train_weak(
    split: SplitOptions,
    weak: str | None = typer.Argument(None, help="Weak embeddings artifact (or '-' / stdin)."),
    solver: Solver = typer.Option("ridgeless", "--solver", help="The teacher's head."),
    subspace: str = typer.Option("auto", "--subspace", help=SUBSPACE_HELP),
    energy: float = typer.Option(0.90, "--energy", help="Variance fraction for --subspace auto."),
    out: Path | None = typer.Option(None, "-o", "--out"),
) -> None:
    """Draw and store the split; fit the weak basis and the teacher on n labels."""
    from w2s_cli.stages.teacher import train_weak as run
    from w2s_cli.store.artifact import read_meta
    from w2s_cli.store.outputs import default_out

    src = input_path(weak, "weak embeddings")
    n_pseudo = split.n_pseudo if _given("--n-pseudo") else None
    path = run(src, out or default_out(src, "teacher"), split, SubspaceOptions(subspace, energy), solver, n_pseudo)
    meta = read_meta(path)
    acc = meta["test_accuracy"]
    dim = meta["subspace"]["dim"]
    emit_path(
        path,
        f"teacher: test MSE {meta['test_error']:.4f}"
        + (f", accuracy {acc:.4f}" if acc is not None else "")
        + f"; d_w = {dim or 'full width'}; N = {meta['split']['n_pseudo']} pseudo rows drawn",
    )


def _given(flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in sys.argv[1:])


@app.command()
def pseudolabel(
    teacher: str | None = typer.Argument(None, help="Teacher artifact (or '-' / stdin)."),
    n_pseudo: int | None = typer.Option(
        None, "--n-pseudo", help="Label this many of the teacher's N rows (default all)."
    ),
    hard: bool = typer.Option(False, "--hard/--soft", help="One-hot (hard) or the teacher's raw outputs (soft)."),
    embeddings: str | None = typer.Option(None, "--embeddings", help="Weak embeddings (default: the teacher's)."),
    out: Path | None = typer.Option(None, "-o", "--out"),
) -> None:
    """Label the teacher's N pool samples with its outputs."""
    from w2s_cli.stages.teacher import pseudolabel as run
    from w2s_cli.store.artifact import read_meta
    from w2s_cli.store.outputs import default_out

    src = input_path(teacher, "teacher")
    path = run(src, out or default_out(src, "pseudolabels"), n_pseudo, hard, embeddings)
    acc = read_meta(path)["pseudo_label_accuracy"]
    emit_path(path, f"pseudo-label accuracy {acc:.4f}" if acc is not None else "")


@app.command("fit-student")
def fit_student(
    pseudo: str | None = typer.Argument(None, help="Pseudo-labels artifact (or '-' / stdin)."),
    strong: str = typer.Option(..., "--strong", help="Strong embeddings artifact (same samples)."),
    weak: str | None = typer.Option(None, "--weak", help="Weak embeddings (default: the teacher's, if found)."),
    solver: Solver = typer.Option("ridgeless", "--solver", help="Student, SFT and ceiling head."),
    subspace: str = typer.Option("auto", "--subspace", help=SUBSPACE_HELP),
    energy: float = typer.Option(0.90, "--energy", help="Variance fraction for --subspace auto."),
    dimensions: bool = typer.Option(True, "--dimensions/--no-dimensions", help="Analyse d_sw, variance, bias."),
    out: Path | None = typer.Option(None, "-o", "--out"),
) -> None:
    """Fit the W2S student, strong SFT and ceiling; evaluate all four; say what the theory explains."""
    from w2s_cli.stages.student import fit_student as run
    from w2s_cli.store.artifact import read_meta
    from w2s_cli.store.outputs import default_out

    src = input_path(pseudo, "pseudo-labels")
    path = run(
        src, strong, out or default_out(src, "result"), solver, SubspaceOptions(subspace, energy), dimensions, weak
    )
    t = read_meta(path)["trials"][0]
    pgr = "undefined" if t["pgr"] is None else f"{t['pgr']:.3f}"
    emit_path(path, f"test MSE: weak {t['error']['weak']:.4f}, w2s {t['error']['w2s']:.4f}; PGR {pgr}")


@app.command()
def report(
    result: str | None = typer.Argument(None, help="Result artifact (or '-' / stdin)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    as_markdown: bool = typer.Option(False, "--markdown", help="Markdown tables."),
) -> None:
    """Errors, accuracies, PGR, OPR, and what the theory explains, of a result."""
    _show_report(input_path(result, "result"), as_json, as_markdown)


def run_options(
    weak: str,
    weak_size: int | None,
    strong: str,
    strong_size: int | None,
    weak_weights: str | None,
    strong_weights: str | None,
    pretrained: bool,
    split: SplitOptions,
    head: HeadOptions,
    subspace: str,
    weak_subspace: str | None,
    strong_subspace: str | None,
    energy: float,
    trials: int,
    limit: int | None,
    dimensions: bool,
) -> RunOptions:
    """RunOptions from run's flat options: MODEL[@PX] (or --weak-size/--strong-size) and the subspaces."""
    w = BackboneSpec.parse(weak, weak_weights, pretrained)
    s = BackboneSpec.parse(strong, strong_weights, pretrained)
    if "@" not in weak:
        w = BackboneSpec(w.model, weak_size, weak_weights, pretrained)
    if "@" not in strong:
        s = BackboneSpec(s.model, strong_size, strong_weights, pretrained)
    return RunOptions(
        weak=w, strong=s, split=split, head=head, trials=trials, limit=limit, seed=split.seed, dimensions=dimensions,
        weak_subspace=SubspaceOptions(weak_subspace or subspace, energy),
        strong_subspace=SubspaceOptions(strong_subspace or subspace, energy),
    )  # fmt: skip


@app.command()
@takes(data=DataOptions, extract=ExtractOptions, split=SplitOptions, head=HeadOptions)
def run(
    data: DataOptions,
    extract: ExtractOptions,
    split: SplitOptions,
    head: HeadOptions,
    weak: str = typer.Option("tf_efficientnet_lite0", "--weak", help="Weak timm model, MODEL or MODEL@PX."),
    weak_size: int | None = typer.Option(64, "--weak-size", help="Weak input size (px) when --weak has no @PX."),
    strong: str = typer.Option("tf_efficientnet_lite2", "--strong", help="Strong timm model, MODEL or MODEL@PX."),
    strong_size: int | None = typer.Option(112, "--strong-size", help="Strong input size when --strong has no @PX."),
    weak_weights: str | None = typer.Option(None, "--weak-weights"),
    strong_weights: str | None = typer.Option(None, "--strong-weights"),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained"),
    trials: int = typer.Option(1, "--trials", help="Split draws (seeds seed..seed+T-1); mean and standard error."),
    subspace: str = typer.Option("auto", "--subspace", help=SUBSPACE_HELP),
    weak_subspace: str | None = typer.Option(None, "--weak-subspace", help="The weak basis (default: --subspace)."),
    strong_subspace: str | None = typer.Option(
        None, "--strong-subspace", help="The strong basis (default: --subspace)."
    ),
    energy: float = typer.Option(0.90, "--energy", help="Variance fraction for --subspace auto."),
    limit: int | None = typer.Option(None, "--limit", help="Samples to extract (default: just enough)."),
    reuse: bool = typer.Option(True, "--reuse/--no-reuse", help="Reuse embeddings already extracted to --out-dir."),
    dimensions: bool = typer.Option(True, "--dimensions/--no-dimensions", help="Analyse d_sw, variance, bias."),
    out_dir: Path = typer.Option(Path("w2s-run"), "--out-dir"),
    as_json: bool = typer.Option(False, "--json"),
    as_markdown: bool = typer.Option(False, "--markdown"),
) -> None:
    """The whole pipeline: extract weak and strong, train-weak, pseudolabel, fit-student, report."""
    from w2s_cli.stages.run import run as run_all

    options = run_options(weak, weak_size, strong, strong_size, weak_weights, strong_weights, pretrained, split, head,
                          subspace, weak_subspace, strong_subspace, energy, trials, limit, dimensions)  # fmt: skip
    path = run_all(out_dir, data, options, extract, reuse)
    sys.stderr.write(f"result: {path}\n")
    _show_report(path, as_json, as_markdown)


@app.command("intrinsic-dim")
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
    from w2s_cli.report.render import intrinsic_blocks, print_json, show
    from w2s_cli.stages.intrinsic import intrinsic_dim as run

    r = run(
        input_path(weak, "weak embeddings"), strong, energy, center, estimator, method, max_samples, seed, plot, out
    )
    if out is not None:
        sys.stderr.write(f"wrote {r['artifact']}\n")
    if as_json:
        print_json(r)
    else:
        show(intrinsic_blocks(r))


@app.command()
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
    from dataclasses import asdict

    from w2s_cli.numerics.synth import SWEEPS, SynthConfig, run_sweep, run_synth
    from w2s_cli.report.plots import plot_synth_sweep, synth_csv
    from w2s_cli.report.render import print_json, show, synth_blocks, synth_sweep_blocks
    from w2s_cli.store.outputs import check_output

    cfg = SynthConfig(ambient, d_s, d_w, shared, n_labeled, n_pseudo, sigma, trials, seed, rest)
    if sweep is None:
        r = run_synth(cfg)
        print_json(r) if as_json else show(synth_blocks(r))
        return
    if sweep not in SWEEPS:
        raise W2SError(f"--sweep must be one of {', '.join(SWEEPS)}, not '{printable(sweep)}'")
    try:
        vals = [float(v) for v in values.split(",")] if values else None
    except ValueError:
        raise W2SError(f"--values must be comma-separated numbers, not '{printable(values)}'") from None
    png = check_output(plot or Path(f"synth-{sweep}.png"), option="--plot")
    table = check_output(csv_out or Path(f"synth-{sweep}.csv"), option="--csv")
    rows = run_sweep(cfg, sweep, vals)
    fixed = {k: v for k, v in asdict(cfg).items() if k not in (SWEEPS[sweep], "seed")}
    plot_synth_sweep(rows, sweep, fixed, cfg.d_s, png)
    synth_csv(rows, sweep, table)
    sys.stderr.write(f"wrote {png} and {table}\n")
    if as_json:
        print_json({"sweep": sweep, "plot": str(png), "csv": str(table), "points": rows})
    else:
        show(synth_sweep_blocks(rows, sweep))


def _terminate(signum, frame):  # SIGTERM: unwind like Ctrl-C so that temp files are removed
    raise KeyboardInterrupt


def _is(exc: BaseException, name: str) -> bool:
    """Whether exc is click's exception `name` (typer may vendor its own click, so match by class name)."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def main() -> None:
    """Entry point: every user mistake, usage errors included, becomes one line and exit code 2."""
    signal.signal(signal.SIGTERM, _terminate)
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    hint = f"try 'w2s {command} --help'" if command in app_commands() else "try 'w2s --help'"
    code = 1
    try:
        code = app(standalone_mode=False)
    except W2SError as exc:
        sys.stderr.write(f"w2s: error: {printable(' '.join(exc.message.split()))}\n")
        code = 2
    except KeyboardInterrupt:
        sys.stderr.write("w2s: interrupted (rerun the same command to resume an extraction)\n")
        code = 130
    except BrokenPipeError:  # the reader of our stdout went away (e.g. `| head`)
        sys.stderr.close()
        code = 0
    except Exception as exc:
        if _is(exc, "NoArgsIsHelpError"):
            ctx = getattr(exc, "ctx", None)
            sys.stdout.write((ctx.get_help() if ctx else "") + "\n")
            code = 0
        elif _is(exc, "UsageError"):
            message = printable(" ".join(exc.format_message().split()))
            sys.stderr.write(f"w2s: error: {message} ({hint})\n")
            code = 2
        elif _is(exc, "Abort"):
            sys.stderr.write("w2s: interrupted\n")
            code = 130
        else:
            raise
    finally:
        from w2s_cli.distributed import shutdown

        shutdown()
    sys.exit(code if isinstance(code, int) else 0)


def app_commands() -> list[str]:
    return [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]


if __name__ == "__main__":
    main()
