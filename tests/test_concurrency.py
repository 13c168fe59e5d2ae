"""Two w2s processes on one output (one --out-dir, one -o): the second waits for the first's unit of work
(a trial, an extraction), then keeps what the first made; neither fails, nothing is written twice at once.

Each case is made deterministic with job control: the first process is paused (SIGSTOP) inside its unit
of work, the second is started and left to run until it says that it waits (or, without locks, until it
ends), and only then is the first resumed. The second is given its output by a relative path so that its
records (which hold the command line) differ in length from the first's: without locks, a file it rewrites
under the first's feet shifts the offsets the first reads at."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODELS, TINY_SIZES, seed_run_dir, w2s
from test_records import _intrinsic_artifact

from w2s_cli.store import artifact as store

pytestmark = pytest.mark.slow  # pairs of w2s processes

ROOT = Path(__file__).resolve().parents[1]
WAITING = "waiting for another w2s process"
TINY = ["run", *TINY_MODELS, *TINY_SIZES, "--n-pseudo", 300, "--json"]


class Process:
    """A `w2s` command running as its own process, its stdout and stderr in files."""

    def __init__(self, args: list, cwd: Path, name: str) -> None:
        self.out, self.err = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "w2s_cli", *map(str, args)],
                cwd=cwd,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=out,
                stderr=err,
            )

    def running(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        return self.err.read_text()

    def finish(self) -> int:
        return self.popen.wait(timeout=300)

    def stop(self) -> None:
        if self.running():
            self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def processes():
    """The processes a test starts, killed at its end if still running (a failed test leaves none)."""
    started: list[Process] = []
    yield started
    for p in started:
        p.stop()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.002)


class TooFast(Exception):
    """The first process finished its unit of work before it could be paused inside it (the caller tries
    again in a fresh folder)."""


def first_paused_inside(
    processes: list[Process], args: list, cwd: Path, entered: Callable[[], bool], left: Callable[[], bool]
) -> Process:
    """The first process, started and paused once `entered()` (it is inside its unit of work) while not yet
    `left()` (its unit is not finished); TooFast if the unit ended before the pause landed."""
    first = Process(args, cwd, "first")
    processes.append(first)
    wait_until(lambda: entered() or not first.running(), "the first process is inside its unit of work")
    first.popen.send_signal(signal.SIGSTOP)
    if first.running() and not left():
        return first
    first.popen.send_signal(signal.SIGCONT)
    assert first.finish() == 0, first.stderr()
    raise TooFast


def meet(processes: list[Process], first: Process, args: list, cwd: Path) -> Process:
    """The second process, started while the first is paused; the first resumes once the second says that
    it waits (with locks) or has ended (without)."""
    second = Process(args, cwd, "second")
    processes.append(second)
    try:
        wait_until(lambda: WAITING in second.stderr() or not second.running(), "the second process waits or ends")
    finally:
        first.popen.send_signal(signal.SIGCONT)
    return second


def stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def leftovers(folder: Path) -> list[Path]:
    """Lock files and temp files anywhere under `folder`."""
    return [p for p in folder.rglob(".*") if p.name.endswith((".lock", ".tmp"))]


def trial_unit(tmp_path: Path, tiny_run, args: list, inside: str, done: str, processes: list[Process]):
    """The first `w2s run ARGS` paused inside trial-0 (once trial-0/INSIDE exists, before trial-0/DONE
    does), in a fresh out-dir seeded with the session's tiny embeddings; returns (out-dir, first)."""
    for attempt in range(3):
        out = seed_run_dir(tiny_run, tmp_path / f"out{attempt}")
        trial = out / "trial-0"
        try:
            first = first_paused_inside(
                processes,
                [*args, "--out-dir", out],
                tmp_path,
                lambda trial=trial: any(trial.glob(inside)),
                lambda trial=trial: any(trial.glob(done)),
            )
        except TooFast:
            continue
        return out, first
    pytest.fail("the first process ended its trial before it could be paused inside it, three times")


def check_same_results(first: Process, second: Process, out: Path, name: str) -> None:
    """Both commands succeeded and printed the same report, that of the result `name` left in `out`, whose
    trial references the trial result that is there (the ids of one chain of artifacts)."""
    assert first.finish() == 0, first.stderr()
    assert second.finish() == 0, second.stderr()
    (result,) = out.glob(name)
    a, b = json.loads(first.out.read_text()), json.loads(second.out.read_text())
    assert a == b
    r = w2s("report", result, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == a
    combined = store.read_meta(result)
    trial = result.parent / "trial-0" / result.name
    assert combined["trial_results"][0]["artifact_id"] == store.read_meta(trial)["artifact_id"]
    pseudo = store.read_meta(result.parent / "trial-0" / "pseudolabels.safetensors")
    assert store.read_meta(trial)["pseudolabels"]["artifact_id"] == pseudo["artifact_id"]


def test_two_finetuned_runs_on_one_out_dir_share_the_trial(tmp_path, tiny_run, processes):
    """The user's case: the second `w2s run --student finetune` rewrote the trial's pseudo-labels while the
    first was finetuning from them, and the first died reading them ('weak_test_output' is truncated). Now
    the second waits for the first's trial, then keeps it."""
    args = [*TINY, "--student", "finetune", "--train", "head", "--epochs", 2]
    out, first = trial_unit(tmp_path, tiny_run, args, "result-*.fits", "result-*.safetensors", processes)
    pseudo = out / "trial-0" / "pseudolabels.safetensors"
    before = stamp(pseudo)
    second = meet(processes, first, [*args, "--out-dir", out.name], tmp_path)
    check_same_results(first, second, out, "result-finetune-*.safetensors")
    assert WAITING in second.stderr() and "trial-0" in second.stderr()
    assert stamp(pseudo) == before  # made once, by the first
    assert leftovers(out) == [] and not list(out.rglob("checkpoint.safetensors"))


def test_two_probe_runs_on_one_out_dir_share_the_trial(tmp_path, tiny_run, processes):
    args = [*TINY, "--trials", 2]
    out, first = trial_unit(tmp_path, tiny_run, args, "pseudolabels.safetensors", "result.safetensors", processes)
    made = {name: stamp(out / "trial-0" / name) for name in ("teacher.safetensors", "pseudolabels.safetensors")}
    second = meet(processes, first, [*args, "--out-dir", out.name], tmp_path)
    check_same_results(first, second, out, "result.safetensors")
    assert WAITING in second.stderr()
    assert {name: stamp(out / "trial-0" / name) for name in made} == made
    assert leftovers(out) == []


def test_two_extractions_to_one_output(tmp_path, processes):
    """The user's case: the second `w2s extract` to the same -o assembled the artifact and removed the shards
    while the first was still extracting, and the first ended in a FileNotFoundError traceback. Now the
    second waits, then keeps the first's artifact (the same extraction)."""
    args = ["extract", "--data", "digits", "--model", "test_efficientnet", "--image-size", 32, "--no-pretrained"]
    args += ["--limit", 300, "--batch-size", 50, "--shard-rows", 100, "--num-workers", 0, "-q"]
    out = tmp_path / "e.safetensors"
    shards = tmp_path / "e.safetensors.shards"
    for _ in range(3):
        try:
            first = first_paused_inside(
                processes, [*args, "-o", out], tmp_path, lambda: any(shards.glob("shard-*")), out.exists
            )
            break
        except TooFast:
            out.unlink()
    else:
        pytest.fail("the first extraction ended before it could be paused, three times")
    second = meet(processes, first, [*args, "-o", out.name], tmp_path)
    assert first.finish() == 0, first.stderr()
    assert second.finish() == 0, second.stderr()
    said = second.stderr()
    assert WAITING in said and "made meanwhile by another w2s process (the same extraction); kept" in said
    made = store.load(out, "embeddings")
    assert made.shape("embeddings")[0] == 300 and np.isfinite(made["embeddings"]).all()
    assert made.meta["command"].endswith(f"-o {out}")  # the first's, kept
    assert not shards.exists() and leftovers(tmp_path) == []


def test_a_reader_keeps_reading_the_file_it_opened_when_another_process_replaces_it(tmp_path):
    """What the first finetune met, without processes: a stage holds an artifact, reads one tensor, and
    another process rewrites the same path (a rename, with a longer record); the stage's later reads are of
    the file it opened, not of the new one at the old offsets."""
    path = tmp_path / "p.safetensors"
    rows = np.arange(12.0).reshape(4, 3)

    def write(command: str) -> None:
        meta = {**_intrinsic_artifact(), "command": command}  # a valid record: every read checks it
        store.save(store.Artifact("intrinsic_dim", meta, {"a": np.zeros(2), "z": rows}), path)

    write("w2s run")
    held = store.load(path)
    assert held["a"].tolist() == [0.0, 0.0]  # the header is parsed, the file opened
    write("w2s run " + "x" * 100)  # a longer header: every tensor moves
    np.testing.assert_array_equal(held["z"], rows)
    np.testing.assert_array_equal(held.rows("z", np.array([3, 1])), rows[[3, 1]])
    assert store.load(path).meta["command"].endswith("x" * 100)
