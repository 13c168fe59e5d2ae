"""`w2s finetune`: the strong network finetuned on the teacher's labels, on a tiny real timm model (random
weights from a local file) over real digits images."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import QUIET, assert_user_error, copy_finetune_inputs, seed_run_dir, w2s
from safetensors.torch import load_file

from w2s_cli.extraction.extract import embed_batch, extract
from w2s_cli.finetuning.network import cut, flat_blocks
from w2s_cli.options import BackboneSpec, DataOptions, SplitOptions, SubspaceOptions
from w2s_cli.options.recipe import FinetuneRecipe, TrainSpec
from w2s_cli.stages.finetune import finetune
from w2s_cli.stages.student import fit_student
from w2s_cli.stages.teacher import pseudolabel, train_weak
from w2s_cli.store import artifact as store

pytestmark = pytest.mark.slow  # finetunes, and killed or torchrun ones as their own processes

FAST = dict(epochs=2, batch_size=32, lr=1e-3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, finetune_inputs):
    """Digits: the conftest weak teacher's pseudo-labels, and a tiny random-weight strong network (a copy)."""
    return copy_finetune_inputs(finetune_inputs, tmp_path_factory.mktemp("finetune"))


def run_ft(tiny, name: str, **recipe) -> Path:
    d, pseudo, strong = tiny
    out = d / f"{name}.safetensors"
    return finetune(
        pseudo,
        strong,
        out=out,
        recipe=FinetuneRecipe(**{**FAST, **recipe}),
        subspace=SubspaceOptions("20"),
        extract=QUIET,
    )


def weights(result: Path, fit: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(f"{result}.fits") / fit / "final.safetensors"))


def test_prefix_then_suffix_is_the_embedding():
    import timm

    model = timm.create_model("test_efficientnet").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        whole = embed_batch(model, x)
        for k in (1, 3, len(flat_blocks(model))):
            c = cut(model, TrainSpec("last", k), "test_efficientnet")
            assert torch.allclose(c.suffix(c.prefix(x)), whole, atol=1e-6)


@pytest.mark.parametrize("train", ["head", "last:2", "lora:2", "all"])
def test_every_train_spec_runs_and_reports(tiny, train):
    r = run_ft(tiny, f"ft-{train.replace(':', '')}", train=train)
    meta = store.read_meta(r)
    fits = meta["fits"]
    assert meta["solver"]["student"] == "finetune" and meta["student"]["recipe"]["train"] == train
    assert [h["epoch"] for h in fits["w2s"]["history"]] == [0, 1, 2]
    assert fits["w2s"]["train_rows"] == 270 and fits["w2s"]["val_rows"] == 30  # 10% of the 300 pseudo rows
    n_trained = {k: fits[k]["trained_parameters"] for k in ("w2s", "strong_sft", "ceiling")}
    assert len(set(n_trained.values())) == 1  # one recipe for all three fits
    head = 256 * 10 + 10
    if train == "head":
        assert n_trained["w2s"] == head
    else:
        assert n_trained["w2s"] > head
    t = meta["trials"][0]
    assert set(t["error"]) == {"weak", "w2s", "strong_sft", "ceiling"} and "init" in t
    rep = w2s("report", r, "--json")
    assert rep.exit_code == 0, rep.output
    s = json.loads(rep.stdout)
    assert s["student"]["description"].startswith("finetuned: ") and "LP-FT" in s["student"]["description"]
    assert s["init"]["error"]["w2s"] > 0


@pytest.mark.parametrize("loss", ["xent", "logconf"])
def test_cross_entropy_losses_evaluate_the_softmax(tiny, loss):
    r = run_ft(tiny, f"ft-{loss}", train="head", loss=loss)
    out = store.load(r)["test_output_w2s"]
    assert np.allclose(out.sum(axis=1), 1.0) and (out >= 0).all()


def test_step_zero_is_the_linear_student(tiny):
    """LP-FT: with every row used for training (no validation slice), epoch 0 reproduces fit-student."""
    d, pseudo, strong = tiny
    linear = fit_student(pseudo, strong, d / "linear.safetensors", subspace=SubspaceOptions("20"))
    r = run_ft(tiny, "ft-step0", train="last:2", val_fraction=0.0, select="last", epochs=1)
    lin, ft = store.load(linear), store.load(r)
    for k in ("w2s", "strong_sft", "ceiling"):
        a, b = lin[f"test_output_{k}"], ft[f"init_output_{k}"]
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max(), k


def test_epoch_zero_is_the_linear_student_of_the_training_slice(tiny):
    """The honest validation bar: each LP-FT start head is the ridgeless fit on its fit's training slice only
    (in fit-student's strong basis), so its validation loss at epoch 0 is out of sample like every later
    epoch's; epoch 0 is then fit-student's student refitted without the validation rows."""
    from w2s_cli.finetuning.job import validation_split
    from w2s_cli.numerics.solvers import RidgelessRegressor
    from w2s_cli.stages.finetune import training_sets
    from w2s_cli.store.embeddings import EmbeddingSet

    d, pseudo, strong = tiny
    r = run_ft(tiny, "ft-honest", train="head", val_fraction=0.2, epochs=1)
    ft, emb = store.load(r), EmbeddingSet(strong, "strong embeddings")
    mean, V = np.asarray(ft["strong_basis_mean"]), np.asarray(ft["strong_basis"])
    test = np.asarray(ft["test_rows"])
    fits = training_sets(store.load(pseudo), emb)
    seed = int(store.read_meta(pseudo)["seed"])
    for k, name in enumerate(("w2s", "strong_sft", "ceiling")):
        train, val = validation_split(len(fits[name].rows), 0.2, seed, k)
        assert len(val) > 0
        rows = fits[name].rows[train]
        head = RidgelessRegressor().fit((emb.rows(rows) - mean) @ V, fits[name].targets[train])
        expected = head.predict((emb.rows(test) - mean) @ V)
        got = np.asarray(ft[f"init_output_{name}"])
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max(), name
        history = store.read_meta(r)["fits"][name]["history"]
        assert history[0]["epoch"] == 0 and history[0]["val_loss"] is not None


def test_ground_truth_never_reaches_the_w2s_student(tiny, tmp_path):
    """Scrambling the true labels of the pseudo-labelled pool changes nothing in the W2S student's weights
    (the ceiling, which trains on them, does change)."""
    d, pseudo, strong = tiny
    art = store.load(pseudo)
    tensors = {k: np.asarray(art[k]) for k in art.names()}
    observed = tensors["pseudo_observed"]
    tensors["pseudo_observed"] = (observed + 1 + np.arange(len(observed)) % 3) % 10
    assert (tensors["pseudo_observed"] != observed).all()
    meta = {k: v for k, v in art.meta.items() if k not in ("artifact_id", "content_sha256")}
    scrambled = store.save(store.Artifact("pseudolabels", meta, tensors), tmp_path / "p-scrambled.safetensors")
    recipe = FinetuneRecipe(**{**FAST, "train": "last:1"})
    kw = dict(recipe=recipe, subspace=SubspaceOptions("20"), extract=QUIET)
    a = finetune(pseudo, strong, out=tmp_path / "a.safetensors", **kw)
    b = finetune(scrambled, strong, out=tmp_path / "b.safetensors", **kw)
    wa, wb = weights(a, "w2s"), weights(b, "w2s")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert np.array_equal(store.load(a)["test_output_w2s"], store.load(b)["test_output_w2s"])
    ca, cb = weights(a, "ceiling"), weights(b, "ceiling")
    assert not all(torch.equal(ca[k], cb[k]) for k in ca)


def _cli(tiny, out: Path, *extra: str) -> list[str]:
    d, pseudo, strong = tiny
    return [
        sys.executable,
        "-m",
        "w2s_cli",
        "finetune",
        str(pseudo),
        "--strong",
        str(strong),
        "--subspace",
        "20",
        "--train",
        "last:2",
        "--epochs",
        "4",
        "--ft-batch-size",
        "16",
        "--lr",
        "1e-3",
        "-q",
        "--num-workers",
        "0",
        "-o",
        str(out),
        *extra,
    ]


@contextlib.contextmanager
def one_thread():
    """This process computing as the subprocesses here do (OMP_NUM_THREADS=1): torch and BLAS on one thread."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def finetune_here(args: list[str]) -> None:
    """`_cli`'s command (`python -m w2s_cli finetune ...`) through the entry point in this process, on one thread."""
    with one_thread():
        r = w2s(*args[3:])
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory) -> Path:
    """The reference of the resume tests: `_cli`'s finetune run to the end in this process."""
    whole = tmp_path_factory.mktemp("whole") / "whole.safetensors"
    finetune_here(_cli(tiny, whole))
    return whole


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_interrupted_finetune_resumes_to_identical_weights(tiny, uninterrupted, tmp_path, sig):
    """Killed, or stopped by SIGTERM (exit 130, one line naming the finetune, nothing half-written), once the
    W2S fit's first checkpoint exists; the rerun resumes from it and reaches the uninterrupted run's weights
    and test outputs bit for bit. Only the stopped command is its own process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole, killed = uninterrupted, tmp_path / "killed.safetensors"
    proc = subprocess.Popen(_cli(tiny, killed), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = Path(f"{killed}.fits") / "w2s" / "checkpoint.safetensors"
    deadline = time.time() + 300
    try:
        while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ckpt.exists() and not killed.exists()  # stopped mid-way through the W2S fit
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and out == "", err
        lines = err.splitlines()  # the notes of the work it did (the cache it reused), then the one line
        assert [line for line in lines if line.startswith("w2s:")] == lines[-1:] and "Traceback" not in err, err
        assert lines[-1] == (
            "w2s: interrupted during a finetune (rerun the same command to resume it: the frozen prefix's cache "
            "from its finished shards, each fit from its last finished epoch)"
        )
        assert not [p.name for p in tmp_path.rglob(".w2s-*")]  # no temp file left by the write it stopped
    finetune_here(_cli(tiny, killed))
    meta = store.read_meta(killed)
    assert meta["fits"]["w2s"]["resumed_from_epoch"] >= 1
    for fit in ("w2s", "strong_sft", "ceiling"):
        a, b = weights(whole, fit), weights(killed, fit)
        assert all(torch.equal(a[k], b[k]) for k in a), fit
    a, b = store.load(whole), store.load(killed)
    assert all(np.array_equal(a[f"test_output_{k}"], b[f"test_output_{k}"]) for k in ("w2s", "strong_sft", "ceiling"))
    assert meta["trials"][0]["error"] == store.read_meta(whole)["trials"][0]["error"]


def test_torchrun_two_processes_match_one(tiny, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    one = tmp_path / "one.safetensors"
    two = tmp_path / "two.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finetune_here(_cli(tiny, one, "--epochs", "2"))  # the one process is this one
    args = _cli(tiny, two, "--epochs", "2")[3:]  # after `python -m w2s_cli`
    r = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "-m", "w2s_cli", *args], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    a, b = store.load(one), store.load(two)
    for k in ("w2s", "strong_sft", "ceiling"):
        assert np.allclose(a[f"test_output_{k}"], b[f"test_output_{k}"], rtol=1e-4, atol=1e-5), k
    assert store.read_meta(two)["fits"]["w2s"]["updates"] == store.read_meta(one)["fits"]["w2s"]["updates"]


def test_bad_finetune_input_is_one_line(tiny, tmp_path):
    d, pseudo, strong = tiny
    base = ["finetune", str(pseudo), "--strong", str(strong), "--subspace", "20", "-q", "-o", str(tmp_path / "x")]
    assert_user_error(w2s(*base, "--train", "lora:0"), "--train lora:0: lora:N needs a LoRA rank R of at least 1")
    assert_user_error(w2s(*base, "--train", "last:9"), "has only 5 blocks")
    assert_user_error(w2s(*base, "--train", "some"), "--train must be head, last:K, lora:R or all")
    assert_user_error(w2s(*base, "--val-fraction", "0"), "--select best needs validation rows")
    assert not (tmp_path / "x").exists()


def test_images_that_can_no_longer_be_read_are_refused(tiny, tmp_path, image_folder):
    """A strong artifact made from a folder that has since gone: one line, nothing written."""
    folder = tmp_path / "imgs"
    shutil.copytree(image_folder, folder)
    data = DataOptions(f"folder:{folder}")
    weights_file = tiny[0] / "strong-weights.safetensors"
    spec = BackboneSpec("test_efficientnet", 32, str(weights_file))
    weak = extract(data, spec, tmp_path / "w.safetensors", QUIET)
    strong = extract(data, BackboneSpec("test_efficientnet", 40, str(weights_file)), tmp_path / "s.safetensors", QUIET)
    teacher = train_weak(
        weak,
        tmp_path / "t.safetensors",
        split=SplitOptions(n_labeled=20, n_pseudo=30, n_test=10),
        subspace=SubspaceOptions("5"),
    )
    pseudo = pseudolabel(teacher, tmp_path / "p.safetensors")
    shutil.rmtree(folder)
    out = tmp_path / "r.safetensors"
    r = w2s("finetune", pseudo, "--strong", strong, "--subspace", "5", "--train", "all", "-q", "-o", out)
    assert_user_error(r, "their images (folder:")
    assert "can no longer be read" in r.stderr and not out.exists()


def test_run_and_sweep_keep_probe_and_finetuned_students_apart(tiny, digits_run, tmp_path, weak_weights):
    d = tiny[0]
    seed_run_dir(digits_run, tmp_path, roles=("weak",))  # the weak embeddings; the strong @40 are extracted
    base = (
        "--data digits --weak test_efficientnet@32 --strong test_efficientnet@40 --n-labeled 100 --n-pseudo 300"
        " --n-test 200 --subspace 20 --num-workers 0 --train last:1 --epochs 1 -q"
    ).split() + ["--weak-weights", str(weak_weights), "--strong-weights", str(d / "strong-weights.safetensors")]
    out = ["--out-dir", str(tmp_path)]
    probe = w2s("run", *base, *out, "--json")
    tuned = w2s("run", *base, *out, "--student", "finetune", "--json")
    assert probe.exit_code == 0 and tuned.exit_code == 0, probe.output + tuned.output
    p, f = json.loads(probe.stdout), json.loads(tuned.stdout)
    assert "student" not in p and f["student"]["description"].startswith("finetuned: last 1 block, LP-FT")
    # issue 23: the finetuned run's report carries label-light predictions with the probe's keys, no extra flag
    assert set(f["predicted"]["error"]) == set(p["predicted"]["error"]) and {"pgr", "opr"} <= set(f["predicted"])
    # epoch 0 is the probe refitted on the 90% training slice (the validation rows stay out): close, not equal
    assert f["init"]["error"]["w2s"] == pytest.approx(p["error"]["w2s"], rel=0.02)
    key = FinetuneRecipe(train="last:1", epochs=1).key()
    assert (tmp_path / "result.safetensors").exists() and (tmp_path / f"result-finetune-{key}.safetensors").exists()
    trial = tmp_path / "trial-0" / f"result-finetune-{key}.safetensors"
    made = store.read_meta(trial)["created"], trial.stat().st_mtime_ns
    again = w2s("run", *base, *out, "--student", "finetune", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["error"] == f["error"], again.output
    assert (store.read_meta(trial)["created"], trial.stat().st_mtime_ns) == made  # the finished trial is reused
    csv = tmp_path / "sweep.csv"
    s = w2s("sweep", *base, *out, "--vary", "student=probe,finetune", "--csv", csv, "--json")
    assert s.exit_code == 0, s.output
    points = json.loads(s.stdout)["points"]
    assert [pt["params"]["student"] for pt in points] == ["probe", "finetune"]
    assert points[1]["summary"]["error"] == f["error"]  # deterministic: the same numbers as the run
    header = csv.read_text().splitlines()[0].split(",")
    assert "student" in header and "pgr_epoch0" in header
    bad = w2s("sweep", *base, *out, "--vary", "train=head,lora:0")
    assert_user_error(bad, "lora:N needs a LoRA rank R of at least 1")
