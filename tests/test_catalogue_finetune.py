"""A catalogue of bad inputs to the finetuning commands, one table row each, in the style of test_catalogue.py:
`w2s finetune`, `w2s run`/`sweep`/`rank-teachers` with the recipe and executor options, `--config` files,
`kernel-check`, `extract --features grad` and `--init`, `predict` and `proxy`.

Every row must give exactly one printable `w2s: error:` line, exit code 2, nothing on stdout, no output file
(not even a temp file or a cache beside the inputs), and leave every input as it was (its bytes and mtime).
The inputs are one real finetune (the tiny random-weight strong network over digits, --train head, one epoch),
a probe on the same pseudo-labels and gradient features at the finetune's start, made once; a row that
damages an input damages its own copy. Almost every refusal comes before any work (no network runs)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    CliResult,
    assert_user_error,
    copy_finetune_inputs,
    embeddings_artifact,
    latent_embeddings,
    w2s,
)
from safetensors import safe_open
from safetensors.numpy import save_file

RUN = ("--data", "digits", "--weak", "test_efficientnet@32", "--strong", "test_resnet@32", "--no-pretrained", "-q",
       "--num-workers", 0, "--n-labeled", 100, "--n-pseudo", 300, "--n-test", 100,
       "--out-dir", "{tmp}/out")  # fmt: skip
RANK = ("rank-teachers", "--data", "digits", "--no-pretrained", "-q", "--num-workers", 0, "--n-test", 100,
        "--strong", "test_resnet@32", "--weak", "test_efficientnet@32", "--weak", "test_efficientnet@40",
        "--out-dir", "{tmp}/out")  # fmt: skip
FT = ("finetune", "{P}", "--strong", "{S}", "-q", "--num-workers", 0)
EX = ("extract", "--data", "digits", "--model", "test_efficientnet", "--weights", "{W}", "--image-size", 32,
      "--num-workers", 0, "-q")  # fmt: skip
RECIPE = ("--train", "head", "--epochs", 1, "--ft-batch-size", 64, "--select", "last", "--warmup-epochs", 0)
OUT = "{tmp}/out.safetensors"


# inputs, made once -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def made(tmp_path_factory, finetune_inputs) -> dict[str, Path]:
    """The finetune, its probe twin and gradient features, made in a folder that is then copied and removed,
    so that no recorded absolute path leads back from a row's damaged copy to an intact original."""
    root = tmp_path_factory.mktemp("catalogue-finetune")
    origin = root / "origin"
    origin.mkdir()
    d, pseudo, strong = copy_finetune_inputs(finetune_inputs, origin)
    steps = (
        (
            "finetune",
            pseudo,
            "--strong",
            strong,
            *RECIPE,
            "--subspace",
            20,
            "--no-predict",
            "--num-workers",
            0,
            "-q",
            "-o",
            d / "ft.safetensors",
        ),  # fmt: skip
        ("fit-student", pseudo, "--strong", strong, "--subspace", 20, "-o", d / "probe.safetensors"),
        (
            "extract",
            *EX[1:6],
            d / "strong-weights.safetensors",
            *EX[7:],
            "--features",
            "grad",
            "--train",
            "head",
            "--init",
            d / "ft.safetensors",
            "--limit",
            50,
            "--proj-dim",
            16,
            "-o",
            d / "g50.safetensors",
        ),  # fmt: skip
    )
    for args in steps:
        r = w2s(*args)
        assert r.exit_code == 0, r.output
    S, _, z = latent_embeddings(600, 6, 10, 3, 48, 64, seed=3)
    labels = np.argmax(z @ np.random.default_rng(4).normal(size=(3, 10)), axis=1)
    embeddings_artifact(d / "other.safetensors", S, labels, "strong-net")  # another data set's 600 samples
    shutil.copytree(origin, root / "inputs")
    shutil.rmtree(origin)
    return names_in(root / "inputs")


def names_in(d: Path) -> dict[str, Path]:
    files = {"P": "p.safetensors", "S": "s.safetensors", "W": "strong-weights.safetensors", "FT": "ft.safetensors",
             "PROBE": "probe.safetensors", "G": "g50.safetensors", "OTHER": "other.safetensors"}  # fmt: skip
    return {"dir": d, **{k: d / v for k, v in files.items()}}


# setups: each writes what one row needs into the row's folder, or damages the row's own copy of the inputs ------
def text(name: str, content: str) -> Callable:
    def setup(tmp: Path, names: dict[str, Path]) -> dict[str, Path]:
        (tmp / name).write_text(content)
        return {name.split(".")[0]: tmp / name}

    return setup


def cut(key: str, rel: str = "") -> Callable:
    """The row's copy of input `key` (or of the file `rel` beside it) cut to half its size."""

    def setup(tmp: Path, names: dict[str, Path]) -> dict[str, Path]:
        path = names[key].parent / rel if rel else names[key]
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return {}

    return setup


def removed(rel: str) -> Callable:
    def setup(tmp: Path, names: dict[str, Path]) -> dict[str, Path]:
        shutil.rmtree(names["dir"] / rel)
        return {}

    return setup


def edited(key: str, edit: Callable[[dict], None], name: str = "edited") -> Callable:
    """A copy of input `key` with its w2s record edited in place by `edit` (tensors unchanged), in the inputs'
    folder (so its recorded relative paths still resolve)."""

    def setup(tmp: Path, names: dict[str, Path]) -> dict[str, Path]:
        with safe_open(str(names[key]), framework="numpy") as f:
            meta = json.loads(f.metadata()["w2s"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        edit(meta)
        path = names["dir"] / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"w2s": json.dumps(meta)})
        return {name.upper(): path}

    return setup


def grad_init(**changes) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        meta["features"]["init"].update(changes)

    return edit


def grad_train(meta: dict) -> None:
    meta["features"]["train"] = "last:1"


def no_epoch_weights(meta: dict) -> None:
    meta["fits"]["w2s"]["epoch_weights"] = []


def read_only(name: str) -> Callable:
    def setup(tmp: Path, names: dict[str, Path]) -> dict[str, Path]:
        (tmp / name).mkdir()
        (tmp / name).chmod(0o555)
        return {name: tmp / name}

    return setup


# the catalogue -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    id: str
    args: tuple  # `{name}`: a path of the inputs (P, S, W, FT, PROBE, G, OTHER), of the setup's, or {tmp}
    expect: str  # a substring of the error line
    setup: Callable | None = None
    own: bool = False  # the setup damages an input: the row runs on its own copy of the inputs
    env: dict[str, str] = field(default_factory=dict)  # environment variables for the command ({tmp} filled)
    unprivileged: bool = False  # run without root's power to bypass file permissions


def ft(id: str, extra: tuple, expect: str, **kw) -> Row:
    return Row(id, (*FT, *extra, "-o", OUT), expect, **kw)


ROWS = [
    # finetune: values out of range, unknown names, wrong types -----------------------------------------------------
    ft("finetune-subspace-wider-than-the-embeddings", ("--subspace", 100000), "between 1 and the embedding width 256"),
    ft("finetune-energy-0", ("--energy", 0), "--energy must be in (0, 1]"),
    ft("finetune-lr-nan", ("--lr", "nan"), "--lr must be positive, got nan"),
    ft("finetune-weight-decay-negative", ("--weight-decay", -1), "--weight-decay must be 0 or more, got -1"),
    ft("finetune-aux-weight-negative", ("--loss", "logconf", "--aux-weight", -0.5), "--aux-weight must be in [0, 1]"),
    ft("finetune-warmup-negative", ("--warmup-epochs", -1), "--warmup-epochs must be between 0 and --epochs (5)"),
    ft("finetune-num-workers-negative", ("--num-workers", -1), "--num-workers must be 0 or more"),
    ft("finetune-shard-rows-0", ("--shard-rows", 0), "--shard-rows must be positive"),
    ft("finetune-opt-misspelt", ("--opt", "sgdd"), "--opt 'sgdd' is not an optimiser of timm's (did you mean sgd"),
    ft("finetune-sched-misspelt", ("--sched", "stepp"), "not 'stepp' (did you mean step?)"),
    ft("finetune-select-unknown", ("--select", "first"), "'first' is not one of 'best', 'last'"),
    ft("finetune-epochs-float", ("--epochs", 2.5), "Invalid value for '--epochs'"),
    ft("finetune-ft-precision-unknown", ("--ft-precision", "bf17"), "--ft-precision must be fp32, bf16 or fp16"),
    ft("finetune-data-unknown", ("--data", "mnist-ish"), "their images (mnist-ish) can no longer be read"),
    ft("finetune-root-missing", ("--data", "digits", "--root", "{tmp}/nowhere"), "not a directory"),
    # finetune: inputs missing, of another kind, or that do not belong together -------------------------------------
    Row(
        "finetune-pseudo-missing", ("finetune", "{tmp}/none.safetensors", "--strong", "{S}", "-o", OUT), "no such file"
    ),
    Row("finetune-pseudo-is-embeddings", ("finetune", "{S}", "--strong", "{S}", "-o", OUT), "expected pseudolabels"),
    Row("finetune-strong-is-a-result", ("finetune", "{P}", "--strong", "{PROBE}", "-o", OUT), "expected embeddings"),
    Row("finetune-nothing-on-stdin", ("finetune", "-", "--strong", "{S}", "-o", OUT), "nothing arrived on stdin"),
    ft("finetune-strong-of-other-samples", ("--strong", "{OTHER}"), "other.safetensors"),
    Row("finetune-out-is-its-input", (*FT, "-o", "{P}"), "is also this command's input"),
    Row("finetune-out-is-a-folder", (*FT, "-o", "{tmp}"), "is a directory; give a file name"),
    # finetune: damaged inputs, an output folder it cannot write ----------------------------------------------------
    ft("finetune-pseudo-truncated", (), "p.safetensors", setup=cut("P"), own=True),
    ft("finetune-strong-truncated", (), "s.safetensors", setup=cut("S"), own=True),
    Row(
        "finetune-read-only-out-folder",
        (*FT, *RECIPE, "-o", "{ro}/ft.safetensors"),
        "Permission denied",
        setup=read_only("ro"),
        unprivileged=True,
    ),  # fmt: skip
    # --config files ------------------------------------------------------------------------------------------------
    Row(
        "finetune-config-option-of-sweep",
        (*FT, "--config", "{c}", "-o", OUT),
        "'vary' is not an option of w2s finetune",
        setup=text("c.toml", 'vary = ["lr=0.1,1"]\n'),
    ),  # fmt: skip
    Row(
        "finetune-config-not-toml",
        (*FT, "--config", "{c}", "-o", OUT),
        "not valid TOML",
        setup=text("c.toml", "epochs = \n"),
    ),  # fmt: skip
    Row(
        "finetune-config-a-table",
        (*FT, "--config", "{c}", "-o", OUT),
        "'recipe' is a table; give options as top-level",
        setup=text("c.toml", "[recipe]\nlr = 0.1\n"),
    ),  # fmt: skip
    Row("finetune-config-missing", (*FT, "--config", "{tmp}/none.toml", "-o", OUT), "cannot read it (No such file"),
    Row(
        "finetune-config-lr-a-string",
        (*FT, "--config", "{c}", "-o", OUT),
        "line 2: Invalid value for '--lr': \"fast\"",
        setup=text("c.toml", 'epochs = 2\nlr = "fast"\n'),
    ),  # fmt: skip
    Row(
        "run-config-opt-unknown",
        ("run", "--config", "{c}", *RUN),
        "--opt 'adamx' is not an optimiser of timm's",
        setup=text("c.toml", 'student = "finetune"\nopt = "adamx"\n'),
    ),  # fmt: skip
    Row(
        "run-config-student-unknown",
        ("run", "--config", "{c}", *RUN),
        '"distill" (a string) is not one of probe',
        setup=text("c.toml", 'student = "distill"\n'),
    ),  # fmt: skip
    Row(
        "sweep-config-slurm-without-slurm",
        ("sweep", "--config", "{c}", *RUN, "--vary", "n-pseudo=100,200"),
        "--executor slurm: this machine has no SLURM",
        setup=text("c.toml", 'executor = "slurm"\n'),
        env={"PATH": "{tmp}"},
    ),  # fmt: skip
    # run, sweep, rank-teachers: recipe and executor options --------------------------------------------------------
    Row("run-student-unknown", ("run", *RUN, "--student", "distill"), "'distill' is not one of 'probe', 'finetune'"),
    Row("run-train-last-0", ("run", *RUN, "--student", "finetune", "--train", "last:0"), "blocks K of at least 1"),
    Row("run-val-fraction-half", ("run", *RUN, "--student", "finetune", "--val-fraction", 0.5), "--val-fraction"),
    Row("run-loss-unknown", ("run", *RUN, "--student", "finetune", "--loss", "hinge"), "'hinge' is not one of"),
    Row("run-has-no-executor", ("run", *RUN, "--executor", "slurm"), "No such option: --executor"),
    Row(
        "sweep-vary-lr-not-a-number", ("sweep", *RUN, "--vary", "lr=0.1,abc"), "holds a value that is not valid for lr"
    ),
    Row("sweep-vary-opt-not-varied", ("sweep", *RUN, "--vary", "opt=adamw,sgd"), "expected PARAM=V1,V2,... with PARAM"),
    Row("sweep-vary-loss-unknown", ("sweep", *RUN, "--vary", "loss=mse,hinge"), "hinge"),
    Row("sweep-vary-epochs-float", ("sweep", *RUN, "--vary", "epochs=1,2.5"), "2.5"),
    Row(
        "sweep-executor-unknown",
        ("sweep", *RUN, "--vary", "n-pseudo=100", "--executor", "nowhere"),
        "--executor must be one of inprocess, local:K, slurm, submitit-local, not 'nowhere'",
    ),  # fmt: skip
    Row(
        "sweep-slurm-time-0",
        ("sweep", *RUN, "--vary", "n-pseudo=100", "--executor", "submitit-local", "--slurm-time", 0),
        "--slurm-time must be positive",
    ),  # fmt: skip
    Row("sweep-local-0-workers", ("sweep", *RUN, "--vary", "n-pseudo=100", "--executor", "local:0"), "local:0"),
    Row("rank-teachers-executor-unknown", (*RANK, "--measure", "--executor", "nowhere"), "--executor must be one of"),
    Row("rank-teachers-student-unknown", (*RANK, "--student", "distill"), "'distill' is not one of"),
    Row("rank-teachers-finetune-lr-0", (*RANK, "--student", "finetune", "--lr", 0), "--lr must be positive, got 0"),
    Row("rank-teachers-probe-takes-no-recipe", (*RANK, "--train", "head"), "--train goes with --student finetune"),
    Row(
        "rank-teachers-probe-takes-no-proxy-epochs",
        (*RANK, "--proxy-epochs", 2, "--measure"),
        "--proxy-epochs goes with --student finetune",
    ),  # fmt: skip
    Row(
        "rank-teachers-probe-recipe-from-a-config",
        (*RANK, "--config", "{c}"),
        "--lr goes with --student finetune",
        setup=text("c.toml", "lr = 0.01\n"),
    ),  # fmt: skip
    Row(
        "rank-teachers-finetune-takes-no-dimensions",
        (*RANK, "--student", "finetune", "--no-dimensions"),
        "--dimensions/--no-dimensions goes with --student probe",
    ),  # fmt: skip
    Row(
        "rank-teachers-finetune-proxy-epochs-0",
        (*RANK, "--student", "finetune", "--proxy-epochs", 0),
        "--proxy-epochs must be between 1 and the recipe's --epochs (5), got 0",
    ),  # fmt: skip
    Row(
        "rank-teachers-finetune-proxy-longer-than-the-recipe",
        (*RANK, "--student", "finetune", "--epochs", 2, "--proxy-epochs", 3, "--dry-run"),
        "--proxy-epochs must be between 1 and the recipe's --epochs (2), got 3",
    ),  # fmt: skip
    # kernel-check: what it reads, and gradient features of another trained set, start, fit or samples --------------
    Row("kernel-check-pseudo-labels", ("kernel-check", "{P}"), "is a 'pseudolabels' artifact, expected result"),
    Row("kernel-check-device-tpu", ("kernel-check", "{FT}", "--device", "tpu"), "'tpu' is not one of"),
    Row("kernel-check-grads-without-fit", ("kernel-check", "{FT}", "--grads", "{G}"), "--grads takes FIT=GRADS"),
    Row(
        "kernel-check-grads-unknown-fit", ("kernel-check", "{FT}", "--grads", "sft={G}"), "the fits are w2s, strong_sft"
    ),
    Row(
        "kernel-check-grads-of-another-fit",
        ("kernel-check", "{FT}", "--grads", "ceiling={G}"),
        "made at the start of fit w2s, not of ceiling",
    ),  # fmt: skip
    Row(
        "kernel-check-grads-of-other-samples",
        ("kernel-check", "{FT}", "--grads", "w2s={G}"),
        "not the samples of the strong embeddings",
    ),  # fmt: skip
    Row(
        "kernel-check-grads-of-another-trained-set",
        ("kernel-check", "{FT}", "--grads", "w2s={EDITED}"),
        "gradient features of --train last:1, but this finetune trained head",
        setup=edited("G", grad_train),
        own=True,
    ),  # fmt: skip
    Row(
        "kernel-check-grads-after-an-epoch",
        ("kernel-check", "{FT}", "--grads", "w2s={EDITED}"),
        "made after epoch 1 of that fit, not at its start",
        setup=edited("G", grad_init(epoch=1)),
        own=True,
    ),
    Row(
        "kernel-check-grads-of-another-finetune",
        ("kernel-check", "{FT}", "--grads", "w2s={EDITED}"),
        "not gradient features made with --init",
        setup=edited("G", grad_init(artifact_id="0" * 64)),
        own=True,
    ),
    Row(
        "kernel-check-grads-are-embeddings",
        ("kernel-check", "{FT}", "--grads", "w2s={S}"),
        "not gradient features made with --init",
    ),  # fmt: skip
    Row(
        "kernel-check-no-fits-folder",
        ("kernel-check", "{FT}"),
        "not found",
        setup=removed("ft.safetensors.fits"),
        own=True,
    ),  # fmt: skip
    Row("kernel-check-result-truncated", ("kernel-check", "{FT}"), "ft.safetensors", setup=cut("FT"), own=True),
    # predict -------------------------------------------------------------------------------------------------------
    Row("predict-epoch-not-a-number", ("predict", "{FT}", "--epoch", "abc"), "--epoch must be start, final or an"),
    Row("predict-epoch-not-kept", ("predict", "{FT}", "--epoch", 3), "--epoch 3: fit w2s of"),
    Row(
        "predict-kept-no-epoch-weights",
        ("predict", "{EDITED}", "--along-epochs"),
        "kept no epoch weights",
        setup=edited("FT", no_epoch_weights),
        own=True,
    ),  # fmt: skip
    Row(
        "predict-epoch-of-a-result-that-kept-none",
        ("predict", "{EDITED}", "--epoch", 1),
        "has only its start and final weights",
        setup=edited("FT", no_epoch_weights),
        own=True,
    ),  # fmt: skip
    Row(
        "predict-epoch-weights-truncated",
        ("predict", "{FT}", "--epoch", 1),
        "epoch-1.safetensors",
        setup=cut("FT", "ft.safetensors.fits/w2s/epoch-1.safetensors"),
        own=True,
    ),  # fmt: skip
    Row(
        "predict-no-fits-folder",
        ("predict", "{FT}"),
        "the weights of its W2S fit (final) are gone",
        setup=removed("ft.safetensors.fits"),
        own=True,
    ),  # fmt: skip
    # proxy ---------------------------------------------------------------------------------------------------------
    Row(
        "proxy-kernel-unknown",
        ("proxy", "{P}", "--strong", "{S}", "--kernel", "magic", "-o", OUT),
        "--kernel must be one of embeddings, grad, not 'magic'",
    ),  # fmt: skip
    Row(
        "proxy-epochs-past-the-recipe",
        ("proxy", "{P}", "--strong", "{S}", "--epochs", 2, "--proxy-epochs", 3, "-o", OUT),
        "--proxy-epochs must be between 1 and the recipe's --epochs (2), got 3",
    ),  # fmt: skip
    Row("proxy-strong-of-other-samples", ("proxy", "{P}", "--strong", "{OTHER}", "-o", OUT), "other.safetensors"),
    Row(
        "proxy-pseudo-truncated",
        ("proxy", "{P}", "--strong", "{S}", "-o", OUT),
        "p.safetensors",
        setup=cut("P"),
        own=True,
    ),  # fmt: skip
    Row("proxy-out-is-its-input", ("proxy", "{P}", "--strong", "{S}", "-o", "{S}"), "is also this command's input"),
    # extract --features grad, --init -------------------------------------------------------------------------------
    Row("extract-features-unknown", (*EX, "--features", "magic", "-o", OUT), "--features must be embeddings or grad"),
    Row(
        "extract-init-fit-without-init",
        (*EX, "--features", "grad", "--train", "head", "--init-fit", "w2s", "-o", OUT),
        "--init-fit goes with --init RESULT",
    ),  # fmt: skip
    Row(
        "extract-init-fit-unknown",
        (*EX, "--features", "grad", "--train", "head", "--init", "{FT}", "--init-fit", "sft", "-o", OUT),
        "--init-fit must be one of w2s, strong_sft, ceiling",
    ),  # fmt: skip
    Row(
        "extract-init-epoch-not-kept",
        (*EX, "--features", "grad", "--train", "head", "--init", "{FT}", "--init-epoch", 9, "-o", OUT),
        "--init-epoch 9: fit w2s of",
    ),  # fmt: skip
    Row(
        "extract-init-of-another-network",
        (
            "extract",
            "--data",
            "digits",
            "--model",
            "test_resnet",
            "--no-pretrained",
            "--image-size",
            32,
            "--init",
            "{FT}",
            "-o",
            OUT,
        ),
        "a finetune of test_efficientnet (width 256), not of test_resnet",
    ),  # fmt: skip
    Row(
        "extract-init-at-another-input-size",
        (*EX[:8], 40, *EX[9:], "--init", "{FT}", "-o", OUT),
        "at input [3, 32, 32], not of these",
    ),  # fmt: skip
    Row(
        "extract-init-of-other-weights",
        (*EX[:5], "--no-pretrained", *EX[7:], "--init", "{FT}", "-o", OUT),
        "give the strong network it finetuned",
    ),  # fmt: skip
    Row("extract-init-a-probe", (*EX, "--init", "{PROBE}", "-o", OUT), "not a finetune result"),
    Row("extract-init-missing", (*EX, "--init", "{tmp}/none.safetensors", "-o", OUT), "none.safetensors"),
]


# running a row -----------------------------------------------------------------------------------------------------
def fill(value: object, names: dict[str, Path]) -> str:
    out = str(value)
    for name, path in sorted(names.items(), key=lambda kv: -len(kv[0])):
        out = out.replace("{" + name + "}", str(path))
    return out


def state(folder: Path) -> dict[Path, tuple[str, int]]:
    """Every file under folder: its sha256 and mtime."""
    return {
        p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def shared(made) -> dict[Path, tuple[str, int]]:
    return state(made["dir"])


def outputs(args: list[str]) -> list[Path]:
    return [Path(v) for flag, v in zip(args, args[1:], strict=False) if flag in ("-o", "--out", "--out-dir")]


def run_row(row: Row, args: list[str], env: dict[str, str]) -> CliResult:
    from test_catalogue import _unprivileged

    if row.unprivileged and os.geteuid() != 0:
        pytest.skip("needs root (to drop the permission override)")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        with _unprivileged() if row.unprivileged else contextlib.nullcontext():
            return w2s(*args)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS])
@pytest.mark.slow  # its inputs are a finetune, a probe and a gradient extraction (the session's)
def test_bad_input(row: Row, made, shared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output name would land here, and be noticed
    names = dict(made)
    if row.own:
        shutil.copytree(made["dir"], tmp_path / "in")
        names = names_in(tmp_path / "in")
    names["tmp"] = tmp_path
    if row.setup is not None:
        names.update(row.setup(tmp_path, names))
    args = [fill(a, names) for a in row.args]
    env = {k: fill(v, names) for k, v in row.env.items()}
    outs = [p for p in outputs(args) if not p.exists()]
    before = state(tmp_path)
    r = run_row(row, args, env)
    assert_user_error(r, row.expect)
    assert r.stderr.strip().isprintable() and "Traceback" not in r.stderr
    assert not [p for p in outs if p.exists()], "an output was written"
    assert state(tmp_path) == before, "a file was written, changed or removed in the row's folder"
    assert state(made["dir"]) == shared, "a shared input was changed, or a file written beside it"


def test_the_catalogue_is_large_and_its_ids_distinct():
    assert len(ROWS) >= 40 and len({r.id for r in ROWS}) == len(ROWS)
