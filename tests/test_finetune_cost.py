"""`--dry-run` of finetuned students (run --student finetune, sweep --vary student=..., finetune): the frozen
prefix's cache, the fits' passes counted by hand, calibration on the real cut network, nothing written."""

import json

import pytest
from conftest import w2s

pytestmark = pytest.mark.slow  # calibrations on the real cut network, and a run first

BASE = (
    "--data digits --weak test_efficientnet@32 --strong test_efficientnet@40 --no-pretrained --n-labeled 100"
    " --n-pseudo 300 --n-test 200 --subspace 20 --num-workers 0 --train last:1 -q"
).split()


def test_run_and_sweep_dry_runs_count_the_prefix_cache_and_the_fits(tmp_path):
    out = tmp_path / "o"
    args = ["run", *BASE, "--epochs", 2, "--student", "finetune", "--out-dir", out]
    work = json.loads(w2s(*args, "--dry-run", "--json").stdout)
    assert not out.exists()
    assert work["prefix_images"] == 1797 and work["finetune_epochs"] == 6
    # fits of 300, 100 and 400 rows, 10% held out: 270 + 90 + 360 rows through 2 epochs of steps; the held-out
    # 30 + 10 + 40 rows before and after each epoch, and the 200 test rows before and after, for each fit
    assert work["finetune_step_rows"] == 2 * (270 + 90 + 360)
    assert work["finetune_forward_rows"] == 3 * (30 + 10 + 40) + 3 * 2 * 200
    assert work["seconds"]["prefix_cache"] > 0 and work["seconds"]["finetuning"] > 0
    assert work["total_seconds"] == pytest.approx(sum(work["seconds"].values()))
    head = json.loads(w2s(*args, "--train", "head", "--dry-run", "--json").stdout)
    assert head["prefix_images"] == 0 and head["seconds"]["prefix_cache"] == 0
    sweep = ["sweep", *BASE, "--epochs", 2, "--vary", "student=probe,finetune", "--trials", 2, "--out-dir", out]
    both = json.loads(w2s(*sweep, "--dry-run", "--json").stdout)
    assert both["trials"] == 4 and both["finetune_epochs"] == 2 * 3 * 2 and both["prefix_images"] == 1797
    assert both["finetune_step_rows"] == 2 * work["finetune_step_rows"] and not out.exists()


def test_once_run_the_prefix_cache_is_free_and_finetune_dry_run_reads_its_inputs(tmp_path):
    out = tmp_path / "o"
    args = ["run", *BASE, "--epochs", 1, "--student", "finetune", "--out-dir", out]
    assert w2s(*args).exit_code == 0
    work = json.loads(w2s(*args, "--epochs", 2, "--dry-run", "--json").stdout)
    assert work["prefix_images"] == 0 and work["seconds"]["prefix_cache"] == 0
    assert all(b["cached"] for b in work["backbones"]) and work["finetune_step_rows"] == 2 * (270 + 90 + 360)
    before = sorted(p.name for p in out.rglob("*"))
    pseudo, strong = out / "trial-0" / "pseudolabels.safetensors", out / "strong-test_efficientnet-40px.safetensors"
    r = w2s("finetune", pseudo, "--strong", strong, "--train", "last:2", "--epochs", 3, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "frozen prefix to cache: 1,797 images" in r.stdout  # last:2 cuts elsewhere: a cache of its own
    assert "finetuning: 9 fit-epochs, 2,160 rows through forward and backward" in r.stdout
    assert "trials to fit" not in r.stdout and "estimated time here:" in r.stdout
    assert sorted(p.name for p in out.rglob("*")) == before
