"""`--track mlflow[:URI]`: a run and a sweep logged to a real MLflow file store in tmp_path and read back with
MLflow's own client (parameters, metrics equal to the summary's, artifacts), on digits with tiny timm models."""

import json
import sys

import mlflow
import pytest
from conftest import assert_user_error, w2s
from mlflow.tracking import MlflowClient

MODELS = ["--weak", "test_efficientnet@32", "--strong", "test_resnet@32", "--no-pretrained"]
SMALL = ["--data", "digits", "--n-labeled", 200, "--n-test", 300, "--subspace", 20, "--num-workers", 0, "-q"]


@pytest.fixture(autouse=True)
def file_store(monkeypatch):
    """MLflow 3 opens a file: store only when asked to (what --track sets for itself)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


@pytest.mark.slow
def test_sweep_logs_a_parent_run_and_one_run_per_point(tmp_path):
    store, out = tmp_path / "store", tmp_path / "study"
    args = [*MODELS, *SMALL, "--vary", "n-pseudo=300,600", "--trials", 2, "--out-dir", out]
    r = w2s("sweep", *args, "--csv", tmp_path / "s.csv", "--plot", tmp_path / "s.png", "--track", f"mlflow:{store}")
    assert r.exit_code == 0, r.output
    assert "tracked: MLflow run" in r.stderr and "with 2 point runs" in r.stderr
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name("study")  # named after --out-dir
    runs = client.search_runs([experiment.experiment_id])
    parent = next(x for x in runs if "mlflow.parentRunId" not in x.data.tags)
    points = sorted((x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id), key=_n_pseudo)
    assert len(runs) == 3 and len(points) == 2
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"s.csv", "s.png", "sweep.json"}
    swept = json.loads(open(client.download_artifacts(parent.info.run_id, "sweep.json", tmp_path)).read())
    for run, point, n in zip(points, swept["points"], (300, 600), strict=True):
        s = point["summary"]
        assert run.data.params["n-pseudo"] == str(n) and run.data.params["trials"] == "2"
        assert run.data.params["weak"] == "test_efficientnet@32" and run.info.status == "FINISHED"
        assert run.data.metrics["pgr"] == pytest.approx(s["pgr"], rel=1e-12)
        assert run.data.metrics["pgr_se"] == pytest.approx(s["pgr_stderr"], rel=1e-12)
        assert run.data.metrics["error_w2s_se"] == pytest.approx(s["error_stderr"]["w2s"], rel=1e-12)
        assert run.data.metrics["opr_predicted"] == pytest.approx(s["predicted"]["opr"], rel=1e-12)
        summary = client.download_artifacts(run.info.run_id, "summary.json", tmp_path / run.info.run_id)
        assert json.loads(open(summary).read())["error"] == s["error"]


def _n_pseudo(run) -> int:
    return int(run.data.params["n-pseudo"])


@pytest.mark.slow
def test_run_logs_to_mlruns_by_default_and_a_refusing_store_is_one_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["run", *MODELS, *SMALL, "--n-pseudo", 300, "--out-dir", "w2s-run", "--json"]
    (tmp_path / "taken").write_text("a file, not a folder")
    assert_user_error(w2s(*args, "--track", "mlflow:taken/store"), "MLflow could not log")
    r = w2s(*args, "--track", "mlflow")  # the finished trial is reused; only the logging is new
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    found = mlflow.search_runs(experiment_names=["w2s-run"])
    assert len(found) == 1 and found["params.n-pseudo"][0] == "300" and found["params.student"][0] == "probe"
    assert found["metrics.error_w2s"][0] == pytest.approx(s["error"]["w2s"], rel=1e-12)
    assert found["metrics.d_sw"][0] == pytest.approx(s["dimensions"]["d_sw"], rel=1e-12)


def test_track_mistakes_are_refused_before_any_work(tmp_path, monkeypatch):
    args = ["run", *MODELS, *SMALL, "--n-pseudo", 300, "--out-dir", tmp_path / "r"]
    assert_user_error(w2s(*args, "--track", "wandb"), "expected mlflow or mlflow:URI")
    assert_user_error(w2s(*args, "--track", "mlflow:"), "expected mlflow or mlflow:URI")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if MLflow were not installed
    assert_user_error(w2s(*args, "--track", "mlflow"), "pip install 'w2s[mlflow]'")
    sweep = ["sweep", *MODELS, *SMALL, "--vary", "n-pseudo=300", "--out-dir", tmp_path / "s", "--track", "mlflow"]
    assert_user_error(w2s(*sweep), "pip install 'w2s[mlflow]'")
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()
