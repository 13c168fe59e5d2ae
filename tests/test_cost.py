"""`--dry-run`: the work, disk and time of run, sweep and rank-teachers, from a short calibration on real
models, with nothing extracted or written."""

import json
from pathlib import Path

import pytest
from conftest import seed_run_dir, w2s

pytestmark = pytest.mark.slow  # calibrations on real models, one after the session extraction

MODELS = ["--weak", "test_efficientnet@32", "--strong", "test_resnet@32", "--no-pretrained"]
SMALL = ["--data", "digits", "--n-labeled", 200, "--n-test", 300, "--subspace", 20, "--num-workers", 0, "-q"]
ROOT = Path(__file__).resolve().parents[1]


def test_run_dry_run_counts_the_work_and_writes_nothing(tiny_run, tmp_path):
    out = tmp_path / "run"
    r = w2s("run", *MODELS, *SMALL, "--n-pseudo", 600, "--out-dir", out, "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    work = json.loads(r.stdout)
    assert not out.exists()
    assert [b["label"] for b in work["backbones"]] == ["test_efficientnet@32", "test_resnet@32"]
    assert all(b["images"] == 1797 and not b["cached"] and b["seconds_per_image"] > 0 for b in work["backbones"])
    assert work["trials"] == 1 and work["jobs"] == 0 and work["disk_bytes"] > 1797 * 4 * 2
    assert work["total_seconds"] == pytest.approx(sum(work["seconds"].values()))
    # once extracted, the embeddings cost nothing and the finished trial is not counted again (sweep); the
    # extractions are the session's tiny_run's (MODELS, SMALL), put where this run would have written them
    seed_run_dir(tiny_run, out)
    done = w2s("run", *MODELS, *SMALL, "--n-pseudo", 600, "--out-dir", out)
    assert done.exit_code == 0 and done.stderr.count("reusing") == 2, done.output
    r = w2s("sweep", *MODELS, *SMALL, "--vary", "n-pseudo=600,900", "--out-dir", out, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "test_resnet@32: cached, 0 to embed" in r.stdout and "trials to fit: 2" in r.stdout
    assert "estimated time here:" in r.stdout and not (out / "points").exists()


def test_sweep_and_rank_teachers_dry_runs_count_jobs_and_predictions(tmp_path):
    args = [*MODELS, *SMALL, "--vary", "n-pseudo=300,600,900", "--trials", 2, "--out-dir", tmp_path / "s"]
    work = json.loads(w2s("sweep", *args, "--executor", "local:2", "--dry-run", "--json").stdout)
    assert work["trials"] == 6 and work["jobs"] == 6
    assert work["total_seconds"] == pytest.approx(work["seconds"]["extraction"] + work["seconds"]["fits"] / 2)
    weak = ["--weak", "test_efficientnet@32", "--weak", "test_efficientnet@24"]
    ranked = ["rank-teachers", "--strong", "test_resnet@32", *weak, "--no-pretrained", *SMALL, "--n-pseudo", 600]
    work = json.loads(w2s(*ranked, "--trials", 2, "--out-dir", tmp_path / "r", "--dry-run", "--json").stdout)
    assert work["predictions"] == 4 and work["trials"] == 0 and len(work["backbones"]) == 3
    measured = w2s(*ranked, "--trials", 2, "--measure", "--out-dir", tmp_path / "r", "--dry-run", "--json")
    assert json.loads(measured.stdout)["trials"] == 4
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()
