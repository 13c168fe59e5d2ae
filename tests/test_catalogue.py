"""A catalogue of bad inputs, one table row each, over every command.

Every bad input must give exactly one printable line on stderr starting with `w2s: error:`, exit code 2,
nothing on stdout, no output file left behind (not even a temp file), and leave every input file as it was.
A row is: an id, the command line (`{name}` stands for a path made by the fixtures or the row's setup), the
substrings expected in the error line, the `-o`-like outputs that must not exist afterwards, and how to run
it (in this process: unrestricted, or for the length of the command unable to bypass file permissions or able
to write only small files). A few positive rows at the end check that edge cases the checks must let through
still work.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import resource
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CliResult, digit_image, embeddings_artifact, latent_embeddings, save_random, w2s
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save_file

from w2s_cli.store import artifact as store

EXTRACT = ("--model", "test_resnet", "--no-pretrained", "--image-size", 32, "--num-workers", 0, "-q")
DIGITS = ("--data", "digits", *EXTRACT)
TEST_MODELS = ("--weak", "test_efficientnet@32", "--strong", "test_resnet@32", "--no-pretrained", "-q")
RUN = ("--data", "digits", *TEST_MODELS, "--num-workers", 0, "--out-dir", "{tmp}/run")  # never a real experiment
RANK = ("--data", "digits", "--no-pretrained", "-q", "--num-workers", 0, "--out-dir", "{tmp}/run")
LONG = "x" * 290 + ".safetensors"  # 302 bytes: longer than any file system allows
NAME_252 = "a" * 240 + ".safetensors"  # 252 bytes: allowed, though a temp name beside it would not be
VIT_64 = ("--data", "digits", "--model", "test_vit", "--no-pretrained", "--image-size", 64, "--num-workers", 0, "-q")


# fixtures: small synthetic embeddings (instant) and the chain made from them through the real CLI -------
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("catalogue")
    S, W, z = latent_embeddings(600, 6, 10, 3, 48, 64, seed=3)
    labels = np.argmax(z @ np.random.default_rng(4).normal(size=(3, 10)), axis=1)
    paths = {
        "weak": embeddings_artifact(d / "weak.safetensors", W, labels, "weak-net"),
        "strong": embeddings_artifact(d / "strong.safetensors", S, labels, "strong-net"),
        "other": embeddings_artifact(d / "other.safetensors", W[:500], labels[:500], "weak-net"),
    }
    for name, col, value in (("nan", 0, np.nan), ("inf", 1, np.inf)):
        for role, X, model in (("weak", W, "weak-net"), ("strong", S, "strong-net")):
            bad = X.copy()
            bad[:, col] = value
            paths[f"{name}_{role}"] = embeddings_artifact(d / f"{name}-{role}.safetensors", bad, labels, model)
    steps = (
        ("T", ("train-weak", paths["weak"], "--n-labeled", 100, "--n-test", 100, "--subspace", 8)),
        ("P", ("pseudolabel", d / "T.safetensors")),
        ("R", ("fit-student", d / "P.safetensors", "--strong", paths["strong"], "--subspace", 8)),
    )
    for name, args in steps:
        r = w2s(*args, "-o", d / f"{name}.safetensors")
        assert r.exit_code == 0, r.output
        paths[name] = d / f"{name}.safetensors"
    r = w2s("intrinsic-dim", paths["weak"], "--estimator", "spectral", "-o", d / "ID.safetensors")
    assert r.exit_code == 0, r.output
    paths["ID"] = d / "ID.safetensors"
    paths["base"] = d
    return paths


# setups: each writes the files one row needs into its own folder and returns their names ----------------
def tensors_of(path: Path) -> dict[str, np.ndarray]:
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def poisoned(row: int, value: float) -> Callable[[np.ndarray], np.ndarray]:
    """A tensor edit for with_record: `value` (NaN or inf) written across one row."""
    return lambda a: np.where(np.arange(len(a))[:, None] == row, value, a)


def with_record(src: str, raw: Callable[[dict], str] = json.dumps, name: str = "bad", **tensors) -> Callable:
    """An artifact with the tensors of `src` (those named replaced, None: removed) and the w2s record
    `raw(record of src)`."""

    def setup(tmp: Path, base: dict[str, Path]) -> dict[str, Path]:
        meta = json.loads(safe_open(str(base[src]), framework="numpy").metadata()["w2s"])
        arrays = tensors_of(base[src])
        for k, v in tensors.items():
            arrays.pop(k) if v is None else arrays.__setitem__(k, v(arrays[k]) if callable(v) else v)
        path = tmp / f"{name}.safetensors"
        save_file(arrays, str(path), metadata={"w2s": raw(meta)})
        return {name: path}

    return setup


def edited(**changes) -> Callable[[dict], str]:
    """The record with fields replaced (None: removed)."""

    def edit(meta: dict) -> str:
        for k, v in changes.items():
            if v is None:
                meta.pop(k, None)
            else:
                meta[k] = v
        return json.dumps(meta)

    return edit


def moved_embeddings(meta: dict) -> str:
    """A teacher whose recorded weak embeddings are gone from both their absolute and relative paths."""
    meta["embeddings"] = {**meta["embeddings"], "path": "/nonexistent/weak.safetensors", "relpath": "gone.st"}
    return json.dumps(meta)


def files(**contents: bytes | str | Callable[[Path], object]) -> Callable:
    """Write files (bytes, text, or a callable writing to the path); `a__b` in a name is the folder a/b."""

    def setup(tmp: Path, base: dict[str, Path]) -> dict[str, Path]:
        names = {}
        for name, content in contents.items():
            path = tmp.joinpath(*name.split("__"))
            path.parent.mkdir(parents=True, exist_ok=True)
            if callable(content):
                content(path)
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
            names[name] = path
        return names

    return setup


def chain(*setups: Callable) -> Callable:
    def setup(tmp: Path, base: dict[str, Path]) -> dict[str, Path]:
        names: dict[str, Path] = {}
        for s in setups:
            names.update(s(tmp, {**base, **names}))
        return names

    return setup


def digit_png(path: Path, i: int = 0) -> None:
    digit_image(i).resize((32, 32)).save(path)


def truncated(fmt: str) -> Callable[[Path], None]:
    """A real image of format `fmt` whose data is cut short (the header is intact)."""

    def write(path: Path) -> None:
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return write


def image_folder(bad: bytes | Callable[[Path], None], ext: str = "png", root: str = "data") -> Callable:
    """root/cats/{0.png (good), 1.<ext> (bad)}."""
    return files(**{f"{root}__cats__0.png": digit_png, f"{root}__cats__1.{ext}": bad})


def copy_of(src: str, name: str, mode: int | None = None, size: float = 1.0) -> Callable:
    """A copy of a base file (cut to a fraction of its size), with a file mode."""

    def setup(tmp: Path, base: dict[str, Path]) -> dict[str, Path]:
        data = base[src].read_bytes()
        path = tmp / f"{name}.safetensors"
        path.write_bytes(data[: int(len(data) * size)])
        if mode is not None:
            os.chmod(path, mode)
        return {name: path}

    return setup


def folder(name: str, mode: int) -> Callable:
    def setup(tmp: Path, base: dict[str, Path]) -> dict[str, Path]:
        (tmp / name).mkdir()
        os.chmod(tmp / name, mode)
        return {name: tmp / name}

    return setup


def weak_in(folder_name: str, mode: int) -> Callable:
    """A copy of the weak embeddings inside a folder of the given mode."""

    def setup(tmp: Path, base: dict[str, Path]) -> dict[str, Path]:
        (tmp / folder_name).mkdir()
        path = tmp / folder_name / "weak.safetensors"
        path.write_bytes(base["weak"].read_bytes())
        os.chmod(tmp / folder_name, mode)
        return {"hidden": path}

    return setup


def torch_file(obj) -> Callable[[Path], None]:
    return lambda path: torch.save(obj, path)


def other_arch(path: Path) -> None:
    save_random("test_efficientnet", path, 0)


def csv_with(text: str | bytes) -> Callable:
    """tmp/data.csv beside one real image 0.png."""
    return files(**{"0.png": digit_png, "data.csv": text})


# the catalogue ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    args: tuple
    expect: tuple[str, ...]  # substrings of the error line
    outs: tuple[str, ...] = ()  # outputs (formatted like args) that must not exist afterwards
    setup: Callable | None = None
    stdin: str | None = None
    runner: str = "inprocess"  # inprocess | unprivileged (no DAC override) | small_files (RLIMIT_FSIZE)
    hint: bool = False  # a usage error: the line ends with a --help hint
    absent: tuple[str, ...] = ()  # anything else (e.g. an unfinished-work folder) that must not exist
    own_inputs: bool = False  # the setup links to an input: the row gets its own copy of the inputs


def usage(id, args, expect, **kw) -> Case:
    return Case(id, args, (expect,), hint=True, **kw)


IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
OUT = "{tmp}/out.safetensors"
SMALL = ("--n-labeled", 100, "--n-test", 100)


def bad(id, args, *expect, out=OUT, **kw) -> Case:
    """A command line that ends in `-o OUT` (unless out=None)."""
    args = (*args, "-o", out) if out is not None else args
    return Case(id, args, expect, outs=(out,) if out is not None else (), **kw)


CASES = [
    # usage errors: wrong value types, unknown options, missing required options, bad choices ------------------
    usage("extract-batch-size-abc", ("extract", *DIGITS, "--batch-size", "abc"), "Invalid value for '--batch-size'"),
    usage("extract-unknown-option", ("extract", *DIGITS, "--colour", "red"), "No such option: --colour"),
    usage("extract-no-model", ("extract", "--data", "digits"), "Missing option '--model'"),
    usage("extract-no-data", ("extract", "--model", "test_resnet"), "Missing option '--data'"),
    usage("extract-device-tpu", ("extract", *DIGITS, "--device", "tpu"), "'tpu' is not one of"),
    usage("extract-preprocess-x", ("extract", *DIGITS, "--preprocess", "x"), "'x' is not one of"),
    usage("extract-precision-fp8", ("extract", *DIGITS, "--precision", "fp8"), "'fp8' is not one of"),
    usage("extract-image-size-float", ("extract", *DIGITS, "--image-size", "32.5"), "Invalid value for '--image-size'"),
    usage(
        "train-weak-n-labeled-abc", ("train-weak", "{weak}", "--n-labeled", "abc"), "Invalid value for '--n-labeled'"
    ),
    usage("train-weak-solver-magic", ("train-weak", "{weak}", "--solver", "magic"), "'magic' is not one of"),
    usage("train-weak-unknown-option", ("train-weak", "{weak}", "--lr", "3"), "No such option: --lr"),
    usage("train-weak-energy-text", ("train-weak", "{weak}", "--energy", "most"), "Invalid value for '--energy'"),
    usage("train-weak-two-inputs", ("train-weak", "{weak}", "{strong}"), "unexpected extra argument"),
    usage("pseudolabel-n-pseudo-abc", ("pseudolabel", "{T}", "--n-pseudo", "abc"), "Invalid value for '--n-pseudo'"),
    usage("pseudolabel-unknown-option", ("pseudolabel", "{T}", "--soft-ish"), "No such option: --soft-ish"),
    usage("fit-student-no-strong", ("fit-student", "{P}"), "Missing option '--strong'"),
    usage("fit-student-solver-magic", ("fit-student", "{P}", "--strong", "{strong}", "--solver", "magic"), "magic"),
    usage("fit-student-energy-text", ("fit-student", "{P}", "--strong", "{strong}", "--energy", "x"), "'--energy'"),
    usage("report-unknown-option", ("report", "{R}", "--html"), "No such option: --html"),
    usage("run-trials-float", ("run", *RUN, "--trials", "1.5"), "Invalid value for '--trials'"),
    usage("run-head-x", ("run", *RUN, "--head", "x"), "'x' is not one of"),
    usage("run-unknown-option", ("run", *RUN, "--weak-model", "a"), "No such option: --weak-model"),
    usage("run-device-tpu", ("run", *RUN, "--device", "tpu"), "'tpu' is not one of"),
    usage("sweep-no-vary", ("sweep", *RUN), "Missing option '--vary'"),
    usage(
        "sweep-trials-float",
        ("sweep", *RUN, "--vary", "n-pseudo=100,200", "--trials", "1.5"),
        "Invalid value for '--trials'",
    ),
    usage(
        "sweep-solver-magic", ("sweep", *RUN, "--vary", "n-pseudo=100,200", "--solver", "magic"), "'magic' is not one"
    ),
    usage("rank-teachers-no-weak", ("rank-teachers", *RANK, "--strong", "test_resnet@32"), "Missing option '--weak'"),
    usage("rank-teachers-no-strong", ("rank-teachers", *RANK, "--weak", "a@32", "--weak", "b@32"), "Missing option"),
    usage(
        "rank-teachers-trials-float",
        ("rank-teachers", *RANK, "--weak", "a", "--strong", "b", "--trials", "1.5"),
        "'--trials'",
    ),
    usage(
        "intrinsic-dim-max-samples-abc",
        ("intrinsic-dim", "{weak}", "--max-samples", "abc"),
        "Invalid value for '--max-samples'",
    ),
    usage("intrinsic-dim-unknown-option", ("intrinsic-dim", "{weak}", "--dims", "3"), "No such option: --dims"),
    usage("synth-trials-float", ("synth", "--trials", "1.5"), "Invalid value for '--trials'"),
    usage("synth-unknown-option", ("synth", "--noise", "1"), "No such option: --noise"),
    usage("unknown-command", ("extrakt", "--data", "digits"), "No such command 'extrakt'"),
    # option values the commands refuse before any work -------------------------------------------------------
    bad("extract-num-workers-negative", ("extract", *DIGITS, "--num-workers", -1), "--num-workers must be 0 or more"),
    bad("extract-batch-size-0", ("extract", *DIGITS, "--batch-size", 0), "--batch-size must be positive"),
    bad("extract-shard-rows-0", ("extract", *DIGITS, "--shard-rows", 0), "--shard-rows must be positive"),
    bad("extract-limit-0", ("extract", *DIGITS, "--limit", 0), "--limit must be positive"),
    bad("extract-image-size-4", ("extract", *DIGITS, "--image-size", 4), "--image-size must be at least 8"),
    bad("extract-unknown-model", ("extract", "--data", "digits", "--model", "resnet_99"), "unknown timm model"),
    bad("extract-unknown-spec", ("extract", "--data", "mnist-ish", *EXTRACT), "unknown data SPEC"),
    bad("extract-root-missing", ("extract", *DIGITS, "--root", "{tmp}/nowhere"), "--root", "not a directory"),
    bad("train-weak-n-test-0", ("train-weak", "{weak}", "--n-test", 0), "--n-test must be positive"),
    bad("train-weak-n-labeled-0", ("train-weak", "{weak}", "--n-labeled", 0), "--n-labeled must be positive"),
    bad("train-weak-n-labeled-too-many", ("train-weak", "{weak}", "--n-labeled", 5000, "--n-test", 100), "5000"),
    bad("train-weak-label-noise-negative", ("train-weak", "{weak}", "--label-noise", -1), "--label-noise must be 0"),
    bad("train-weak-label-noise-inf", ("train-weak", "{weak}", "--label-noise", "inf"), "--label-noise must be 0"),
    bad(
        "train-weak-label-noise-2-classification",
        ("train-weak", "{weak}", "--n-labeled", 100, "--n-test", 100, "--label-noise", 2),
        "flip probability",
    ),
    bad("train-weak-energy-0", ("train-weak", "{weak}", "--energy", 0), "--energy must be in (0, 1]"),
    bad("train-weak-energy-1.5", ("train-weak", "{weak}", "--energy", 1.5), "--energy must be in (0, 1]"),
    bad("train-weak-energy-nan", ("train-weak", "{weak}", "--energy", "nan"), "--energy must be in (0, 1]"),
    bad("train-weak-subspace-0", ("train-weak", "{weak}", "--subspace", 0), "--subspace must be positive"),
    bad("train-weak-subspace-lots", ("train-weak", "{weak}", "--subspace", "lots"), "--subspace must be none"),
    bad("pseudolabel-n-pseudo-0", ("pseudolabel", "{T}", "--n-pseudo", 0), "--n-pseudo must be positive"),
    bad("pseudolabel-n-pseudo-too-many", ("pseudolabel", "{T}", "--n-pseudo", 10**6), "is larger than"),
    bad("fit-student-energy-1.5", ("fit-student", "{P}", "--strong", "{strong}", "--energy", 1.5), "--energy"),
    bad("fit-student-subspace-0", ("fit-student", "{P}", "--strong", "{strong}", "--subspace", 0), "--subspace"),
    usage("finetune-no-strong", ("finetune", "{P}"), "Missing option '--strong'"),
    usage(
        "finetune-loss-magic", ("finetune", "{P}", "--strong", "{strong}", "--loss", "magic"), "'magic' is not one of"
    ),
    bad(
        "finetune-lora-0", ("finetune", "{P}", "--strong", "{strong}", "--train", "lora:0"), "LoRA rank R of at least 1"
    ),
    bad("finetune-last-0", ("finetune", "{P}", "--strong", "{strong}", "--train", "last:0"), "blocks K of at least 1"),
    bad("finetune-train-x", ("finetune", "{P}", "--strong", "{strong}", "--train", "x"), "--train must be head"),
    bad("finetune-epochs-negative", ("finetune", "{P}", "--strong", "{strong}", "--epochs", -1), "--epochs must be"),
    bad("finetune-lr-0", ("finetune", "{P}", "--strong", "{strong}", "--lr", 0), "--lr must be positive"),
    bad("finetune-val-0.7", ("finetune", "{P}", "--strong", "{strong}", "--val-fraction", 0.7), "--val-fraction"),
    bad("finetune-augment-head", ("finetune", "{P}", "--strong", "{strong}", "--augment"), "--augment needs images"),
    bad("finetune-not-a-network", ("finetune", "{P}", "--strong", "{strong}"), "cannot be rebuilt", "strong-net"),
    bad("finetune-strong-is-weak-kind", ("finetune", "{P}", "--strong", "{T}"), "is a 'teacher' artifact"),
    bad("run-trials-0", ("run", *RUN, "--trials", 0), "--trials must be at least 1", out=None),
    bad("run-n-test-0", ("run", *RUN, "--n-test", 0), "--n-test must be positive", out=None),
    bad("run-label-noise-negative", ("run", *RUN, "--label-noise", -1), "--label-noise must be 0", out=None),
    bad("run-out-dir-is-a-file", ("run", *RUN, "--out-dir", "{file}"), "is a file", out=None, setup=files(file="x")),
    bad("run-weak-size-after-at", ("run", *RUN, "--weak", "test_resnet@big"), "whole number of pixels", out=None),
    bad("sweep-vary-no-equals", ("sweep", *RUN, "--vary", "n-pseudo"), "expected PARAM=V1,V2", out=None),
    bad("sweep-vary-unknown-param", ("sweep", *RUN, "--vary", "depth=1,2"), "expected PARAM=V1,V2", out=None),
    bad("sweep-vary-no-values", ("sweep", *RUN, "--vary", "n-pseudo="), "no values", out=None),
    bad("sweep-vary-not-numbers", ("sweep", *RUN, "--vary", "n-pseudo=a,b"), "not valid for n-pseudo", out=None),
    bad(
        "sweep-vary-negative-noise", ("sweep", *RUN, "--vary", "label-noise=-1"), "not valid for label-noise", out=None
    ),
    bad("sweep-vary-repeated-value", ("sweep", *RUN, "--vary", "n-pseudo=100,100"), "a value is repeated", out=None),
    bad("sweep-vary-subspace-0", ("sweep", *RUN, "--vary", "subspace=0,5"), "--subspace must be positive", out=None),
    bad(
        "sweep-vary-given-twice",
        ("sweep", *RUN, "--vary", "n-pseudo=100", "--vary", "n-pseudo=200"),
        "given twice",
        out=None,
    ),
    bad("sweep-trials-0", ("sweep", *RUN, "--vary", "n-pseudo=100", "--trials", 0), "--trials", out=None),
    bad(
        "rank-teachers-trials-0",
        (
            "rank-teachers",
            *RANK,
            "--strong",
            "test_resnet@32",
            "--weak",
            "test_efficientnet@32",
            "--weak",
            "test_resnet@24",
            *SMALL,
            "--n-pseudo",
            200,
            "--trials",
            0,
        ),
        "--trials must be at least 1, got 0",
        out=None,
        absent=("{tmp}/run",),  # refused before any extraction
    ),
    bad(
        "rank-teachers-same-teacher-twice",
        (
            "rank-teachers",
            *RANK,
            "--strong",
            "test_resnet@32",
            "--weak",
            "test_efficientnet@32",
            "--weak",
            "test_efficientnet@32",
        ),
        "given twice",
        out=None,
    ),
    bad(
        "rank-teachers-one-teacher",
        ("rank-teachers", *RANK, "--strong", "a@32", "--weak", "b@32"),
        "at least two",
        out=None,
    ),
    bad(
        "rank-teachers-bad-size",
        ("rank-teachers", *RANK, "--strong", "a@x", "--weak", "b", "--weak", "c"),
        "@",
        out=None,
    ),
    bad("intrinsic-dim-max-samples-0", ("intrinsic-dim", "{weak}", "--max-samples", 0), "--max-samples", out=None),
    bad("intrinsic-dim-energy-0", ("intrinsic-dim", "{weak}", "--energy", 0), "--energy must be in (0, 1]", out=None),
    bad("intrinsic-dim-energy-1.5", ("intrinsic-dim", "{weak}", "--energy", 1.5), "--energy must be in", out=None),
    bad(
        "intrinsic-dim-estimator-x", ("intrinsic-dim", "{weak}", "--estimator", "x"), "unknown estimator 'x'", out=None
    ),
    bad("intrinsic-dim-method-x", ("intrinsic-dim", "{weak}", "{strong}", "--method", "x"), "--method", out=None),
    bad("synth-trials-1", ("synth", "--trials", 1), "--trials must be at least 2", out=None),
    bad("synth-shared-too-many", ("synth", "--shared", 30), "--shared must be in", out=None),
    bad("synth-rest-x", ("synth", "--rest", "x"), "--rest must be random or orthogonal", out=None),
    bad("synth-sweep-x", ("synth", "--sweep", "x"), "--sweep must be one of", out=None),
    bad("synth-values-not-numbers", ("synth", "--sweep", "sigma", "--values", "a,b"), "--values must be", out=None),
    # outputs that cannot be written, or that would replace an input --------------------------------------------
    bad("extract-out-is-a-directory", ("extract", *DIGITS), "is a directory", out="{tmp}"),
    bad(
        "extract-out-under-a-file",
        ("extract", *DIGITS),
        "is a file, not a folder",
        out="{file.txt}/out.safetensors",
        setup=files(**{"file.txt": "x"}),
    ),
    bad("extract-out-name-too-long", ("extract", *DIGITS), "file name too long", out="{tmp}/" + LONG),
    bad(
        "extract-out-is-the-weights",
        ("extract", *DIGITS, "--weights", "{w.safetensors}"),
        "also this command's input",
        out="{w.safetensors}",
        setup=files(**{"w.safetensors": lambda p: save_random("test_resnet", p, 0)}),
    ),
    bad(
        "extract-out-is-the-csv",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT),
        "also this command's input",
        out="{data.csv}",
        setup=csv_with("path,target\n0.png,1.0\n0.png,2.0\n"),
    ),
    bad("train-weak-out-is-a-directory", ("train-weak", "{weak}"), "is a directory", out="{tmp}"),
    bad(
        "train-weak-out-under-a-file",
        ("train-weak", "{weak}"),
        "is a file, not a folder",
        out="{file.txt}/out.safetensors",
        setup=files(**{"file.txt": "x"}),
    ),
    bad("train-weak-out-name-too-long", ("train-weak", "{weak}"), "file name too long", out="{tmp}/" + LONG),
    bad("train-weak-out-is-the-input", ("train-weak", "{weak}"), "also this command's input", out="{weak}"),
    bad(
        "train-weak-out-links-to-the-input",
        ("train-weak", "{weak}"),
        "also this command's input",
        out="{link}",
        setup=lambda tmp, b: (tmp / "link").symlink_to(b["weak"]) or {"link": tmp / "link"},
        own_inputs=True,
    ),
    bad("train-weak-out-empty", ("train-weak", "{weak}"), "empty path", out=""),
    bad("train-weak-out-dash", ("train-weak", "{weak}"), "outputs are files", out="-"),
    bad("pseudolabel-out-dash", ("pseudolabel", "{T}"), "outputs are files", out="-"),
    bad(
        "train-weak-out-read-only-folder",
        ("train-weak", "{weak}"),
        "cannot write",
        "Permission denied",
        out="{ro}/out.safetensors",
        setup=folder("ro", 0o555),
        runner="unprivileged",
    ),
    bad(
        "train-weak-out-read-only-folder-missing-parent",
        ("train-weak", "{weak}"),
        "cannot write",
        out="{ro}/sub/out.safetensors",
        setup=folder("ro", 0o555),
        runner="unprivileged",
    ),
    bad("pseudolabel-out-is-the-teacher", ("pseudolabel", "{T}"), "also this command's input", out="{T}"),
    bad(
        "pseudolabel-out-is-the-embeddings",
        ("pseudolabel", "{T}", "--embeddings", "{weak}"),
        "also this command's input",
        out="{weak}",
    ),
    bad(
        "pseudolabel-out-is-the-recorded-embeddings",
        ("pseudolabel", "{T}"),
        "also this command's input",
        out="{weak}",
    ),
    bad("pseudolabel-out-is-a-directory", ("pseudolabel", "{T}"), "is a directory", out="{tmp}"),
    bad(
        "fit-student-out-is-the-pseudolabels",
        ("fit-student", "{P}", "--strong", "{strong}"),
        "also this command's input",
        out="{P}",
    ),
    bad(
        "fit-student-out-is-the-strong",
        ("fit-student", "{P}", "--strong", "{strong}"),
        "also this command's input",
        out="{strong}",
    ),
    bad(
        "fit-student-out-is-the-weak",
        ("fit-student", "{P}", "--strong", "{strong}", "--weak", "{weak}"),
        "also this command's input",
        out="{weak}",
    ),
    bad(
        "fit-student-out-is-the-recorded-weak",
        ("fit-student", "{P}", "--strong", "{strong}"),
        "also this command's input",
        out="{weak}",
    ),
    bad(
        "fit-student-out-name-too-long",
        ("fit-student", "{P}", "--strong", "{strong}"),
        "file name too long",
        out="{tmp}/" + LONG,
    ),
    bad("intrinsic-dim-out-is-the-input", ("intrinsic-dim", "{weak}"), "also this command's input", out="{weak}"),
    bad(
        "intrinsic-dim-out-is-the-strong",
        ("intrinsic-dim", "{weak}", "{strong}"),
        "also this command's input",
        out="{strong}",
    ),
    bad(
        "intrinsic-dim-plot-is-the-input",
        ("intrinsic-dim", "{weak}", "--plot", "{weak}"),
        "--plot",
        "also this command's input",
        out=None,
    ),
    bad(
        "intrinsic-dim-plot-is-a-directory",
        ("intrinsic-dim", "{weak}", "--plot", "{tmp}"),
        "--plot",
        "is a directory",
        out=None,
    ),
    bad(
        "intrinsic-dim-out-under-a-file",
        ("intrinsic-dim", "{weak}"),
        "is a file, not a folder",
        out="{file.txt}/id.safetensors",
        setup=files(**{"file.txt": "x"}),
    ),
    bad(
        "sweep-csv-is-a-directory",
        ("sweep", *RUN, "--vary", "n-pseudo=100,200", "--csv", "{tmp}"),
        "--csv",
        "is a directory",
        out=None,
    ),
    bad(
        "sweep-plot-is-a-directory",
        ("sweep", *RUN, "--vary", "n-pseudo=100,200", "--plot", "{tmp}"),
        "--plot",
        "is a directory",
        out=None,
    ),
    bad(
        "sweep-csv-name-too-long",
        ("sweep", *RUN, "--vary", "n-pseudo=100", "--csv", "{tmp}/" + LONG),
        "file name too long",
        out=None,
    ),
    bad(
        "synth-csv-is-a-directory",
        ("synth", "--sweep", "sigma", "--csv", "{tmp}"),
        "--csv",
        "is a directory",
        out=None,
        absent=("{tmp}/synth-sigma.png",),
    ),
    bad(
        "synth-plot-is-a-directory",
        ("synth", "--sweep", "sigma", "--plot", "{tmp}"),
        "--plot",
        "is a directory",
        out=None,
        absent=("{tmp}/synth-sigma.csv",),
    ),
    bad(
        "synth-plot-under-a-file",
        ("synth", "--sweep", "sigma", "--plot", "{f}/s.png"),
        "is a file, not a folder",
        out=None,
        setup=files(f="x"),
    ),
    # damaged images in folder: and csv: datasets ------------------------------------------------------------------
    bad(
        "folder-corrupt-png-workers-0",
        ("extract", "--data", "folder:{tmp}/data", *EXTRACT),
        "1.png",
        "cannot read image",
        setup=image_folder(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20),
    ),
    bad(
        "folder-corrupt-png-workers-1",
        ("extract", "--data", "folder:{tmp}/data", *EXTRACT, "--num-workers", 1),
        "1.png",
        "cannot read image",
        setup=image_folder(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20),
    ),
    bad(
        "folder-corrupt-jpeg-workers-0",
        ("extract", "--data", "folder:{tmp}/data", *EXTRACT),
        "1.jpg",
        "cannot read image",
        setup=image_folder(b"\xff\xd8\xff\xe0" + b"garbage" * 20, "jpg"),
    ),
    bad(
        "folder-corrupt-jpeg-workers-1",
        ("extract", "--data", "folder:{tmp}/data", *EXTRACT, "--num-workers", 1),
        "1.jpg",
        "cannot read image",
        setup=image_folder(b"\xff\xd8\xff\xe0" + b"garbage" * 20, "jpg"),
    ),
    bad(
        "folder-truncated-png",
        ("extract", "--data", "folder:{tmp}/data", *EXTRACT),
        "1.png",
        "cannot read image",
        setup=image_folder(truncated("PNG")),
    ),
    bad(
        "folder-truncated-jpeg-workers-1",
        ("extract", "--data", "folder:{tmp}/data", *EXTRACT, "--num-workers", 1),
        "1.jpg",
        "cannot read image",
        setup=image_folder(truncated("JPEG"), "jpg"),
    ),
    bad(
        "folder-empty-image-file",
        ("extract", "--data", "folder:{tmp}/data", *EXTRACT),
        "1.png",
        "cannot read image",
        setup=image_folder(b""),
    ),
    bad(
        "folder-corrupt-png-leaves-no-shards",
        ("extract", "--data", "folder:{tmp}/data", *EXTRACT),
        "1.png",
        setup=image_folder(b"garbage"),
        absent=(OUT + ".shards",),
    ),
    bad("folder-missing", ("extract", "--data", "folder:{tmp}/nowhere", *EXTRACT), "not a directory"),
    bad(
        "folder-without-images",
        ("extract", "--data", "folder:{tmp}/data", *EXTRACT),
        "no images found",
        setup=files(**{"data__cats__notes.txt": "x"}),
    ),
    bad("folder-is-a-file", ("extract", "--data", "folder:{f}", *EXTRACT), "not a directory", setup=files(f="x")),
    bad(
        "csv-row-without-path",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT),
        "line 3",
        "no image path",
        setup=csv_with("path,target\n0.png,1.0\n,2.0\n"),
    ),
    bad(
        "csv-not-utf8",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT),
        "not UTF-8",
        setup=csv_with(b"path,target\n0.png,1.0\n\xff\xfe.png,2.0\n"),
    ),
    bad(
        "csv-nan-target",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT),
        "line 2",
        "not a finite number",
        setup=csv_with("path,target\n0.png,nan\n"),
    ),
    bad(
        "csv-inf-target",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT),
        "line 3",
        "not a finite number",
        setup=csv_with("path,target\n0.png,1\n0.png,-inf\n"),
    ),
    bad(
        "csv-text-target",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT),
        "'big' is not a number",
        setup=csv_with("path,target\n0.png,big\n"),
    ),
    bad(
        "csv-short-row",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT),
        "line 3",
        "not a number",
        setup=csv_with("path,target\n0.png,1\n0.png\n"),
    ),
    bad(
        "csv-missing-image",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT),
        "missing",
        "gone.png",
        setup=csv_with("path,target\n0.png,1\ngone.png,2\n"),
    ),
    bad("csv-no-rows", ("extract", "--data", "csv:{data.csv}", *EXTRACT), "no rows", setup=csv_with("path,target\n")),
    bad("csv-empty-file", ("extract", "--data", "csv:{data.csv}", *EXTRACT), "no rows", setup=csv_with("")),
    bad(
        "csv-bad-split",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT),
        "split must be train or test",
        setup=csv_with("path,target,split\n0.png,1,dev\n"),
    ),
    bad(
        "csv-unknown-target-column",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT, "--target-column", "age"),
        "no column 'age'",
        setup=csv_with("path,target\n0.png,1\n"),
    ),
    bad("torchvision-unknown-dataset", ("extract", "--data", "torchvision:NoSuch", *EXTRACT), "no such dataset"),
    bad(
        "torchvision-not-downloaded",
        ("extract", "--data", "torchvision:CIFAR10", "--root", "{tmp}", *EXTRACT),
        "add --download",
    ),
    bad(
        "fashion-mnist-truncated-idx",
        ("extract", "--data", "fashion-mnist", "--root", "{tmp}/fm", *EXTRACT),
        "truncated IDX file",
        setup=files(**{f"fm__{stem}": b"\x00\x00\x08\x03" + bytes(8) for stem in IDX}),
    ),
    bad(
        "fashion-mnist-not-idx",
        ("extract", "--data", "fashion-mnist", "--root", "{tmp}/fm", *EXTRACT),
        "not an unsigned-byte IDX file",
        setup=files(**{f"fm__{stem}": b"hello" for stem in IDX}),
    ),
    bad(
        "fashion-mnist-bad-gzip",
        ("extract", "--data", "fashion-mnist", "--root", "{tmp}/fm", *EXTRACT),
        "unreadable IDX file",
        setup=files(**{f"fm__{stem}.gz": b"hello" for stem in IDX}),
    ),
    bad(
        "fashion-mnist-files-missing",
        ("extract", "--data", "fashion-mnist", "--root", "{tmp}", *EXTRACT),
        "IDX files not found",
    ),
    bad("csv-missing-file", ("extract", "--data", "csv:{tmp}/none.csv", *EXTRACT), "no such file"),
    bad(
        "csv-corrupt-image",
        ("extract", "--data", "csv:{data.csv}", *EXTRACT, "--num-workers", 1),
        "bad.png",
        "cannot read image",
        setup=chain(csv_with("path,target\n0.png,1\nbad.png,2\n"), files(**{"bad.png": "x"})),
    ),
    # models and weights ------------------------------------------------------------------------------------------
    bad(
        "vit-impossible-size-refused-before-reading-images",
        (
            "extract",
            "--data",
            "folder:{tmp}/data",
            "--model",
            "test_vit",
            "--no-pretrained",
            "--image-size",
            30,
            "--num-workers",
            0,
            "-q",
        ),
        "test_vit does not take 30 px inputs",
        setup=image_folder(b"garbage"),
    ),
    bad(
        "hf-hub-model-offline",
        ("extract", "--data", "digits", "--model", "hf-hub:nobody/nothing", "--no-pretrained"),
        "hf-hub:nobody/nothing",
    ),
    bad("extract-device-mps-unavailable", ("extract", *DIGITS, "--device", "mps"), "--device mps"),
    bad(
        "extract-fp16-on-cpu",
        ("extract", *DIGITS, "--device", "cpu", "--precision", "fp16"),
        "--precision fp16 needs a GPU",
        absent=(OUT + ".shards",),
    ),
    bad(
        "weights-random-bytes",
        ("extract", *DIGITS, "--weights", "{w.pth}"),
        "cannot read weights",
        setup=files(**{"w.pth": np.random.default_rng(0).bytes(4096)}),
    ),
    bad(
        "weights-empty-file",
        ("extract", *DIGITS, "--weights", "{w.pth}"),
        "cannot read weights",
        setup=files(**{"w.pth": b""}),
    ),
    bad(
        "weights-pickle-of-a-string",
        ("extract", *DIGITS, "--weights", "{w.pth}"),
        "--weights",
        setup=files(**{"w.pth": torch_file({"state_dict": "not tensors"})}),
    ),
    bad(
        "weights-pickle-of-a-list",
        ("extract", *DIGITS, "--weights", "{w.pth}"),
        "cannot read weights",
        setup=files(**{"w.pth": torch_file([1, 2, 3])}),
    ),
    bad(
        "weights-pickle-needing-unsafe-load",
        ("extract", *DIGITS, "--weights", "{w.pth}"),
        "cannot read weights",
        setup=files(**{"w.pth": torch_file({"w": np.zeros(3)})}),
    ),
    bad(
        "weights-of-another-architecture",
        ("extract", *DIGITS, "--weights", "{w.safetensors}"),
        "weights do not fit test_resnet",
        setup=files(**{"w.safetensors": other_arch}),
    ),
    bad("weights-is-a-directory", ("extract", *DIGITS, "--weights", "{tmp}"), "not a regular file"),
    bad("weights-missing", ("extract", *DIGITS, "--weights", "{tmp}/none.pth"), "no such file"),
    # artifacts that are not what the command needs ----------------------------------------------------------------
    bad("train-weak-missing-file", ("train-weak", "{tmp}/none.safetensors"), "none.safetensors", "no such file"),
    bad("train-weak-directory", ("train-weak", "{tmp}"), "is a directory"),
    bad(
        "train-weak-not-safetensors",
        ("train-weak", "{f.safetensors}"),
        "not a safetensors file",
        setup=files(**{"f.safetensors": "hello, world\n"}),
    ),
    bad(
        "train-weak-empty-file",
        ("train-weak", "{f.safetensors}"),
        "not a safetensors file",
        setup=files(**{"f.safetensors": b""}),
    ),
    bad(
        "train-weak-truncated-artifact",
        ("train-weak", "{cut}"),
        "cut.safetensors",
        setup=copy_of("weak", "cut", size=0.6),
    ),
    bad(
        "train-weak-header-only-artifact",
        ("train-weak", "{cut}"),
        "cut.safetensors",
        setup=copy_of("weak", "cut", size=0.02),
    ),
    bad(
        "train-weak-plain-safetensors",
        ("train-weak", "{f.safetensors}"),
        "without a w2s record",
        setup=files(**{"f.safetensors": lambda p: save_file({"embeddings": np.zeros((3, 2))}, str(p))}),
    ),
    bad(
        "train-weak-record-not-json", ("train-weak", "{bad}"), "not JSON", setup=with_record("weak", lambda m: "{oops")
    ),
    bad(
        "train-weak-record-not-object",
        ("train-weak", "{bad}"),
        "not a JSON object",
        setup=with_record("weak", lambda m: "[1, 2]"),
    ),
    bad(
        "train-weak-record-schema-99",
        ("train-weak", "{bad}"),
        "schema 99",
        setup=with_record("weak", edited(schema_version=99)),
    ),
    bad(
        "train-weak-record-unknown-kind",
        ("train-weak", "{bad}"),
        "unknown artifact kind 'banana'",
        setup=with_record("weak", edited(kind="banana")),
    ),
    bad(
        "train-weak-record-without-model",
        ("train-weak", "{bad}"),
        "without 'model'",
        setup=with_record("weak", edited(model=None)),
    ),
    bad(
        "train-weak-record-dataset-not-object",
        ("train-weak", "{bad}"),
        "'dataset' is not an object",
        setup=with_record("weak", edited(dataset="digits")),
    ),
    bad(
        "train-weak-record-dataset-without-fingerprint",
        ("train-weak", "{bad}", *SMALL),
        "bad.safetensors",
        "corrupt w2s record",
        setup=with_record("weak", edited(dataset={"name": "digits"})),
    ),
    bad(
        "fit-student-record-split-not-object",
        ("fit-student", "{bad}", "--strong", "{strong}"),
        "'split' is not an object",
        setup=with_record("P", edited(split=[1, 2])),
    ),
    bad(
        "train-weak-no-labels-tensor",
        ("train-weak", "{bad}"),
        "neither labels nor targets",
        setup=with_record("weak", labels=None),
    ),
    bad(
        "train-weak-no-sample-ids-tensor",
        ("train-weak", "{bad}"),
        "has no tensor 'sample_ids'",
        setup=with_record("weak", sample_ids=None),
    ),
    bad(
        "train-weak-sample-ids-too-few",
        ("train-weak", "{bad}"),
        "malformed embeddings",
        setup=with_record("weak", sample_ids=lambda a: a[:10].copy()),
    ),
    bad(
        "train-weak-embeddings-one-column",
        ("train-weak", "{bad}"),
        "malformed embeddings",
        setup=with_record("weak", embeddings=lambda a: a[:, 0].copy()),
    ),
    bad("train-weak-wrong-kind", ("train-weak", "{T}"), "is a 'teacher' artifact, expected embeddings"),
    bad(
        "train-weak-unreadable-file",
        ("train-weak", "{locked}"),
        "cannot read",
        "Permission denied",
        setup=copy_of("weak", "locked", mode=0),
        runner="unprivileged",
    ),
    bad(
        "train-weak-input-in-unsearchable-folder",
        ("train-weak", "{hidden}"),
        "Permission denied",
        setup=weak_in("closed", 0),
        runner="unprivileged",
    ),
    bad("train-weak-empty-stdin", ("train-weak",), "nothing arrived on stdin", stdin=""),
    bad("train-weak-blank-stdin", ("train-weak", "-"), "nothing arrived on stdin", stdin="\n  \n"),
    bad(
        "pseudolabel-teacher-without-split",
        ("pseudolabel", "{bad}"),
        "a 'teacher' artifact without 'split'",
        setup=with_record("T", edited(split=None)),
    ),
    bad("pseudolabel-wrong-kind", ("pseudolabel", "{weak}"), "is a 'embeddings' artifact, expected teacher"),
    bad(
        "pseudolabel-embeddings-of-other-samples",
        ("pseudolabel", "{T}", "--embeddings", "{other}"),
        "not the embeddings",
    ),
    bad(
        "pseudolabel-embeddings-moved", ("pseudolabel", "{bad}"), "not found", setup=with_record("T", moved_embeddings)
    ),
    bad(
        "pseudolabel-teacher-without-coef",
        ("pseudolabel", "{bad}"),
        "has no tensor 'coef'",
        setup=with_record("T", coef=None),
    ),
    bad(
        "pseudolabel-teacher-rows-out-of-range",
        ("pseudolabel", "{bad}"),
        "rows out of range",
        setup=with_record("T", pseudo_rows=np.array([10**6])),
    ),
    bad("pseudolabel-empty-stdin", ("pseudolabel",), "nothing arrived on stdin", stdin=""),
    bad("pseudolabel-stdin-names-a-directory", ("pseudolabel",), "is a directory", stdin="{tmp}\n"),
    bad(
        "pseudolabel-unreadable-teacher",
        ("pseudolabel", "{locked}"),
        "cannot read",
        setup=copy_of("T", "locked", mode=0),
        runner="unprivileged",
    ),
    bad("fit-student-wrong-kind", ("fit-student", "{T}", "--strong", "{strong}"), "expected pseudolabels"),
    bad(
        "fit-student-strong-is-a-teacher",
        ("fit-student", "{P}", "--strong", "{T}"),
        "strong embeddings",
        "expected embeddings",
    ),
    bad("fit-student-strong-of-other-samples", ("fit-student", "{P}", "--strong", "{other}"), "different samples"),
    bad(
        "fit-student-weak-of-other-samples",
        ("fit-student", "{P}", "--strong", "{strong}", "--weak", "{other}"),
        "not the embeddings",
    ),
    bad("fit-student-strong-missing", ("fit-student", "{P}", "--strong", "{tmp}/none.safetensors"), "no such file"),
    bad(
        "fit-student-strong-not-safetensors",
        ("fit-student", "{P}", "--strong", "{f}"),
        "not a safetensors file",
        setup=files(f="text"),
    ),
    bad(
        "fit-student-pseudolabels-record-not-object",
        ("fit-student", "{bad}", "--strong", "{strong}"),
        "not a JSON object",
        setup=with_record("P", lambda m: '"P"'),
    ),
    bad(
        "fit-student-pseudo-labels-wrong-shape",
        ("fit-student", "{bad}", "--strong", "{strong}"),
        "labels of shape (400, 3)",
        setup=with_record("P", pseudo_labels=lambda a: a[:, :3].copy()),
    ),
    bad(
        "fit-student-nan-pseudo-labels",
        ("fit-student", "{bad}", "--strong", "{strong}"),
        "pseudo-labels",
        "bad.safetensors",
        "tensor 'pseudo_labels'",
        "hold NaN or inf (first: row 7)",
        setup=with_record("P", pseudo_labels=poisoned(7, np.nan)),
    ),
    bad(
        "fit-student-inf-weak-test-outputs",
        ("fit-student", "{bad}", "--strong", "{strong}"),
        "tensor 'weak_test_output'",
        "(first: row 2)",
        setup=with_record("P", weak_test_output=poisoned(2, np.inf)),
    ),
    bad(
        "fit-student-nan-weak-basis",
        ("fit-student", "{bad}", "--strong", "{strong}"),
        "tensor 'weak_basis'",
        "(first: row 0)",
        setup=with_record("P", weak_basis=lambda a: np.full_like(a, np.nan)),
    ),
    bad(
        "pseudolabel-nan-teacher-coef",
        ("pseudolabel", "{bad}"),
        "teacher",
        "tensor 'coef'",
        "(first: row 4)",
        setup=with_record("T", coef=poisoned(4, np.nan)),
    ),
    bad(
        "fit-student-logistic-on-soft-ridgeless-labels",
        ("fit-student", "{P}", "--strong", "{strong}", "--solver", "logistic"),
        "a logistic student learns from class probabilities",
        "ridgeless teacher are not probabilities",
        "--hard",
    ),
    bad(
        "run-logistic-student-of-a-ridgeless-teacher",
        ("run", *RUN, "--teacher-solver", "ridgeless", "--solver", "logistic"),
        "soft pseudo-labels of a ridgeless teacher are not probabilities",
        out=None,
    ),
    bad("fit-student-empty-stdin", ("fit-student", "--strong", "{strong}"), "nothing arrived on stdin", stdin=""),
    bad("report-empty-stdin", ("report",), "nothing arrived on stdin", stdin="", out=None),
    bad("report-missing-file", ("report", "{tmp}/none.safetensors"), "no such file", out=None),
    bad("report-directory", ("report", "{tmp}"), "is a directory", out=None),
    bad("report-wrong-kind", ("report", "{P}"), "is a 'pseudolabels' artifact, expected result", out=None),
    bad("report-intrinsic-dim-artifact", ("report", "{ID}", "--json"), "expected result", out=None),
    bad(
        "report-result-without-trials",
        ("report", "{bad}"),
        "without 'trials'",
        out=None,
        setup=with_record("R", edited(trials=None)),
    ),
    bad(
        "report-result-schema-1",
        ("report", "{bad}"),
        "schema 1",
        out=None,
        setup=with_record("R", edited(schema_version=1)),
    ),
    bad(
        "report-result-with-no-trials",
        ("report", "{bad}"),
        "no trials",
        out=None,
        setup=with_record("R", edited(trials=[])),
    ),
    bad(
        "report-result-trials-not-a-list",
        ("report", "{bad}"),
        "'trials' is not a list",
        out=None,
        setup=with_record("R", edited(trials={"0": 1})),
    ),
    bad(
        "report-result-with-an-empty-trial",
        ("report", "{bad}"),
        "corrupt w2s record",
        out=None,
        setup=with_record("R", edited(trials=[{}])),
    ),
    bad(
        "report-unreadable-file",
        ("report", "{locked}"),
        "cannot read",
        out=None,
        setup=copy_of("R", "locked", mode=0),
        runner="unprivileged",
    ),
    bad("intrinsic-dim-missing-file", ("intrinsic-dim", "{tmp}/none.npy"), "no such file", out=None),
    bad("intrinsic-dim-directory", ("intrinsic-dim", "{tmp}"), "is a directory", out=None),
    bad(
        "intrinsic-dim-text-file",
        ("intrinsic-dim", "{f.txt}"),
        "expected a .npy",
        out=None,
        setup=files(**{"f.txt": "1 2"}),
    ),
    bad(
        "intrinsic-dim-npy-with-nan",
        ("intrinsic-dim", "{x.npy}"),
        "NaN or inf",
        out=None,
        setup=files(**{"x.npy": lambda p: np.save(p, np.full((10, 3), np.nan))}),
    ),
    bad(
        "intrinsic-dim-npy-one-row",
        ("intrinsic-dim", "{x.npy}"),
        "(samples, features) matrix",
        out=None,
        setup=files(**{"x.npy": lambda p: np.save(p, np.zeros((1, 3)))}),
    ),
    bad(
        "intrinsic-dim-npy-object-array",
        ("intrinsic-dim", "{x.npy}"),
        "unreadable matrix",
        out=None,
        setup=files(**{"x.npy": lambda p: np.save(p, np.array([{"a": 1}, None]), allow_pickle=True)}),
    ),
    bad(
        "intrinsic-dim-npz-of-two-arrays",
        ("intrinsic-dim", "{x.npz}"),
        "several arrays (a, b)",
        out=None,
        setup=files(**{"x.npz": lambda p: np.savez(p, a=np.eye(3), b=np.eye(3))}),
    ),
    bad("intrinsic-dim-teacher-artifact", ("intrinsic-dim", "{T}"), "expected embeddings", out=None),
    bad(
        "intrinsic-dim-rows-differ",
        ("intrinsic-dim", "{a.npy}", "{b.npy}"),
        "the same samples",
        out=None,
        setup=files(**{"a.npy": lambda p: np.save(p, np.eye(5)), "b.npy": lambda p: np.save(p, np.eye(4))}),
    ),
    bad(
        "intrinsic-dim-unreadable-file",
        ("intrinsic-dim", "{locked}"),
        "locked.safetensors",
        "Permission denied",
        out=None,
        setup=copy_of("weak", "locked", mode=0),
        runner="unprivileged",
    ),
    bad("intrinsic-dim-empty-stdin", ("intrinsic-dim",), "nothing arrived on stdin", stdin="", out=None),
    # NaN and inf embeddings in the rows a stage uses ---------------------------------------------------------------
    bad(
        "train-weak-nan-embeddings",
        ("train-weak", "{nan_weak}", *SMALL),
        "weak embeddings",
        "nan-weak.safetensors",
        "hold NaN or inf",
        "row 0",
    ),
    bad(
        "train-weak-inf-embeddings",
        ("train-weak", "{inf_weak}", *SMALL),
        "weak embeddings",
        "inf-weak.safetensors",
        "row",
    ),
    bad(
        "pseudolabel-nan-embeddings",
        ("pseudolabel", "{T}", "--embeddings", "{nan_weak}"),
        "weak embeddings",
        "nan-weak.safetensors",
        "row",
    ),
    bad(
        "fit-student-nan-strong",
        ("fit-student", "{P}", "--strong", "{nan_strong}"),
        "strong embeddings",
        "nan-strong.safetensors",
        "hold NaN or inf",
        "row",
    ),
    bad(
        "fit-student-inf-strong",
        ("fit-student", "{P}", "--strong", "{inf_strong}"),
        "strong embeddings",
        "inf-strong.safetensors",
        "row",
    ),
    bad(
        "fit-student-nan-weak",
        ("fit-student", "{P}", "--strong", "{strong}", "--weak", "{nan_weak}"),
        "weak embeddings",
        "nan-weak.safetensors",
        "row",
    ),
    bad(
        "intrinsic-dim-nan-embeddings",
        ("intrinsic-dim", "{weak}", "{nan_strong}"),
        "strong",
        "nan-strong.safetensors",
        "row",
        out=None,
    ),
    # a full disk: the process may only write small files -----------------------------------------------------------
    bad(
        "train-weak-disk-full",
        ("train-weak", "{weak}", "--n-labeled", 100, "--n-test", 100),
        "cannot write",
        "File too large",
        runner="small_files",
    ),
    bad("extract-disk-full", ("extract", *DIGITS, "--limit", 200), "File too large", runner="small_files"),
    bad(
        "intrinsic-dim-plot-disk-full",
        ("intrinsic-dim", "{weak}", "--estimator", "spectral", "--plot", "{tmp}/s.png"),
        "s.png",
        "File too large",
        runner="small_files",
        out=None,
        absent=("{tmp}/s.png",),
    ),
    # control characters in names: still one printable line ----------------------------------------------------------
    bad("folder-name-with-newline", ("extract", "--data", "folder:{tmp}/a\nb", *EXTRACT), "a\\nb", "not a directory"),
    bad(
        "folder-name-with-escape",
        ("extract", "--data", "folder:{tmp}/d\x1bx", *EXTRACT),
        "d\\x1bx",
        "cannot read image",
        setup=image_folder(b"garbage", root="d\x1bx"),
    ),
    bad(
        "out-under-a-file-with-newline",
        ("train-weak", "{weak}"),
        "new\\nline",
        out="{tmp}/new\nline/o.safetensors",
        setup=files(**{"new\nline": "x"}),
    ),
    bad("input-name-with-escape", ("train-weak", "{tmp}/\x1b[31mred.safetensors"), "\\x1b[31mred", "no such file"),
    bad("input-name-not-utf8", ("report", "{tmp}/r\udcff.safetensors"), "r\\udcff", "no such file", out=None),
    usage("unknown-option-with-escape", ("report", "{R}", "--x\x1b[1m"), "--x\\x1b[1m"),
    bad("csv-name-with-newline", ("extract", "--data", "csv:{tmp}/a\nb.csv", *EXTRACT), "a\\nb.csv", "no such file"),
    bad("synth-sweep-name-with-escape", ("synth", "--sweep", "\x1b[2J"), "\\x1b[2J", out=None),
    bad("sweep-vary-with-newline", ("sweep", *RUN, "--vary", "n-pseudo=1\n2"), "'1\\n2'", out=None),
]


def _params(cases: list[Case]) -> list:
    return [pytest.param(c, id=c.id) for c in cases]


# running a row -----------------------------------------------------------------------------------------------------
def _fill(value: object, names: dict[str, Path]) -> str:
    text = str(value)
    for name, path in sorted(names.items(), key=lambda kv: -len(kv[0])):
        text = text.replace("{" + name + "}", str(path))
    return text


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@contextlib.contextmanager
def _unprivileged() -> Iterator[None]:
    """This thread without root's power to bypass file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    taken out of its effective set, still permitted, so put back after), so that file modes apply as to any
    user. Not setuid(nobody): the venv's interpreter lives in /root, which nobody may not enter."""
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3, this thread
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.skip(f"cannot read this thread's capabilities ({os.strerror(ctypes.get_errno())})")
    effective = data[0].effective
    data[0].effective &= ~(1 << 1 | 1 << 2)
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.skip(f"cannot drop the permission override here ({os.strerror(ctypes.get_errno())})")
    try:
        yield
    finally:
        data[0].effective = effective
        assert libc.capset(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())


@contextlib.contextmanager
def _small_files() -> Iterator[None]:
    """This process unable to grow any file past 16 KiB: a write beyond gets EFBIG (SIGXFSZ ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def run_case(args: list[str], stdin: str | None, runner: str) -> CliResult:
    """The row's command in this process (conftest's w2s), under the runner's restriction for its duration."""
    if os.geteuid() != 0 and runner == "unprivileged":
        pytest.skip("needs root (to drop the permission override)")
    restriction = {"inprocess": contextlib.nullcontext, "unprivileged": _unprivileged, "small_files": _small_files}
    with restriction[runner]():
        return w2s(*args, input=stdin)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(*roots: Path) -> dict[Path, str]:
    """sha256 of every file under roots (root reads them whatever their modes)."""
    return {p: sha256(p) for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def leftovers(tmp: Path, before: set[Path]) -> list[str]:
    """New files under tmp: temp files anywhere, and anything outside an extraction's resumable OUT.shards/."""
    new = []
    for p in tmp.rglob("*"):
        if p in before or (p.is_dir() and not p.is_symlink()):
            continue
        if p.name.startswith(".w2s-") or not any(part.endswith(".shards") for part in p.relative_to(tmp).parts):
            new.append(str(p.relative_to(tmp)))
    return sorted(new)


def _stat(path: Path) -> tuple[int, ...] | None:
    try:
        st = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@dataclass
class Inputs:
    """The fixture's files, shared by the rows that cannot write into their folder (a row that may gets a copy,
    `inputs_copy`). Hashed once; after a row, a file is hashed again where the row could have changed it: its
    inode, size, mtime or ctime moved (no write or replacement leaves all four, ctime cannot be set back), or
    the row names it. A row that changed them fails, and they are put back for the next rows."""

    folder: Path
    pristine: Path  # an untouched copy, to put them back from
    hashes: dict[Path, str]
    stats: dict[Path, tuple[int, ...] | None]

    @classmethod
    def of(cls, folder: Path, pristine: Path) -> Inputs:
        shutil.copytree(folder, pristine)
        hashes = snapshot(folder)
        return cls(folder, pristine, hashes, {p: _stat(p) for p in hashes})

    def changed(self, texts: list[str]) -> list[str]:
        """The files changed or deleted; `texts`: the row's arguments, stdin and outputs, filled in."""
        named = {p for p in self.hashes if any(str(p) in t for t in texts)}
        suspects = named | {p for p, st in self.stats.items() if _stat(p) != st}
        return sorted(str(p) for p in suspects if not p.is_file() or sha256(p) != self.hashes[p])

    def restore(self) -> None:
        shutil.rmtree(self.folder)
        shutil.copytree(self.pristine, self.folder)
        self.stats = {p: _stat(p) for p in self.hashes}


@pytest.fixture(scope="module")
def inputs(base, tmp_path_factory) -> Inputs:
    return Inputs.of(base["base"], tmp_path_factory.mktemp("catalogue-pristine") / "base")


def inputs_copy(base: dict[str, Path], tmp: Path) -> dict[str, Path]:
    """The fixture's files copied into this row's folder (recorded references resolve to the copies), so a row
    that damages an input damages only its own."""
    shutil.copytree(base["base"], tmp / "in")
    return {k: tmp / "in" / p.name for k, p in base.items() if k != "base"}


OUTPUT_FLAGS = ("-o", "--out-dir", "--plot", "--csv")


def writes_beside_inputs(case: Case, base: dict[str, Path]) -> bool:
    """Whether a row's command may write into its inputs' folder, so that the row needs its own copy: an output
    (or a path that must stay absent) names an input, or no -o is given while an input is named (a default
    output name lands beside the input), or the setup links to an input."""
    marks = ["{" + k + "}" for k in base if k != "base"]

    def names_input(value: object) -> bool:
        return any(m in str(value) for m in marks)

    args = [str(a) for a in case.args]
    after_flag = [v for flag, v in zip(args, args[1:], strict=False) if flag in OUTPUT_FLAGS]
    named = any(names_input(a) for a in (*args, case.stdin or ""))
    return (
        case.own_inputs
        or any(names_input(o) for o in (*case.outs, *case.absent, *after_flag))
        or ("-o" not in args and named)
    )


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input(case: Case, base, inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output name would land here, and be noticed
    shared = not writes_beside_inputs(case, base)
    names = {**(base if shared else inputs_copy(base, tmp_path)), "tmp": tmp_path}
    names.pop("base", None)
    if case.setup is not None:
        names.update(case.setup(tmp_path, names))
    if shared:  # a link into the shared inputs would let the row write them: such a row sets own_inputs
        links = [p for p in tmp_path.rglob("*") if p.is_symlink() and inputs.folder in p.resolve().parents]
        assert not links, f"{case.id}: its setup links to the inputs, give it own_inputs=True"
    args = [_fill(a, names) for a in case.args]
    stdin = None if case.stdin is None else _fill(case.stdin, names)
    outs = [Path(_fill(o, names)) for o in (*case.outs, *case.absent) if o]
    existed = {p: os.path.lexists(p) for p in outs}
    before = snapshot(tmp_path)  # the row's own files (and its copy of the inputs)
    paths_before = {*tmp_path.rglob("*"), *inputs.folder.rglob("*")}

    try:
        r = run_case(args, stdin, case.runner)
    finally:
        changed = inputs.changed([*args, stdin or "", *map(str, outs)])
        left = leftovers(inputs.folder, paths_before)
        if changed or left:
            inputs.restore()

    lines = r.stderr.splitlines()
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("w2s: error: "), r.stderr
    line = lines[0]
    assert line.isprintable(), line
    for part in case.expect:
        assert part in line, line
    if case.hint:
        assert line.endswith("--help')"), line
    assert r.stdout == ""
    for p in outs:  # not made (one that existed, like an input named as the output, is checked below)
        if not existed[p]:
            assert not os.path.lexists(p), f"{p} was left behind"
    after = snapshot(tmp_path)
    changed += sorted(str(p) for p, h in before.items() if after.get(p) != h)
    assert not changed, f"inputs changed or deleted: {changed}"
    assert not left, left
    assert not leftovers(tmp_path, paths_before), leftovers(tmp_path, paths_before)


# edge cases the checks must let through ----------------------------------------------------------------------------
POSITIVE = [
    ("train-weak-252-char-name", ("train-weak", "{weak}", "--n-labeled", 100, "--n-test", 100), "{tmp}/" + NAME_252),
    ("extract-252-char-name", ("extract", *DIGITS, "--limit", 40), "{tmp}/" + NAME_252),
    ("intrinsic-dim-252-char-name", ("intrinsic-dim", "{weak}", "--estimator", "spectral"), "{tmp}/" + NAME_252),
    ("vit-size-64-works", ("extract", *VIT_64, "--limit", 20), "{tmp}/vit.safetensors"),
]


@pytest.mark.parametrize(
    "args, out",
    [pytest.param(a, o, id=i) for i, a, o in POSITIVE],
)
def test_edge_case_works(args, out, base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = {**base, "tmp": tmp_path}
    out = Path(_fill(out, names))
    r = w2s(*[_fill(a, names) for a in args], "-o", out)
    assert r.exit_code == 0, r.output
    assert out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_a_logistic_student_takes_hard_labels_of_a_ridgeless_teacher(base, tmp_path):
    """The other side of the refusal of soft ridgeless labels: one-hot labels are probabilities."""
    hard = tmp_path / "hard.safetensors"
    r = w2s("pseudolabel", base["T"], "--hard", "-o", hard)
    assert r.exit_code == 0, r.output
    r = w2s("fit-student", hard, "--strong", base["strong"], "--solver", "logistic", "-o", tmp_path / "r.safetensors")
    assert r.exit_code == 0, r.output
    assert store.read_meta(tmp_path / "r.safetensors")["solver"] == {"teacher": "ridgeless", "student": "logistic"}


def test_outputs_follow_the_umask(base, tmp_path):
    old = os.umask(0o027)
    try:
        r = w2s("train-weak", base["weak"], "--n-labeled", 100, "--n-test", 100, "-o", tmp_path / "t.safetensors")
        sweep = ("--sweep", "sigma", "--values", "0.5,1", "--trials", 20)
        s = w2s("synth", *sweep, "--plot", tmp_path / "s.png", "--csv", tmp_path / "s.csv")
    finally:
        os.umask(old)
    assert r.exit_code == 0 and s.exit_code == 0, r.output + s.output
    for name in ("t.safetensors", "s.png", "s.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name
