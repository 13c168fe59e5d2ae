"""Sweeps and rank-teachers spread over worker processes (`--executor local:K`) and over submitit's local
executor (the code path of `--executor slurm`, each job its own process), on digits with tiny timm models:
the same numbers as the in-process loop, resume of missing jobs, failed jobs, --collect."""

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_user_error, w2s

MODELS = ["--weak", "test_efficientnet@32", "--strong", "test_resnet@32", "--no-pretrained"]
SMALL = ["--data", "digits", "--n-labeled", 200, "--n-test", 300, "--subspace", 20, "--num-workers", 0, "-q"]
GRID = [*MODELS, *SMALL, "--vary", "n-pseudo=300,600,900", "--trials", 2]
ROOT = Path(__file__).resolve().parents[1]


EMBEDDINGS = ["test_efficientnet-32px.safetensors", "test_resnet-32px.safetensors"]  # what a sweep of MODELS makes


@pytest.fixture(scope="module")
def inprocess(tmp_path_factory, tiny_run) -> Path:
    """The 3-point x 2-trial sweep in this process (the default executor): its folder and CSV. Its embeddings
    are the session's tiny_run's (MODELS on digits, extracted in this process), copied where a sweep keeps them."""
    out = tmp_path_factory.mktemp("inprocess")
    (out / "embeddings").mkdir()
    for role, name in zip(("weak", "strong"), EMBEDDINGS, strict=True):
        shutil.copy2(tiny_run.embeddings(role), out / "embeddings" / name)
    r = w2s("sweep", *GRID, "--out-dir", out, "--csv", out / "sweep.csv")
    assert r.exit_code == 0, r.output
    assert len([line for line in r.stderr.splitlines() if line.startswith("reusing")]) == 2  # nothing extracted
    return out


def with_embeddings(inprocess: Path, out: Path) -> Path:
    """A fresh sweep folder holding only the in-process sweep's embeddings (nothing extracted twice)."""
    shutil.copytree(inprocess / "embeddings", out / "embeddings")
    return out


def numbers(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(path)))


def assert_same_numbers(a: Path, b: Path, tol: float = 1e-12) -> None:
    rows_a, rows_b = numbers(a), numbers(b)
    assert len(rows_a) == len(rows_b) == 3 and rows_a[0].keys() == rows_b[0].keys()
    compared = 0
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for k in ra:
            try:
                x, y = float(ra[k]), float(rb[k])
            except ValueError:
                assert ra[k] == rb[k], k
                continue
            if not (math.isnan(x) and math.isnan(y)):
                assert abs(x - y) <= tol * max(1.0, abs(x)), (k, x, y)
                compared += 1
    assert compared > 100


def finished_trials(out: Path) -> dict[Path, int]:
    """The trials whose result is finished: its cache entry (written after the result) is there too."""
    results = sorted((out / "points").glob("*/trial-*/result.safetensors"))
    return {p: p.stat().st_mtime_ns for p in results if p.with_name("result.identity.json").exists()}


@pytest.mark.slow
def test_local_workers_give_the_in_process_numbers_and_resume_only_missing_jobs(inprocess, tmp_path):
    out = with_embeddings(inprocess, tmp_path / "local")
    r = w2s("sweep", *GRID, "--out-dir", out, "--csv", out / "sweep.csv", "--executor", "local:2")
    assert r.exit_code == 0, r.output
    assert "0 of 6 jobs already finished; 6 to run (local:2)" in r.stderr
    assert_same_numbers(inprocess / "sweep.csv", out / "sweep.csv")
    assert len(list((out / "jobs" / "logs").glob("*.log"))) == 6
    # one trial lost: a rerun runs that job only and leaves the other five untouched
    before = finished_trials(out)
    lost = next(iter(before))
    shutil.rmtree(lost.parent)
    r = w2s("sweep", *GRID, "--out-dir", out, "--csv", out / "again.csv", "--executor", "local:2")
    assert r.exit_code == 0, r.output
    assert "5 of 6 jobs already finished; 1 to run (local:2)" in r.stderr
    after = finished_trials(out)
    assert all(after[p] == t for p, t in before.items() if p != lost) and lost in after
    assert_same_numbers(inprocess / "sweep.csv", out / "again.csv")
    # nothing missing: no job at all, and the effective configuration is in the result
    r = w2s("sweep", *GRID, "--out-dir", out, "--executor", "local:2", "--json")
    assert r.exit_code == 0 and "jobs already finished" not in r.stderr
    assert json.loads(r.stdout)["configuration"]["executor"] == "local:2"


@pytest.mark.slow
def test_submitit_local_executor_extracts_first_then_runs_a_job_per_trial(inprocess, tmp_path):
    out = tmp_path / "submitit"
    args = ["sweep", *GRID, "--out-dir", out, "--executor", "submitit-local"]
    r = w2s(*args, "--csv", out / "sweep.csv")
    assert r.exit_code == 0, r.output
    assert_same_numbers(inprocess / "sweep.csv", out / "sweep.csv")
    # two extraction jobs, then six trial jobs, each with its own submitit folder and log
    jobs = [p for p in (out / "jobs").iterdir() if p.is_dir()]
    assert len(jobs) == 8 and all(list(p.glob("*_log.err")) for p in jobs)
    assert sorted(p.name for p in (out / "embeddings").iterdir()) == EMBEDDINGS
    # --collect merges what the jobs wrote, from the sweep's own recorded configuration
    saved = (out / "jobs" / "sweep.toml").read_text()
    assert 'executor = "submitit-local"' in saved and "csv" not in saved
    r = w2s("sweep", "--collect", out, "--csv", tmp_path / "collected.csv")
    assert r.exit_code == 0, r.output
    assert_same_numbers(inprocess / "sweep.csv", tmp_path / "collected.csv")


@pytest.mark.slow
def test_a_failed_job_is_reported_with_its_log_retried_once_and_the_rest_kept(inprocess, tmp_path):
    out = with_embeddings(inprocess, tmp_path / "failing")
    blocked = out / "points" / "n-pseudo=600" / "trial-1"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the trial's folder goes")
    r = w2s("sweep", *GRID, "--out-dir", out, "--executor", "local:2")
    last = r.stderr.splitlines()[-1]
    assert r.exit_code == 2 and r.stdout == "" and last.startswith("w2s: error: 1 job(s) failed twice"), r.stderr
    retry = [line for line in r.stderr.splitlines() if "retrying once" in line]
    assert len(retry) == 1 and "points/n-pseudo=600/trial-1 failed" in retry[0]
    log = Path(retry[0].split("log: ")[1].split(";")[0])
    assert log.exists() and "Traceback" in log.read_text()
    assert "points/n-pseudo=600/trial-1 (log: " in last
    assert len(finished_trials(out)) == 5  # the other jobs' results are kept
    blocked.unlink()
    r = w2s("sweep", *GRID, "--out-dir", out, "--executor", "local:2", "--csv", out / "sweep.csv")
    assert r.exit_code == 0 and "5 of 6 jobs already finished; 1 to run" in r.stderr
    assert_same_numbers(inprocess / "sweep.csv", out / "sweep.csv")


@pytest.mark.slow
def test_a_killed_parent_is_resumed_by_the_same_command(inprocess, tmp_path):
    out = with_embeddings(inprocess, tmp_path / "killed")
    command = [sys.executable, "-m", "w2s_cli", "sweep", *map(str, GRID), "--out-dir", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([*command, "--executor", "local:2"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not finished_trials(out) and parent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=120)
    assert parent.returncode == 130, err
    before = finished_trials(out)
    assert 1 <= len(before) < 6
    # the same command again, in this process (only the killed parent needs its own)
    done = w2s(*command[3:], "--executor", "local:2", "--csv", out / "sweep.csv")
    assert done.exit_code == 0, done.output
    assert f"{len(before)} of 6 jobs already finished; {6 - len(before)} to run" in done.stderr
    after = finished_trials(out)
    assert len(after) == 6 and all(after[p] == t for p, t in before.items())
    assert_same_numbers(inprocess / "sweep.csv", out / "sweep.csv")


@pytest.mark.slow
def test_rank_teachers_measures_with_one_job_per_teacher_and_trial(inprocess, tmp_path):
    weak = ["--weak", "test_efficientnet@32", "--weak", "test_resnet@32"]
    args = ["rank-teachers", "--strong", "test_resnet@32", *weak, "--no-pretrained", *SMALL, "--n-pseudo", 600]
    args += ["--trials", 2, "--measure", "--json"]
    here = w2s(*args, "--out-dir", with_embeddings(inprocess, tmp_path / "a"))
    spread = w2s(*args, "--out-dir", with_embeddings(inprocess, tmp_path / "b"), "--executor", "local:2")
    assert here.exit_code == 0 and spread.exit_code == 0, spread.output
    assert "0 of 4 jobs already finished; 4 to run (local:2)" in spread.stderr
    a, b = json.loads(here.stdout), json.loads(spread.stdout)
    for ta, tb in zip(a["teachers"], b["teachers"], strict=True):
        assert ta["weak"] == tb["weak"] and ta["predicted"] == tb["predicted"]
        for k, v in ta["measured"].items():
            assert v == pytest.approx(tb["measured"][k], rel=1e-12, abs=1e-12)


def test_executor_mistakes_are_refused_before_any_work(tmp_path):
    out = tmp_path / "none"
    for args, pattern in (
        (["--executor", "local:0"], "--executor must be one of inprocess, local:K, slurm, submitit-local"),
        (["--executor", "mpi"], "not 'mpi'"),
        (["--executor", "collect"], "not 'collect' (sweep: --collect OUT)"),
        (["--executor", "local:2", "--detach"], "--detach needs --executor slurm"),
        (["--executor", "slurm", "--slurm-time", 0], "--slurm-time must be positive"),
        (["--executor", "slurm", "--slurm-option", "=x"], "expected KEY=VALUE"),
    ):
        assert_user_error(w2s("sweep", *GRID, "--out-dir", out, *args), pattern)
    assert_user_error(w2s("sweep", "--collect", out), "no sweep was spread over jobs there")
    assert not out.exists()


@pytest.mark.slow
def test_collect_refuses_a_sweep_whose_jobs_have_not_all_finished(inprocess, tmp_path):
    out = with_embeddings(inprocess, tmp_path / "partial")
    assert w2s("sweep", *GRID, "--out-dir", out, "--executor", "local:2").exit_code == 0
    shutil.rmtree(next(iter(finished_trials(out))).parent)
    assert_user_error(w2s("sweep", "--collect", out), "1 of 6 jobs are not finished")


@pytest.mark.slow
def test_finetuned_trials_read_a_prefix_cache_made_once_by_its_own_job(tmp_path):
    """--student finetune --train last:1: the frozen prefix's cache is one job, after the embeddings and before
    the trials that share it (made by none of them); the numbers are the in-process sweep's."""
    models = ["--weak", "test_efficientnet@32", "--strong", "test_efficientnet@40", "--no-pretrained"]
    tuned = [*models, *SMALL, "--vary", "n-pseudo=300,600", "--student", "finetune", "--train", "last:1"]
    tuned += ["--epochs", 1]
    ref = tmp_path / "inprocess"
    r = w2s("sweep", *tuned, "--out-dir", ref, "--csv", ref / "sweep.csv")
    assert r.exit_code == 0, r.output
    out = tmp_path / "submitit"
    r = w2s("sweep", *tuned, "--out-dir", out, "--csv", out / "sweep.csv", "--executor", "submitit-local")
    assert r.exit_code == 0, r.output
    rows_a, rows_b = numbers(ref / "sweep.csv"), numbers(out / "sweep.csv")
    assert [a["error_w2s"] for a in rows_a] == [b["error_w2s"] for b in rows_b] and len(rows_a) == 2
    caches = list((out / "embeddings").glob("activations/*.prefix-*.safetensors"))
    assert len(caches) == 1, caches
    # jobs: two backbones' embeddings, one prefix cache, two trials; the cache's job ran before both trials
    logs = {p.name: p for p in (out / "jobs").iterdir() if p.is_dir()}
    assert len(logs) == 5
    made = caches[0].stat().st_mtime
    trials = sorted((out / "points").glob("*/trial-*/result-finetune-*.safetensors"))
    assert len(trials) == 2 and all(t.stat().st_mtime > made for t in trials)
    texts = ["".join(p.read_text() for p in log.glob("*_log.err")) for log in logs.values()]
    assert sum("(the frozen prefix's outputs)" in t for t in texts) == 2  # both trials reused it, none made it
