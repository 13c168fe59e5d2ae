import json

from typer.testing import CliRunner

from w2s_cli import artifacts
from w2s_cli.cli import app
from w2s_cli.pipeline import auto_limit


def test_run_with_trials_reports_mean_and_stderr(tmp_path, weak_weights):
    args = (
        "run --data digits --weak test_efficientnet --weak-size 32 --strong tf_efficientnet_lite0 --strong-size 32"
        " --n-labeled 200 --n-pseudo 800 --n-test 300 --trials 2 --subspace auto --energy 0.9 --num-workers 0"
    ).split() + ["--weak-weights", str(weak_weights), "--out-dir", str(tmp_path), "--json", "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["trials"] == 2 and s["seeds"] == [0, 1]
    assert set(s["error_stderr"]) == {"weak", "w2s", "strong_sft", "ceiling"}
    assert s["accuracy"]["ceiling"] > 0.8
    assert s["seconds"]["extract_strong"] > 0
    t0 = artifacts.load(tmp_path / "trial-0" / "teacher.safetensors")
    t1 = artifacts.load(tmp_path / "trial-1" / "teacher.safetensors")
    assert (t0["test_rows"] == t1["test_rows"]).all()  # the test split stays fixed across trials
    assert not (t0["labeled_rows"] == t1["labeled_rows"]).all()
    # a second run reuses the extracted embeddings
    again = CliRunner().invoke(app, args[:-1] + ["--trials", "1", "--json", "-q"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["seconds"]["extract_weak"] == 0.0


def test_auto_limit_keeps_enough_test_samples():
    import numpy as np

    split = np.array([0] * 60000 + [1] * 10000)
    limit = auto_limit(split, n_test=2000, n_train=9000)
    assert limit == 14000
    assert auto_limit(None, 10, 10) is None
    assert auto_limit(split, n_test=20000, n_train=10) is None  # needs everything
