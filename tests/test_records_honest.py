"""What a finetune's records and the commands that read them promise (issue 25): artifacts combined only when
they belong together, damaged weights files refused in one line, records that say what ran (precision,
device) and paths that still name their files from another folder or in a copied folder; an interrupt names
what it stopped. On the tiny random-weight strong network over real digits images (conftest's
finetune_inputs), one epoch of `last:1`."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import QUIET, CliResult, assert_user_error, copy_finetune_inputs, w2s

from w2s_cli.diagnostics.grad_features import extract_gradients, start_head
from w2s_cli.diagnostics.kernel_check import kernel_check
from w2s_cli.options import BackboneSpec, DataOptions
from w2s_cli.store import artifact as store
from w2s_cli.store.records import PrecisionRecord, RecordError, ResultRecord, StudentRecord

pytestmark = pytest.mark.slow  # finetunes from the session extraction, one interrupted in its own process

FITS = ("w2s", "strong_sft", "ceiling")
RECIPE = ["--train", "last:1", "--epochs", "1", "--ft-batch-size", "32", "--select", "last", "--warmup-epochs", "0"]
CACHE = Path("activations") / "s.prefix-4of5.safetensors"  # beside s.safetensors: test_efficientnet has 5 blocks


@contextlib.contextmanager
def working_folder(folder: Path) -> Iterator[None]:
    """Commands run from `folder` (relative paths are relative to it)."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, finetune_inputs):
    """The module's copy of the finetuning inputs: (folder, pseudo-labels, strong embeddings)."""
    return copy_finetune_inputs(finetune_inputs, tmp_path_factory.mktemp("honest"))


@pytest.fixture(scope="module")
def made(tiny) -> tuple[Path, CliResult]:
    """`w2s finetune` launched from the inputs' folder with relative paths, the result in runs/ below it,
    asking for fp16 on the CPU: (the result, what the command said)."""
    d = tiny[0]
    with working_folder(d):
        r = w2s("finetune", "p.safetensors", "--strong", "s.safetensors", *RECIPE, "--ft-precision", "fp16",
                "--device", "cpu", "--num-workers", "0", "-q", "-o", Path("runs") / "ft.safetensors")  # fmt: skip
    assert r.exit_code == 0, r.output
    return d / "runs" / "ft.safetensors", r


def grads(tiny, result: Path, out: Path, train: str) -> Path:
    """Gradient features at the LP-FT start of fit w2s of `result`, through the finetune's own network."""
    spec = BackboneSpec("test_efficientnet", 32, str(tiny[0] / "strong-weights.safetensors"))
    return extract_gradients(DataOptions("digits"), spec, out, QUIET, train=train, init=result, proj_dim=32)


# 1. artifacts that do not belong together ---------------------------------------------------------------------
def test_kernel_check_refuses_gradient_features_of_another_trained_set(made, tiny):
    """Features of `head` at the start of a `last:1` finetune: its start, its samples, its network, but not
    what it trained. Today's check printed their linearised error under the finetune's heading."""
    result = made[0]
    g = grads(tiny, result, tiny[0] / "g-head.safetensors", "head")
    with working_folder(tiny[0]):  # where the finetune ran (an older w2s found its cache only from there)
        r = w2s("kernel-check", result, "--grads", f"w2s={g}")
    assert_user_error(r, "gradient features of --train head, but this finetune trained last:1")


def test_gradient_features_refuse_a_start_made_for_another_network(made):
    """--init RESULT with a backbone of the same name and width but other weights (seeded random, not the
    finetuned file): the LP-FT head would sit on a network it was never fitted to."""
    out = made[0].parent / "g-other.safetensors"
    r = w2s("extract", "--data", "digits", "--model", "test_efficientnet", "--image-size", "32", "--no-pretrained",
            "--features", "grad", "--train", "last:1", "--init", made[0], "--limit", "50", "--num-workers", "0",
            "-q", "-o", out)  # fmt: skip
    assert_user_error(r, "a finetune of test_efficientnet with weights")
    assert "give the strong network it finetuned" in r.stderr and not out.exists()


# 2. damaged weights files ----------------------------------------------------------------------------------------
def damaged_copy(result: Path, folder: Path) -> Path:
    """A copy of the result and its .fits folder in `folder` (beside runs/, so that the paths it holds
    relative to itself name the same inputs)."""
    folder.mkdir()
    shutil.copy(result, folder / result.name)
    shutil.copytree(Path(f"{result}.fits"), folder / f"{result.name}.fits")
    return folder / result.name


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("truncated", "truncated or damaged (not a readable safetensors file)"),
        ("flipped", "damaged (its tensors no longer match the hash written with them)"),
        ("swapped", "not the weights its result recorded"),
    ],
)
def test_damaged_finetuned_weights_are_one_line(made, tiny, damage, says):
    """A truncated weights file (a traceback today), one with a changed byte, or another fit's weights in its
    place (both read silently today): one line naming the file and its role."""
    result = damaged_copy(made[0], tiny[0] / f"damaged-{damage}")
    weights = Path(f"{result}.fits") / "w2s" / "final.safetensors"
    data = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))
    else:
        shutil.copy(Path(f"{result}.fits") / "ceiling" / "final.safetensors", weights)  # same tensor names
    with working_folder(tiny[0]):  # where the finetune ran (an older w2s found its cache only from there)
        r = w2s("kernel-check", result)
    assert_user_error(r, f"finetuned weights of fit w2s {weights}: {says}")


def test_a_damaged_checkpoint_is_said_and_the_fit_starts_over(made, tiny):
    """A checkpoint left by a killed finetune, cut short: the rerun says it does not use it, starts the fit
    over and reaches the same weights as an uninterrupted finetune (today: silently)."""
    d = tiny[0]
    out = d / "ckpt" / "ft.safetensors"
    checkpoint = Path(f"{out}.fits") / "w2s" / "checkpoint.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes((Path(f"{made[0]}.fits") / "w2s" / "final.safetensors").read_bytes()[:200])
    r = w2s("finetune", d / "p.safetensors", "--strong", d / "s.safetensors", *RECIPE, "--device", "cpu",
            "--num-workers", "0", "-q", "-o", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    note = (
        f"note: checkpoint {checkpoint}: truncated or damaged (not a readable safetensors file); starting this fit over"
    )
    assert note in r.stderr.splitlines()
    assert store.read_meta(out)["fits"]["w2s"]["resumed_from_epoch"] is None
    a, b = store.load(made[0]), store.load(out)
    assert all(np.array_equal(a[f"test_output_{k}"], b[f"test_output_{k}"]) for k in FITS)


# 3. what ran ---------------------------------------------------------------------------------------------------
def test_the_record_says_the_precision_that_ran(made):
    """fp16 asked for on the CPU runs in fp32 (AMP is CUDA's): said on stderr, recorded, reported."""
    result, r = made
    assert (
        "note: --ft-precision fp16 (AMP) needs a CUDA device: on cpu this finetune runs in fp32, and its record "
        "says so" in r.stderr.splitlines()
    )
    student = ResultRecord.from_json(store.read_meta(result)).student
    assert student.recipe["precision"] == "fp16"  # what was asked for (the recipe's identity) stays
    assert student.device == "cpu" and student.precision == PrecisionRecord("fp16", "fp32", False, False)
    rep = w2s("report", result)
    assert rep.exit_code == 0 and "ran on cpu in fp32 (fp16 was asked for: AMP needs a CUDA device)" in rep.stdout


# 4. an interrupt names what it stopped ----------------------------------------------------------------------------
def test_ctrl_c_during_a_finetune_names_the_finetune(tiny, tmp_path):
    """SIGINT once the W2S fit has written its first checkpoint: one line naming the finetune and how to
    resume it (today: 'to resume an extraction')."""
    d = tiny[0]
    out = tmp_path / "ft.safetensors"
    args = ["finetune", d / "p.safetensors", "--strong", d / "s.safetensors", "--train", "last:1", "--epochs", "40",
            "--ft-batch-size", "32", "--device", "cpu", "--num-workers", "0", "-q", "-o", out]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "w2s_cli", *map(str, args)], env=env, stderr=subprocess.PIPE, text=True
    )
    checkpoint = Path(f"{out}.fits") / "w2s" / "checkpoint.safetensors"
    deadline = time.time() + 300
    try:
        while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == (
        "w2s: interrupted during a finetune (rerun the same command to resume it: the frozen prefix's cache from "
        "its finished shards, each fit from its last finished epoch)"
    )
    assert checkpoint.exists() and not out.exists()


# 5. a cache that cannot be written where it belongs -------------------------------------------------------------
def test_a_read_only_strong_embeddings_folder_names_the_cache(tiny, tmp_path):
    """The prefix cache goes beside the strong embeddings: a read-only folder there is not the user's -o
    (which is writable), and the error says where and why, and what to do."""
    from test_catalogue import _unprivileged

    inputs = tmp_path / "read-only"
    inputs.mkdir()
    _, pseudo, strong = copy_finetune_inputs(tiny[0], inputs)
    inputs.chmod(0o555)
    out = tmp_path / "ft.safetensors"
    try:
        with _unprivileged() if os.geteuid() == 0 else contextlib.nullcontext():
            r = w2s("finetune", pseudo, "--strong", strong, *RECIPE, "--num-workers", "0", "-q", "-o", out)
    finally:
        inputs.chmod(0o755)
    assert_user_error(r, f"cannot write the frozen prefix's cache {inputs / CACHE} (Permission denied)")
    assert "beside the strong embeddings" in r.stderr and "copy the strong embeddings to a writable folder" in r.stderr
    assert not out.exists() and not (inputs / "activations").exists()


# 6. paths that name their files ---------------------------------------------------------------------------------
def test_every_path_a_finetune_records_is_relative_to_its_artifact(made, tiny):
    """The finetune ran from the inputs' folder and wrote runs/ft.safetensors: the tensors it read, its
    weights, its teacher and weak embeddings are each recorded absolute and relative to runs/ (the prefix
    cache was `activations/...`, relative to the folder it ran from; the teacher relative to the pseudo-labels)."""
    result = made[0]
    rec = ResultRecord.from_json(store.read_meta(result))
    cache = tiny[0] / CACHE
    inputs = rec.student.inputs
    assert inputs["path"] == str(cache.resolve()) and inputs["relpath"] == os.path.join("..", CACHE)
    assert inputs["artifact_id"] == store.read_meta(cache)["artifact_id"]
    for key in ("pseudolabels", "teacher", "weak_embeddings", "strong_embeddings"):
        ref = rec.provenance[key]
        assert (result.parent / ref["relpath"]).resolve() == Path(ref["path"]) and Path(ref["path"]).is_file(), key
    for fit in FITS:
        extra = rec.fits[fit].extra
        assert (result.parent / extra["weights"]).resolve() == Path(extra["weights_path"]), fit


def test_a_copied_folder_read_from_elsewhere_reads_its_own_files(made, tiny, tmp_path):
    """The inputs, the cache and the result copied elsewhere, the original cache out of the way: kernel-check
    run from a third folder reads the copy's cache (today: 'the cached activations it trained on are gone');
    gradient features at its start record the copy's files relative to themselves."""
    d, copied = tiny[0], tmp_path / "copied"
    shutil.copytree(d, copied, ignore=shutil.ignore_patterns("damaged-*", "ckpt", "g-*"))
    original, away = d / CACHE, d / "activations-away"
    original.parent.rename(away)
    try:
        with working_folder(tmp_path):
            r = kernel_check(copied / "runs" / "ft.safetensors")
            assert r.result == str((copied / "runs" / "ft.safetensors").resolve())
            assert all(f.stored_outputs_gap < 1e-5 for f in r.fits.values())
            g = grads(tiny, copied / "runs" / "ft.safetensors", copied / "g" / "g.safetensors", "last:1")
    finally:
        away.rename(original.parent)
    f = store.read_meta(g)["features"]
    assert f["inputs"]["kind"] == "cached prefix outputs"  # the copy's cache, found through the result
    assert f["inputs"]["path"] == str((copied / CACHE).resolve()) and f["inputs"]["relpath"] == os.path.join(
        "..", CACHE
    )
    init = f["init"]
    assert init["path"] == str((copied / "runs" / "ft.safetensors").resolve())
    assert init["relpath"] == os.path.join("..", "runs", "ft.safetensors") and init["fit"] == "w2s"
    assert init["inputs"]["relpath"] == os.path.join("..", CACHE)


def test_records_of_an_older_w2s_still_find_their_cache(made, tiny, tmp_path):
    """A schema-3 record as the older w2s wrote it (the cache's path relative to where the finetune ran; no
    weights hash): read from that folder, the recorded path; from anywhere else, the cache beside the strong
    embeddings."""
    d, result = tiny[0], made[0]
    art = store.load(result)
    meta = copy.deepcopy(art.meta)
    meta["student"]["inputs"] = {"input": "activations", "path": str(CACHE), "shape": [48, 2, 2],
                                 "before_block": 4, "blocks": 5}  # fmt: skip
    meta["student"].pop("precision", None)
    for fit in FITS:
        meta["fits"][fit] = {k: v for k, v in meta["fits"][fit].items() if k not in ("weights_path", "weights_sha256")}
    old = store.save(
        store.Artifact("result", meta, {n: art[n] for n in art.names()}), result.with_name("old.safetensors")
    )
    for folder in (d, tmp_path):
        with working_folder(folder):
            r = kernel_check(old)
            assert all(f.stored_outputs_gap < 1e-5 for f in r.fits.values())
    for folder in (d, tmp_path):  # gradient features at its start read the same cache
        with working_folder(folder):
            assert start_head(old, "w2s", tmp_path / "g.safetensors").read.ref["path"] == str((d / CACHE).resolve())


def test_a_combined_result_records_paths_relative_to_itself(made, tiny):
    """`run` combines its trials' results (in trial-K/) into one beside them: the references it takes over
    from the first trial are made relative to the combined result."""
    from w2s_cli.studies.run import combine

    d = tiny[0]
    out = combine([store.load(made[0])], d / "combined.safetensors")
    rec = ResultRecord.from_json(store.read_meta(out))
    for key in ("pseudolabels", "teacher", "weak_embeddings", "strong_embeddings"):
        ref = rec.provenance[key]
        assert (d / ref["relpath"]).resolve() == Path(ref["path"]) and Path(ref["path"]).is_file(), key
    assert (d / rec.fits["w2s"].extra["weights"]).resolve() == (Path(f"{made[0]}.fits") / "w2s" / "final.safetensors")
    assert (d / rec.student.inputs["relpath"]).resolve() == (d / CACHE).resolve()


def test_the_precision_record_round_trips_and_refuses_what_cannot_be():
    ran = PrecisionRecord("fp16", "fp16", autocast=True, grad_scaler=True)
    student = StudentRecord("finetune", {"train": "head"}, "finetuned: head only", {}, "cuda", ran)
    assert StudentRecord.from_json(student.to_json()) == student
    assert "precision" not in StudentRecord("finetune", {}, "finetuned").to_json()  # as older records were
    with pytest.raises(RecordError, match="precision.used"):
        PrecisionRecord("fp16", "fp8")
    with pytest.raises(RecordError, match="precision.autocast"):
        StudentRecord.from_json({"kind": "finetune", "recipe": {}, "description": "x",
                                 "precision": {"requested": "fp32", "used": "fp32", "autocast": "no"}})  # fmt: skip
