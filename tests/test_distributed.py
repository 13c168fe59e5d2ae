"""Resumable extraction (a killed run resumes from its last complete shard) and torchrun: extraction and
the streamed solves split over 2 CPU processes give the single-process artifacts and numbers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import w2s

from w2s_cli.store import artifact as store

pytestmark = pytest.mark.slow  # killed extractions, loader workers and torchrun, each its own processes

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "W2S_DIST_BACKEND": "gloo"}
EXTRACT = ["--data", "digits", "--no-pretrained", "--num-workers", "0", "-q"]
# what is killed or signalled runs as its own `w2s` process; the reference and the rerun run in this one
SLOW_EXTRACT = [
    "extract",
    *EXTRACT,
    "--model",
    "test_efficientnet",
    "--image-size",
    48,
    "--batch-size",
    20,
    "--shard-rows",
    100,
]


def sh(*args, env=None, check=True, **kw):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env or ENV, timeout=600, **kw)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def torchrun(*args, **kw):
    return sh(BIN / "torchrun", "--nproc-per-node", 2, "-m", "w2s_cli", *args, **kw)


def same_record(a: dict, b: dict) -> None:
    """Two records equal apart from timings (and the time they were made)."""
    a, b = dict(a), dict(b)
    for r in (a, b):
        r.pop("created")
        r["extraction"] = {k: v for k, v in r["extraction"].items() if k not in ("seconds", "images_per_second")}
    assert a == b


def ok(*args) -> str:
    """`w2s ARGS` in this process; its stderr."""
    r = w2s(*args)
    assert r.exit_code == 0, r.output
    return r.stderr


def wait_for_shards(folder: Path, count: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while len(list(folder.glob("shard-*.safetensors"))) < count and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)


def test_a_killed_extraction_resumes_to_the_same_artifact(tmp_path):
    ok(*SLOW_EXTRACT, "-o", tmp_path / "whole.safetensors")
    out = tmp_path / "killed.safetensors"
    proc = subprocess.Popen([str(a) for a in ["w2s", *SLOW_EXTRACT, "-o", out]], env=ENV, stderr=subprocess.DEVNULL)
    shards = out.with_name(out.name + ".shards")
    wait_for_shards(shards, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and len(list(shards.glob("shard-*.safetensors"))) >= 3
    again = ok(*SLOW_EXTRACT, "-o", out)
    assert "resuming" in again and "from row" in again
    assert not shards.exists()
    a, b = store.load(tmp_path / "whole.safetensors"), store.load(out)
    for name in ("embeddings", "sample_ids", "labels"):
        np.testing.assert_array_equal(a[name], b[name])
    a.meta["command"] = b.meta["command"]  # the two commands differ in -o only
    assert {k: v for k, v in a.meta["configuration"].items() if k != "out"} == {
        k: v for k, v in b.meta["configuration"].items() if k != "out"
    }
    a.meta["configuration"] = b.meta["configuration"]
    same_record(a.meta, b.meta)
    assert a.meta["artifact_id"] == b.meta["artifact_id"]


def test_sigterm_leaves_no_partial_file_and_resumes(tmp_path):
    args = [*SLOW_EXTRACT, "-o", tmp_path / "e.safetensors"]
    proc = subprocess.Popen([str(a) for a in ["w2s", *args]], env=ENV, stderr=subprocess.PIPE, text=True)
    shards = tmp_path / "e.safetensors.shards"
    wait_for_shards(shards, 2, proc)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate()[1]
    assert proc.returncode == 130 and err.strip().splitlines()[-1].startswith("w2s: interrupted")
    assert not (tmp_path / "e.safetensors").exists() and not list(shards.glob(".w2s-*"))
    assert "resuming" in ok(*args)


def test_loader_workers_ignore_signals_and_keep_connection_errors_quiet(capsys):
    """What quiet_worker makes of a loader worker: Ctrl-C and SIGTERM ignored (the main process answers
    them), and an unhandled broken connection (the main process gone while multiprocessing's file-descriptor
    server thread talks to it) not printed; any other unhandled error still is."""
    from w2s_cli.extraction.extract import quiet_worker

    saved = sys.excepthook, {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        quiet_worker(0)
        assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        for exc in (ConnectionResetError("peer gone"), EOFError(), ValueError("shown")):
            sys.excepthook(type(exc), exc, None)
    finally:
        sys.excepthook = saved[0]
        for s, handler in saved[1].items():
            signal.signal(s, handler)
    err = capsys.readouterr().err
    assert "ValueError: shown" in err and "peer gone" not in err and "EOFError" not in err


def test_ctrl_c_with_loader_workers_prints_one_line_and_resumes(tmp_path):
    """SIGINT to the process group, as a terminal's Ctrl-C sends it, while two loader workers run: the
    workers stay quiet, the command says one line, and the rerun resumes from the finished shards."""
    args = [a if a != "0" else "2" for a in SLOW_EXTRACT] + ["-o", tmp_path / "e.safetensors"]  # --num-workers 2
    assert args[args.index("--num-workers") + 1] == "2"
    proc = subprocess.Popen(
        [str(a) for a in ["w2s", *args]], env=ENV, stderr=subprocess.PIPE, text=True, start_new_session=True
    )  # its own process group, like a shell's foreground job
    shards = tmp_path / "e.safetensors.shards"
    try:
        wait_for_shards(shards, 1, proc)
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    line = "w2s: interrupted during an extraction (rerun the same command to resume it from its finished shards)"
    assert err.splitlines() == [line], err
    assert not (tmp_path / "e.safetensors").exists() and list(shards.glob("shard-*.safetensors"))
    again = ok(*args)
    assert "resuming" in again and "from row" in again
    assert store.load(tmp_path / "e.safetensors").shape("embeddings")[0] == 1797


@pytest.mark.skipif(not (BIN / "torchrun").exists(), reason="torchrun not installed")
def test_torchrun_extraction_and_streamed_solves_match_one_process(tiny_run, tmp_path):
    """The one process is this one: its extractions are the session's tiny_run (the same two models, 32 px,
    --no-pretrained, on digits), its stages run here (in chunks of the default size); only torchrun's side
    runs as processes."""
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
    for name, model in (("weak", "test_efficientnet"), ("strong", "test_resnet")):
        common = [*EXTRACT, "--model", model, "--image-size", 32, "--shard-rows", 250]
        torchrun("extract", *common, "-o", two / f"{name}.safetensors")
        a, b = store.load(tiny_run.embeddings(name)), store.load(two / f"{name}.safetensors")
        np.testing.assert_array_equal(a["embeddings"], b["embeddings"])  # no duplicated or missing rows
        np.testing.assert_array_equal(a["sample_ids"], b["sample_ids"])
        assert b.meta["extraction"]["world_size"] == 2
    env = {**ENV, "W2S_CHUNK_ROWS": "128"}  # many chunks, so both ranks carry rows of every pass
    split = ("--n-labeled", 300, "--n-test", 300, "--n-pseudo", 1000)
    stages = [
        ("train-weak", "{weak}", *split, "--subspace", 20, "-o", "{out}/t.safetensors"),
        ("pseudolabel", "{out}/t.safetensors", "-o", "{out}/p.safetensors"),
        ("fit-student", "{out}/p.safetensors", "--strong", "{strong}", "--subspace", 30, "-o", "{out}/r.safetensors"),
    ]
    here = {"weak": tiny_run.embeddings("weak"), "strong": tiny_run.embeddings("strong"), "out": one}
    there = {"weak": "weak.safetensors", "strong": "strong.safetensors", "out": "."}
    for stage in stages:
        ok(*(str(a).format(**here) for a in stage))
        torchrun(*(str(a).format(**there) for a in stage), env=env, cwd=two)
    a = json.loads(w2s("report", one / "r.safetensors", "--json").stdout)
    b = json.loads(w2s("report", two / "r.safetensors", "--json").stdout)
    for k in ("weak", "w2s", "strong_sft", "ceiling"):
        assert b["error"][k] == pytest.approx(a["error"][k], rel=1e-8)
        assert b["variance"][k]["exact"] == pytest.approx(a["variance"][k]["exact"], rel=1e-8)
        assert b["predicted"]["error"][k] == pytest.approx(a["predicted"]["error"][k], rel=1e-8)
    assert b["dimensions"]["d_sw"] == pytest.approx(a["dimensions"]["d_sw"], rel=1e-8)


@pytest.mark.skipif(not (BIN / "torchrun").exists(), reason="torchrun not installed")
def test_under_torchrun_a_user_mistake_is_said_once(tmp_path):
    missing, strong = tmp_path / "missing.safetensors", tmp_path / "s.safetensors"
    done = torchrun("fit-student", missing, "--strong", strong, check=False)
    ours = [line for line in done.stderr.splitlines() if line.startswith("w2s:")]
    assert done.returncode != 0 and len(ours) == 1, done.stderr
    assert ours[0].startswith("w2s: error: ") and "missing.safetensors: no such file" in ours[0]
