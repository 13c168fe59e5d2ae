import json

import numpy as np
import pytest
from conftest import DIGITS_RUN, seed_run_dir, w2s

from w2s_cli.store import artifact as store
from w2s_cli.studies.run import auto_limit

pytestmark = pytest.mark.slow  # whole runs on the session extraction


def test_run_with_trials_reports_mean_and_stderr(digits_run, tmp_path, weak_weights):
    s = digits_run.summary  # DIGITS_RUN: 2 trials, --subspace 40, in a fresh folder
    assert s["trials"] == 2 and s["seeds"] == [0, 1]
    assert set(s["error_stderr"]) == {"weak", "w2s", "strong_sft", "ceiling"}
    assert s["accuracy"]["ceiling"] > 0.8 and s["pgr_stderr"] is not None
    assert s["seconds"]["extract_weak"] > 0 and s["seconds"]["extract_strong"] > 0 and s["dimensions"]["d_s"] == 40
    t0 = store.load(digits_run.folder / "trial-0" / "teacher.safetensors")
    t1 = store.load(digits_run.folder / "trial-1" / "teacher.safetensors")
    assert (t0["test_rows"] == t1["test_rows"]).all()  # the test split stays fixed across trials
    assert not (t0["labeled_rows"] == t1["labeled_rows"]).all()
    # a second run (here in another folder holding copies of the embeddings) reuses the extracted embeddings,
    # and the subspaces can differ per backbone
    out = seed_run_dir(digits_run, tmp_path / "again")
    args = [*DIGITS_RUN, "--weak-weights", weak_weights, "--out-dir", out, "-q", "--json"]
    again = w2s(*args, "--trials", "1", "--weak-subspace", "20")
    assert again.exit_code == 0, again.output
    s2 = json.loads(again.stdout)
    assert s2["seconds"] == {**s2["seconds"], "extract_weak": 0.0, "extract_strong": 0.0}
    assert (s2["dimensions"]["d_w"], s2["dimensions"]["d_s"]) == (20, 40)


def test_auto_limit_keeps_enough_test_samples():
    split = np.array([0] * 60000 + [1] * 10000)
    assert auto_limit(split, n_test=2000, n_train=9000) == 14000
    assert auto_limit(None, 10, 10) is None
    assert auto_limit(split, n_test=20000, n_train=10) is None  # needs everything


def test_logistic_heads_run_and_are_labelled(digits_run, tmp_path, weak_weights):
    seed_run_dir(digits_run, tmp_path)  # the embeddings, as an earlier run in this folder would leave them
    r = w2s(
        "run",
        "--data",
        "digits",
        "--weak",
        "test_efficientnet@32",
        "--strong",
        "tf_efficientnet_lite0@32",
        "--weak-weights",
        weak_weights,
        "--n-labeled",
        200,
        "--n-pseudo",
        800,
        "--n-test",
        300,
        "--subspace",
        20,
        "--head",
        "logistic",
        "--num-workers",
        0,
        "--out-dir",
        tmp_path,
        "-q",
    )
    assert r.exit_code == 0, r.output
    assert "Brier" in r.stdout and "teacher logistic, student/SFT/ceiling logistic" in r.stdout
    s = json.loads(w2s("report", tmp_path / "result.safetensors", "--json").stdout)
    assert s["solver"] == {"teacher": "logistic", "student": "logistic"} and "variance" not in s
    assert s["accuracy"]["ceiling"] > 0.8 and "ridgeless" in s["analysis_note"]
