"""The `w2s` command line: each subcommand parses options, calls one library function, prints.

Data on stdout (an artifact's path, a table, or one JSON object), progress and notes on stderr. A user
mistake (a bad value, a missing file, mismatched artifacts) prints one line `w2s: error: ...` on stderr and
exits 2. Stage modules are imported inside their commands so that `w2s --help` answers without torch.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from w2s_cli.cli.flags import (
    DRY_RUN_HELP,
    MODEL_HELP,
    STAGE_HELP,
    SUBSPACE_HELP,
    ExperimentFlags,
    ModelFlags,
    StudyFlags,
    TrackFlags,
    said,
    takes,
)
from w2s_cli.errors import W2SError, printable
from w2s_cli.options import (
    COLLECT,
    BackboneSpec,
    DataOptions,
    Device,
    ExecutorOptions,
    ExtractOptions,
    HeadOptions,
    Solver,
    SplitOptions,
    StudentKind,
    SubspaceOptions,
)
from w2s_cli.options.recipe import FLAGS as RECIPE_FLAGS
from w2s_cli.options.recipe import PROXY_EPOCHS, FinetuneRecipe

# the option groups of `run` and `sweep`
RUN_GROUPS = {
    "data": DataOptions,
    "extract": ExtractOptions,
    "split": SplitOptions,
    "head": HeadOptions,
    "models": ModelFlags,
    "flags": ExperimentFlags,
    "recipe": FinetuneRecipe,
}
if TYPE_CHECKING:
    from collections.abc import Callable

    from w2s_cli.options import RunOptions
    from w2s_cli.report.tracking import Tracking
    from w2s_cli.store.records import CostEstimate, Sweep

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


def _record_of(path: Path):
    """The typed record of the artifact a command just wrote (store/records/), for its summary line."""
    from w2s_cli.store.artifact import load

    return load(path).record


def _show_report(result: Path, as_json: bool, as_markdown: bool) -> None:
    from w2s_cli.report.render import print_json, report_blocks, show
    from w2s_cli.stages.summary import load_result, summary

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
    stage: int | None = typer.Option(None, "--stage", help=STAGE_HELP),
    limit: int | None = typer.Option(None, "--limit", help="Extract K random samples (each split keeps its share)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --limit draw and of random weights."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Output artifact (.safetensors)."),
    features: str = typer.Option(
        "embeddings", "--features", help="embeddings, or grad: per-sample gradients of what --train trains."
    ),
    train: str | None = typer.Option(None, "--train", help="grad: the trained set (head, last:K, lora:R, all)."),
    init: str | None = typer.Option(None, "--init", help="grad: start at this finetune result's LP-FT head."),
    init_fit: str | None = typer.Option(
        None, "--init-fit", help="With --init: which fit's head (w2s, strong_sft, ceiling; default: w2s)."
    ),
    init_epoch: str | None = typer.Option(
        None,
        "--init-epoch",
        help="With --init: that fit at its start, after epoch K, or its final weights (default: start for grad, "
        "final for embeddings).",
    ),
    proj_dim: int = typer.Option(2048, "--proj-dim", help="grad: values per sample (random projection)."),
    proj_seed: int = typer.Option(0, "--proj-seed", help="grad: seed of the projection and the output signs."),
) -> None:
    """Penultimate pooled embeddings of every sample, from any timm backbone (resumable; torchrun-ready);
    with --stage K, the pooled feature map of stage K (the model cut there: a weaker backbone); or, with
    --features grad, the finetuning's gradient features."""
    from w2s_cli.extraction.extract import extract as run_extract
    from w2s_cli.inputs.backbones import check_stage

    if features not in ("embeddings", "grad"):
        raise W2SError(f"--features must be embeddings or grad, not '{printable(features)}'")
    if features == "grad" and train is None:
        raise W2SError("--features grad needs --train SPEC (what finetuning trains: head, last:K, lora:R or all)")
    if features == "embeddings" and train is not None:
        raise W2SError("--train goes with --features grad (with --init, embeddings are of that finetune's network)")
    for given, flag in ((init_epoch, "--init-epoch"), (init_fit, "--init-fit")):
        if init is None and given is not None:
            raise W2SError(f"{flag} goes with --init RESULT")
    if stage is not None and (features == "grad" or init is not None):
        raise W2SError(
            f"--stage goes with plain embeddings, not with {'--features grad' if init is None else '--init'}"
        )
    init_fit = init_fit or "w2s"
    spec = BackboneSpec(model, image_size, weights, pretrained, stage)
    check_stage(model, stage)  # before any data is opened
    if out is None:
        from w2s_cli.store.cache import slug

        kind = f"_grad-{train.replace(':', '')}" if features == "grad" else ("_finetuned" if init else "")
        kind = f"_stage{stage}" if stage is not None else kind
        out = Path(f"{slug(data.data).strip('_')}_{slug(model)}_{image_size or 'native'}px{kind}.safetensors")
    if features == "embeddings" and init is None:
        emit_path(run_extract(data, spec, out, extract, limit=limit, seed=seed))
        return
    if features == "embeddings":  # the finetuned network's own embeddings: the after-kernel of its head
        from w2s_cli.diagnostics.grad_features import extract_finetuned

        made = extract_finetuned(
            data,
            spec,
            out,
            extract,
            init=init,
            init_fit=init_fit,
            init_epoch=init_epoch or "final",
            limit=limit,
            seed=seed,
        )
        emit_path(made)
        return
    from w2s_cli.diagnostics.grad_features import extract_gradients

    path = extract_gradients(
        data,
        spec,
        out,
        extract,
        train=train,
        init=init,
        init_fit=init_fit,
        init_epoch=init_epoch or "start",
        proj_dim=proj_dim,
        proj_seed=proj_seed,
        limit=limit,
        seed=seed,
    )
    record = _record_of(path).features
    d = record["measured"]["distortion"]
    error = d["diagonal_relative_error"]["mean"]
    emit_path(
        path, f"gradient features: k = {record['projection']['k']}; projection error {error:.4f} ({d['rows']} rows)"
    )


@app.command("train-weak")
@takes(split=SplitOptions)
def train_weak(
    ctx: typer.Context,
    split: SplitOptions,
    weak: str | None = typer.Argument(None, help="Weak embeddings artifact (or '-' / stdin)."),
    solver: Solver = typer.Option("ridgeless", "--solver", help="The teacher's head."),
    subspace: str = typer.Option(SubspaceOptions.subspace, "--subspace", help=SUBSPACE_HELP),
    energy: float = typer.Option(SubspaceOptions.energy, "--energy", help="Variance fraction for --subspace auto."),
    out: Path | None = typer.Option(None, "-o", "--out"),
) -> None:
    """Draw and store the split; fit the weak basis and the teacher on n labels."""
    from w2s_cli.stages.teacher import train_weak as run
    from w2s_cli.store.outputs import default_out

    src = input_path(weak, "weak embeddings")
    n_pseudo = split.n_pseudo if _given(ctx, "split__n_pseudo") else None
    path = run(
        src,
        out or default_out(src, "teacher"),
        split=split,
        subspace=SubspaceOptions(subspace, energy),
        solver=solver,
        n_pseudo=n_pseudo,
    )
    made = _record_of(path)
    acc = made.test_accuracy
    emit_path(
        path,
        f"teacher: test MSE {made.test_error:.4f}"
        + (f", accuracy {acc:.4f}" if acc is not None else "")
        + f"; d_w = {made.subspace.dim or 'full width'}; N = {made.split.n_pseudo} pseudo rows drawn",
    )


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the caller set parameter `name` (click knows; its default was not simply taken)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


@app.command()
def pseudolabel(
    teachers: list[str] | None = typer.Argument(
        None, help="Teacher artifact (or '-' / stdin); several with --combine.", show_default=False
    ),
    combine: str | None = typer.Option(
        None,
        "--combine",
        help="Combine several teachers of one split: mean, stack (simplex weights on the n "
        "labels' leave-one-out outputs) or confident (each row from the most confident teacher).",
    ),
    n_pseudo: int | None = typer.Option(
        None, "--n-pseudo", help="Label this many of the teacher's N rows (default all)."
    ),
    hard: bool = typer.Option(False, "--hard/--soft", help="One-hot (hard) or the teacher's raw outputs (soft)."),
    embeddings: str | None = typer.Option(None, "--embeddings", help="Weak embeddings (default: the teacher's)."),
    out: Path | None = typer.Option(None, "-o", "--out"),
) -> None:
    """Label the teacher's N pool samples with its outputs (or with several teachers' combination)."""
    from w2s_cli.stages.teacher import pseudolabel as run
    from w2s_cli.store.outputs import default_out

    teachers = teachers or []
    if combine is None and len(teachers) > 1:
        raise W2SError(f"{len(teachers)} teachers given: name how to combine them (--combine mean|stack|confident)")
    if combine is not None:
        path = _pseudolabel_combined(teachers, combine, out, n_pseudo=n_pseudo, hard=hard, embeddings=embeddings)
    else:
        src = input_path(teachers[0] if teachers else None, "teacher")
        path = run(src, out or default_out(src, "pseudolabels"), n_pseudo=n_pseudo, hard=hard, embeddings=embeddings)
    acc = _record_of(path).pseudo_label_accuracy
    emit_path(path, f"pseudo-label accuracy {acc:.4f}" if acc is not None else "")


def _pseudolabel_combined(
    teachers: list[str], rule: str, out: Path | None, *, n_pseudo: int | None, hard: bool, embeddings: str | None
) -> Path:
    """`pseudolabel T1 T2 ... --combine RULE`: the members named on the command line (stdin is one path)."""
    import hashlib

    from w2s_cli.stages.combine import pseudolabel_combined

    if embeddings is not None:
        raise W2SError("--embeddings names one teacher's embeddings; combined teachers each use their own")
    if "-" in teachers:
        raise W2SError("combined teachers are named on the command line, not read from stdin")
    if len(teachers) < 2:
        raise W2SError(f"--combine {printable(rule)} needs at least two teachers, got {len(teachers)}")
    if out is None:
        key = hashlib.sha256("\n".join(str(Path(t).resolve()) for t in teachers).encode()).hexdigest()[:8]
        out = Path(teachers[0]).with_name(f"combined-{printable(rule)}-{key}.pseudolabels.safetensors")
    return pseudolabel_combined([Path(t) for t in teachers], out, rule=rule, n_pseudo=n_pseudo, hard=hard)


@app.command("fit-student")
def fit_student(
    pseudo: str | None = typer.Argument(None, help="Pseudo-labels artifact (or '-' / stdin)."),
    strong: str = typer.Option(..., "--strong", help="Strong embeddings artifact (same samples)."),
    weak: str | None = typer.Option(None, "--weak", help="Weak embeddings (default: the teacher's, if found)."),
    solver: Solver = typer.Option("ridgeless", "--solver", help="Student, SFT and ceiling head."),
    subspace: str = typer.Option(SubspaceOptions.subspace, "--subspace", help=SUBSPACE_HELP),
    energy: float = typer.Option(SubspaceOptions.energy, "--energy", help="Variance fraction for --subspace auto."),
    dimensions: bool = typer.Option(True, "--dimensions/--no-dimensions", help="Analyse d_sw, variance, bias."),
    out: Path | None = typer.Option(None, "-o", "--out"),
) -> None:
    """Fit the W2S student, strong SFT and ceiling; evaluate all four; say what the theory explains."""
    from w2s_cli.stages.student import fit_student as run
    from w2s_cli.store.outputs import default_out

    src = input_path(pseudo, "pseudo-labels")
    path = run(
        src,
        strong,
        out or default_out(src, "result"),
        subspace=SubspaceOptions(subspace, energy),
        solver=solver,
        dimensions=dimensions,
        weak=weak,
    )
    t = _record_of(path).trials[0].metrics
    pgr = "undefined" if t.pgr is None else f"{t.pgr:.3f}"
    emit_path(path, f"test MSE: weak {t.error['weak']:.4f}, w2s {t.error['w2s']:.4f}; PGR {pgr}")


@app.command()
@takes(recipe=FinetuneRecipe, extract=ExtractOptions, study=StudyFlags)
def finetune(
    recipe: FinetuneRecipe,
    extract: ExtractOptions,
    study: StudyFlags,
    pseudo: str | None = typer.Argument(None, help="Pseudo-labels artifact (or '-' / stdin)."),
    strong: str = typer.Option(..., "--strong", help="Strong embeddings artifact: its network is finetuned."),
    subspace: str = typer.Option(
        SubspaceOptions.subspace, "--subspace", help="The strong basis of the LP-FT heads. " + SUBSPACE_HELP
    ),
    energy: float = typer.Option(SubspaceOptions.energy, "--energy", help="Variance fraction for --subspace auto."),
    data: str | None = typer.Option(None, "--data", help="The images, when not where STRONG's record says."),
    root: str | None = typer.Option(None, "--root", help="Folder holding the dataset files (with --data)."),
    out: Path | None = typer.Option(None, "-o", "--out"),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    predict: bool = typer.Option(
        True, "--predict/--no-predict", help="Label-light predictions from the W2S finetune's after-kernel."
    ),
) -> None:
    """Finetune the strong network on the teacher's labels (W2S), on n labels (SFT) and n + N (ceiling)."""
    from w2s_cli.stages.finetune import finetune as run
    from w2s_cli.store.outputs import default_out

    src = input_path(pseudo, "pseudo-labels")
    if dry_run:
        from w2s_cli.studies.finetune_cost import estimate_finetune

        return _dry_run(estimate_finetune(src, strong, recipe), out or default_out(src, "finetuned"), option="--out")
    images = DataOptions(data, root) if data else None
    path = run(
        src,
        strong,
        out=out or default_out(src, "finetuned"),
        recipe=recipe,
        subspace=SubspaceOptions(subspace, energy),
        data=images,
        extract=extract,
    )
    if predict:
        from w2s_cli.diagnostics.predict import predict_and_attach

        predict_and_attach(path, extract=extract, quiet=extract.quiet)
    t = _record_of(path).trials[0].metrics
    pgr = "undefined" if t.pgr is None else f"{t.pgr:.3f}"
    emit_path(path, f"test MSE: weak {t.error['weak']:.4f}, finetuned w2s {t.error['w2s']:.4f}; PGR {pgr}")


@app.command("kernel-check")
def kernel_check(
    result: str | None = typer.Argument(None, help="A finetune result (w2s finetune; or stdin)."),
    grads: list[str] = typer.Option(
        [], "--grads", help="FIT=GRADS: gradient features at that fit's start (extract --features grad --init)."
    ),
    device: Device = typer.Option(Device.auto, "--device", help="Where the networks run."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    as_markdown: bool = typer.Option(False, "--markdown", help="Markdown tables."),
) -> None:
    """How far a finetune left the kernel regime: weights moved, output change unexplained by J dθ."""
    from w2s_cli.diagnostics.kernel_check import kernel_check as run
    from w2s_cli.report.render import kernel_check_blocks, print_json, show

    given = {}
    for item in grads:
        fit, eq, path = item.partition("=")
        if not eq or not path:
            raise W2SError(f"--grads takes FIT=GRADS (FIT one of w2s, strong_sft, ceiling), not '{printable(item)}'")
        given[fit] = Path(path)
    r = run(input_path(result, "finetune result"), grads=given, device=device)
    if as_json:
        print_json(r)
    else:
        show(kernel_check_blocks(r), markdown=as_markdown)


@app.command()
def predict(
    result: str | None = typer.Argument(None, help="A finetune result (w2s finetune; or stdin)."),
    kernel: str = typer.Option("embeddings", "--kernel", help="The after-kernel: embeddings or grad (features)."),
    epoch: str = typer.Option("final", "--epoch", help="The W2S fit's point: start, final, or an epoch K it kept."),
    along: bool = typer.Option(False, "--along-epochs", help="At every epoch it kept, and where to stop."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """After a W2S finetune, with no further labels: predicted errors, PGR and OPR from its after-kernel."""
    from w2s_cli.diagnostics.grad_features import parse_epoch
    from w2s_cli.diagnostics.predict import predict_finetune, predicted_along_epochs, stop_epoch
    from w2s_cli.report.render import print_json

    src = input_path(result, "finetune result")
    if along:
        rows = predicted_along_epochs(src, kernel=kernel)
        if as_json:
            print_json({"epochs": rows, "stop_epoch": stop_epoch(rows)})
            return
        for r in rows:
            sys.stdout.write(f"epoch {r['epoch']}: predicted W2S test MSE {r['error_w2s']:.4f}, PGR {_num(r['pgr'])}\n")
        sys.stdout.write(f"stop at epoch {stop_epoch(rows)} (lowest predicted W2S error)\n")
        return
    predicted, where = predict_finetune(src, kernel=kernel, epoch=parse_epoch(epoch, option="--epoch"))
    if as_json:
        print_json({"predicted": predicted.to_json(), "after_kernel": where})
        return
    e = predicted.error
    sys.stdout.write(
        f"predicted test MSE: weak {e['weak']:.4f}, w2s {e['w2s']:.4f}, strong SFT {e['strong_sft']:.4f}, "
        f"ceiling {e['ceiling']:.4f}; PGR {_num(predicted.pgr)}, OPR {_num(predicted.opr)}\n({predicted.method}; "
        f"{where['seconds']:.0f} s)\n"
    )


@app.command()
@takes(recipe=FinetuneRecipe, extract=ExtractOptions)
def proxy(
    recipe: FinetuneRecipe,
    extract: ExtractOptions,
    pseudo: str | None = typer.Argument(None, help="Pseudo-labels artifact (or '-' / stdin)."),
    strong: str = typer.Option(..., "--strong", help="Strong embeddings artifact: its network is finetuned."),
    proxy_epochs: int = typer.Option(PROXY_EPOCHS, "--proxy-epochs", help="Epochs of the short W2S finetune."),
    kernel: str = typer.Option("embeddings", "--kernel", help="The after-kernel: embeddings or grad (features)."),
    subspace: str = typer.Option(
        SubspaceOptions.subspace, "--subspace", help="The strong basis of the LP-FT heads. " + SUBSPACE_HELP
    ),
    energy: float = typer.Option(SubspaceOptions.energy, "--energy", help="Variance fraction for --subspace auto."),
    out: Path | None = typer.Option(
        None, "-o", "--out", help="The proxy's result (default: NAME.proxy.safetensors beside PSEUDO)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Before the three finetunes: a short W2S finetune, then what the recipe's three fits will score."""
    from w2s_cli.report.render import print_json
    from w2s_cli.stages.summary import load_result, summary
    from w2s_cli.store.outputs import default_out
    from w2s_cli.studies.proxy import proxy_finetune

    src = input_path(pseudo, "pseudo-labels")
    path, cost = proxy_finetune(
        src,
        strong,
        out or default_out(src, "proxy"),
        recipe=recipe,
        epochs=proxy_epochs,
        subspace=SubspaceOptions(subspace, energy),
        extract=extract,
        kernel=kernel,
    )
    predicted = summary(load_result(path)).predicted
    if as_json:
        print_json({"predicted": predicted.to_json(), "cost": cost, "result": str(path)})
        return
    e = predicted.error
    sys.stdout.write(
        f"predicted test MSE of the recipe's finetunes: weak {e['weak']:.4f}, w2s {e['w2s']:.4f}, strong SFT "
        f"{e['strong_sft']:.4f}, ceiling {e['ceiling']:.4f}; PGR {_num(predicted.pgr)}, OPR {_num(predicted.opr)}\n"
        f"cost: the proxy took {cost['proxy_seconds']:.0f} s; the three finetunes are estimated at "
        f"{cost['full_estimated_seconds']:.0f} s\n"
    )
    sys.stderr.write(f"result: {path}\n")


def _num(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


@app.command()
def report(
    result: str | None = typer.Argument(None, help="Result artifact (or '-' / stdin)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    as_markdown: bool = typer.Option(False, "--markdown", help="Markdown tables."),
) -> None:
    """Errors, accuracies, PGR, OPR, and what the theory explains, of a result."""
    _show_report(input_path(result, "result"), as_json, as_markdown)


@app.command()
@takes(**RUN_GROUPS, study=StudyFlags, track=TrackFlags)
def run(
    data: DataOptions,
    extract: ExtractOptions,
    split: SplitOptions,
    head: HeadOptions,
    models: ModelFlags,
    flags: ExperimentFlags,
    recipe: FinetuneRecipe,
    study: StudyFlags,
    track: TrackFlags,
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    as_markdown: bool = typer.Option(False, "--markdown", help="Markdown tables."),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """The whole pipeline: extract weak and strong, train-weak, pseudolabel, fit-student (or finetune), report."""
    from w2s_cli.report.tracking import Tracking
    from w2s_cli.studies.run import run as run_all

    options = models.apply(flags.options(*models.specs(), split, head, recipe))
    tracking = Tracking.parse(track.track)
    if dry_run:
        from w2s_cli.studies.cost import estimate_run

        return _dry_run(estimate_run(flags.out_dir, data, options, extract, flags.reuse), flags.out_dir, as_json)
    path = run_all(flags.out_dir, data, options, extract, reuse=flags.reuse)
    if tracking is not None:  # before anything is said: a store that refuses is the one error line
        _track_run(tracking, path, flags.out_dir)
    sys.stderr.write(f"result: {path}\n")
    _show_report(path, as_json, as_markdown)


def _track_run(tracking: Tracking, path: Path, out_dir: Path) -> None:
    from w2s_cli.cli.config import configuration
    from w2s_cli.report.tracking import log_run
    from w2s_cli.stages.summary import load_result, summary

    run_id = log_run(tracking, summary(load_result(path)), path, out_dir=out_dir, configuration=configuration())
    sys.stderr.write(f"tracked: MLflow run {run_id} in {tracking.uri}\n")


@app.command()
@takes(**RUN_GROUPS, spread=ExecutorOptions, study=StudyFlags, track=TrackFlags)
def sweep(
    data: DataOptions,
    extract: ExtractOptions,
    split: SplitOptions,
    head: HeadOptions,
    models: ModelFlags,
    flags: ExperimentFlags,
    recipe: FinetuneRecipe,
    spread: ExecutorOptions,
    study: StudyFlags,
    track: TrackFlags,
    vary: list[str] = typer.Option(
        ...,
        "--vary",
        help="PARAM=V1,V2,... (repeatable: a grid). PARAM: "
        "n-pseudo, n-labeled, label-noise, subspace, weak-subspace, strong-subspace, "
        "weak, strong (MODEL@PX or MODEL:stageK@PX), student (probe,finetune), train, loss, epochs, lr.",
    ),
    csv_out: Path | None = typer.Option(None, "--csv", help="One row per point."),
    plot: Path | None = typer.Option(None, "--plot", help="PNG: measured ± 2 se as points, predictions as lines."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    collect: Path | None = typer.Option(
        None, "--collect", help="OUT of a sweep spread over jobs (--detach): merge what its jobs wrote."
    ),
) -> None:
    """`w2s run` over a grid of parameters, T trials per point; resumable; CSV, figure, JSON."""
    from dataclasses import replace

    from w2s_cli.cli.config import configuration, save_configuration
    from w2s_cli.report.render import print_json, show, sweep_blocks
    from w2s_cli.report.tracking import Tracking
    from w2s_cli.store.outputs import check_output
    from w2s_cli.studies.sweep import parse_vary

    varies = [parse_vary(v) for v in vary]
    tracking = Tracking.parse(track.track)
    out_dir = flags.out_dir if collect is None else collect
    spread = spread if collect is None else ExecutorOptions(COLLECT)
    for path, option in ((csv_out, "--csv"), (plot, "--plot")):
        if path is not None:
            check_output(path, option=option)

    def options() -> RunOptions:  # made under the progress bar, as before
        return models.apply(flags.options(*models.specs(), split, head, recipe))

    if spread.dry_run:
        from w2s_cli.studies.cost import estimate_sweep

        work = estimate_sweep(out_dir, data, options(), extract, varies, reuse=flags.reuse, executor=spread)
        return _dry_run(work, out_dir, as_json)
    result = _sweep_points(out_dir, data, options, extract, varies, flags.reuse, spread, as_json)
    if result is None:  # submitted (--detach): said
        return
    if spread.kind != "inprocess" and collect is None:
        save_configuration(out_dir / "jobs" / "sweep.toml")
    result = replace(result, configuration=configuration())
    _write_sweep(result, csv_out, plot, tracking, out_dir)
    if as_json:
        print_json(result)
    else:
        show(sweep_blocks(result))


def _sweep_points(
    out_dir: Path,
    data: DataOptions,
    options: Callable[[], RunOptions],
    extract: ExtractOptions,
    varies: list[tuple[str, list]],
    reuse: bool,
    spread: ExecutorOptions,
    as_json: bool,
) -> Sweep | None:
    """The sweep's points, under a progress bar; None when its jobs were submitted (--detach), which this says."""
    from w2s_cli.cli.config import save_configuration
    from w2s_cli.progress import progress_bar
    from w2s_cli.studies.executors import Detached
    from w2s_cli.studies.sweep import sweep as run_sweep

    with progress_bar(extract.quiet) as bar:
        task = bar.add_task("sweep", total=None)

        def progress(done: int, total: int, key: str) -> None:
            bar.update(task, completed=done, total=total, description=f"sweep {key}")

        run_options = options()
        try:
            return run_sweep(
                out_dir, data, run_options, extract, varies, reuse=reuse, progress=progress, executor=spread
            )
        except Detached as submitted:
            save_configuration(out_dir / "jobs" / "sweep.toml")  # what --collect reads
            _detached(submitted.record, out_dir, as_json)
    return None


def _write_sweep(
    result: Sweep, csv_out: Path | None, plot: Path | None, tracking: Tracking | None, out_dir: Path
) -> None:
    """--csv, --plot and --track: the table, the figure and the MLflow runs, then which files were written."""
    from w2s_cli.report.plots import plot_sweep, sweep_rows, write_csv

    header, body = sweep_rows(result)
    if csv_out is not None:
        write_csv(header, body, csv_out)
    if plot is not None:
        plot_sweep(result, plot)
    if tracking is not None:  # before anything is said: a store that refuses is the one error line
        _track_sweep(tracking, result, out_dir, [csv_out, plot])
    for path in (csv_out, plot):
        if path is not None:
            sys.stderr.write(f"wrote {path}\n")


def _track_sweep(tracking: Tracking, result: Sweep, out_dir: Path, files: list[Path | None]) -> None:
    from w2s_cli.report.tracking import log_sweep

    parent, points = log_sweep(tracking, result, out_dir=out_dir, files=files)
    sys.stderr.write(f"tracked: MLflow run {parent} with {len(points)} point runs in {tracking.uri}\n")


def _dry_run(work: CostEstimate, out_dir: Path, as_json: bool = False, option: str = "--out-dir") -> None:
    """--dry-run, the one way every command that has it (run, sweep, rank-teachers, finetune) answers it: the
    estimate of its work (studies/cost.py: work, disk, time) as lines or one JSON object on stdout; the library
    itself never sees the flag."""
    from w2s_cli.report.render import print_json
    from w2s_cli.studies.cost import describe

    if as_json:
        print_json(work)
    else:
        sys.stdout.write("\n".join(describe(work, out_dir, option)) + "\n")


def _detached(record: dict, out_dir: Path, as_json: bool) -> None:
    """--detach: what was submitted, and how to merge it once it has run."""
    from w2s_cli.report.render import print_json

    sys.stderr.write(
        f"submitted {record['submitted']} jobs (ids and logs: {record['record']}); "
        f"when they are done: w2s sweep --collect {out_dir}\n"
    )
    if as_json:
        print_json(record)


@app.command("rank-teachers")
@takes(
    data=DataOptions,
    extract=ExtractOptions,
    split=SplitOptions,
    flags=ExperimentFlags,
    recipe=FinetuneRecipe,
    spread=ExecutorOptions,
    study=StudyFlags,
)
def rank_teachers(
    ctx: typer.Context,
    data: DataOptions,
    extract: ExtractOptions,
    split: SplitOptions,
    flags: ExperimentFlags,
    recipe: FinetuneRecipe,
    spread: ExecutorOptions,
    study: StudyFlags,
    strong: str = typer.Option(..., "--strong", help="The strong model, MODEL@PX."),
    weak: list[str] = typer.Option(..., "--weak", help=f"A candidate weak teacher: {MODEL_HELP} (repeat it)."),
    combine: list[str] = typer.Option(
        [], "--combine", help="Also rank the --weak teachers combined by this rule: mean or stack (repeat it)."
    ),
    pairs: bool = typer.Option(False, "--pairs", help="With --combine: every pair too, not only all of them."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained"),
    measure: bool = typer.Option(False, "--measure", help="Also train every pipeline and compare."),
    proxy_epochs: int = typer.Option(
        PROXY_EPOCHS, "--proxy-epochs", help="--student finetune: epochs of each teacher's short W2S finetune."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Rank weak teachers (single or, with --combine, combined) by their predicted W2S student error, from n
    labels and unlabelled embeddings (with --student finetune: from a short W2S finetune per candidate)."""
    from dataclasses import replace

    from w2s_cli.cli.config import configuration
    from w2s_cli.report.render import print_json, rank_blocks, show

    if spread.detach:
        raise W2SError("--detach is for sweep; rank-teachers waits for its --measure jobs")
    finetuned = flags.student == StudentKind.finetune
    _student_options(ctx, finetuned)
    teachers = [BackboneSpec.parse(w, pretrained=pretrained) for w in weak]
    options = flags.options(teachers[0], BackboneSpec.parse(strong, pretrained=pretrained), split, recipe=recipe)
    epochs = proxy_epochs if finetuned else None
    rules = tuple(combine)
    if spread.dry_run:
        from w2s_cli.studies.cost import estimate_ranking

        work = estimate_ranking(
            flags.out_dir, data, options, extract, teachers, combine=rules, pairs=pairs, measure=measure,
            reuse=flags.reuse, proxy_epochs=epochs,
        )  # fmt: skip
        return _dry_run(work, flags.out_dir, as_json)
    if finetuned:
        from w2s_cli.studies.rank_finetune import rank_teachers_finetuned

        result = rank_teachers_finetuned(
            flags.out_dir, data, options, extract, teachers, combine=rules, pairs=pairs, epochs=proxy_epochs,
            measure=measure, reuse=flags.reuse, executor=spread,
        )  # fmt: skip
    else:
        from w2s_cli.studies.ranking import rank_teachers as run

        result = run(
            flags.out_dir, data, options, extract, teachers, combine=rules, pairs=pairs, measure=measure,
            reuse=flags.reuse, executor=spread,
        )  # fmt: skip
    result = replace(result, configuration=configuration())
    if as_json:
        print_json(result)
    else:
        show(rank_blocks(result))


def _student_options(ctx: typer.Context, finetuned: bool) -> None:
    """rank-teachers: the recipe's options and --proxy-epochs go with --student finetune, --dimensions (the
    linear students' analysis, which --measure runs) with --student probe; a given one that does not go with
    the student is refused rather than ignored."""
    if finetuned:
        if _given(ctx, "flags__dimensions"):
            raise W2SError(
                "--dimensions/--no-dimensions goes with --student probe (finetuned students have no variance analysis)"
            )
        return
    flags = {f"recipe__{k}": flag for k, flag in RECIPE_FLAGS.items()} | {"proxy_epochs": "--proxy-epochs"}
    given = [flag for name, flag in flags.items() if _given(ctx, name)]
    if given:
        raise W2SError(f"{given[0]} goes with --student finetune (the linear students' ranking finetunes nothing)")


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
    from w2s_cli.diagnostics.intrinsic import intrinsic_dim as run
    from w2s_cli.report.render import intrinsic_blocks, print_json, show
    from w2s_cli.store.outputs import check_output

    main = input_path(weak, "weak embeddings")
    if plot is not None:
        check_output(plot, inputs=[main, strong], option="--plot")
    r = run(
        main,
        strong,
        energy=energy,
        center=center,
        estimators=estimator,
        method=method,
        max_samples=max_samples,
        seed=seed,
        out=out,
        spectra=plot is not None,
    )
    if plot is not None:
        from dataclasses import replace

        from w2s_cli.report.plots import plot_spectra

        plot_spectra(r.spectra, {k: getattr(r, k).d for k in r.spectra}, energy, plot)
        r = replace(r, plot=str(plot), spectra=None)
    if out is not None:
        sys.stderr.write(f"wrote {r.artifact}\n")
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

    from w2s_cli.numerics.synth import SWEEPS, SynthConfig, SynthSweep, run_sweep, run_synth
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
        print_json(SynthSweep(sweep, str(png), str(table), rows))
    else:
        show(synth_sweep_blocks(rows, sweep))


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: unwinds through every `finally` (temp files are removed) to main(); a BaseException
    that is not KeyboardInterrupt, so that no library on the way turns it into a silent exit code."""


def _interrupt(signum, frame):
    raise Interrupted


def _is(exc: BaseException, name: str) -> bool:
    """Whether exc is click's exception `name` (typer may vendor its own click, so match by class name)."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def _says_errors() -> bool:
    """Under torchrun, a mistake found before the ranks meet (the same inputs, so the same error on every
    rank) is said once, by rank 0; one found after, by every rank that meets it, tagged with its rank."""
    from w2s_cli.distributed import joined

    return joined() is not None or os.environ.get("RANK", "0") == "0"


def _rank_tag() -> str:
    from w2s_cli.distributed import joined

    w = joined()
    return f"rank {w.rank}: " if w is not None and w.size > 1 else ""


# the commands whose work a rerun resumes, for an interrupt outside any stage that names its own work
RESUMABLE = {
    "extract": ("an extraction", "rerun the same command to resume it from its finished shards"),
    "run": ("a run", "rerun the same command to resume: finished extractions and trials are reused"),
    "sweep": ("a sweep", "rerun the same command to resume: finished extractions and points are reused"),
}


def main() -> None:
    """Entry point: every user mistake, usage errors included, becomes one line and exit code 2."""
    from w2s_cli.progress import interrupted_during

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    hint = f"try 'w2s {command} --help'" if command in app_commands() else "try 'w2s --help'"
    code = 1
    interrupted_during()  # forget what an earlier command in this process was doing
    try:
        from w2s_cli.cli.config import preload

        code = app(standalone_mode=False, **preload(sys.argv[1:], app))
    except W2SError as exc:
        if _says_errors():
            sys.stderr.write(f"w2s: error: {_rank_tag()}{printable(' '.join(said(exc).split()))}\n")
        code = 2
    except (KeyboardInterrupt, Interrupted):
        # what was under way: the stage's own word (progress.running), else the command's own resumable work
        work = interrupted_during() or RESUMABLE.get(command)
        if os.environ.get("RANK", "0") == "0":  # torchrun stops the other ranks when one fails: said once
            sys.stderr.write("w2s: interrupted" + (f" during {work[0]} ({work[1]})" if work else "") + "\n")
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
