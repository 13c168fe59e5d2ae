"""`--track mlflow[:URI]`: a run, or each point of a sweep, logged as an MLflow run once its result exists.

Each MLflow run holds the parameters (the command's effective configuration by option long name, a sweep
point's own values in place of the varied options'), the metrics of the summary (errors and accuracies of the
four models, PGR and OPR, each with its standard error, the label-light and variance-only predictions, the
dimensions, and the epoch-0 errors of a finetuned student) and `summary.json` (what `w2s report --json`
prints). A sweep is one parent run (the configuration, the sweep's JSON and its CSV and PNG when written)
with one nested run per point. The experiment is $MLFLOW_EXPERIMENT_NAME, else the name of --out-dir.

The store is MLflow's: `mlflow` alone means the local folder ./mlruns (a `file:` store; MLflow 3 keeps that
store only when MLFLOW_ALLOW_FILE_STORE is true, which is set here for `file:` URIs); `mlflow:URI` names
another folder, a `file:` URI or a tracking server (http://...). Logging happens after the results are
written: a store that refuses is one error line, and the results stay on disk to be logged by a rerun.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2s_cli.errors import W2SError, printable
from w2s_cli.numerics.stats import MODELS
from w2s_cli.report.render import json_text
from w2s_cli.store.records import Summary, Sweep

DEFAULT_STORE = "mlruns"
INSTALL = "pip install 'w2s[mlflow]'"
PARAMS_PER_BATCH = 100  # MLflow's limit on the parameters of one log_batch call


@dataclass(frozen=True)
class Tracking:
    """Where results are logged: an MLflow tracking URI."""

    uri: str

    @classmethod
    def parse(cls, text: str | None) -> Tracking | None:
        """'mlflow' or 'mlflow:URI' (a folder, a file: URI or a server); None: no tracking."""
        if text is None:
            return None
        kind, colon, uri = text.partition(":")
        if kind != "mlflow" or (colon and not uri.strip()):
            raise W2SError(f"--track '{printable(text)}': expected mlflow or mlflow:URI (a folder or a tracking URI)")
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise W2SError(f"--track mlflow needs MLflow, which is not installed: {INSTALL}") from None
        uri = uri.strip() or DEFAULT_STORE
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri):  # a folder
            uri = Path(uri).resolve().as_uri()
        return cls(uri)

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("file:"):
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        return MlflowClient(tracking_uri=self.uri)


def metrics(s: Summary) -> dict[str, float]:
    """The numbers of a result's summary (summary.summary) by MLflow metric name; undefined ones left out."""
    m, t, start = s.metrics, s.theory, s.init  # start: a finetuned student's LP-FT start
    pred = t.predicted if t else None
    acc = (m.accuracy, m.accuracy_stderr) if m.accuracy is not None else (dict.fromkeys(MODELS),) * 2
    out: dict[str, Any] = {}
    for k in MODELS:
        out[f"error_{k}"], out[f"error_{k}_se"] = m.error[k], m.error_stderr[k]
        out[f"accuracy_{k}"], out[f"accuracy_{k}_se"] = acc[0][k], acc[1][k]
        out[f"error_{k}_predicted"] = pred.error[k] if pred else None
    for k in ("pgr", "opr"):
        out[k], out[f"{k}_se"] = getattr(m, k), getattr(m, f"{k}_stderr")
        out[f"{k}_predicted"] = getattr(pred, k) if pred else None
        out[f"{k}_predicted_se"] = getattr(pred, f"{k}_stderr") if pred else None
        out[f"{k}_theory"] = getattr(t.theory, k) if t else None
    for k in ("d_w", "d_s", "d_sw"):
        out[k] = getattr(t.dimensions, k) if t else None
    out["pseudo_label_accuracy"] = s.pseudo_label_accuracy
    for k in MODELS[1:]:
        out[f"error_{k}_epoch0"] = start.error[k] if start else None
    out["pgr_epoch0"], out["pgr_epoch0_se"] = (start.pgr, start.pgr_stderr) if start else (None, None)
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")}


def params(configuration: dict[str, Any], point: dict[str, str] | None = None) -> dict[str, str]:
    """The configuration as MLflow parameters (strings), a sweep point's own values replacing the options."""
    out = {k: json_text(v) if isinstance(v, (list, dict)) else str(v) for k, v in configuration.items()}
    return {**out, **(point or {})}


def log_run(tracking: Tracking, summary: Summary, result: Path, *, out_dir: Path, configuration: dict[str, Any]) -> str:
    """`w2s run`: one MLflow run; returns its id."""
    with _store(tracking, out_dir) as (client, experiment):
        return _log(client, experiment, "run", params(configuration), summary, result)


def log_sweep(tracking: Tracking, result: Sweep, *, out_dir: Path, files: list[Path | None]) -> tuple[str, list[str]]:
    """`w2s sweep`: a parent run (configuration, sweep.json, the CSV and PNG in `files`) and one nested run per
    point; returns the parent's id and the points' ids."""
    configuration = result.configuration or {}
    with _store(tracking, out_dir) as (client, experiment):
        parent = client.create_run(experiment, run_name="sweep " + ",".join(result.vary)).info.run_id
        _log_params(client, parent, params(configuration))
        client.log_text(parent, json_text(result), "sweep.json")
        for path in files:
            if path is not None:
                client.log_artifact(parent, str(path))
        ids = []
        for p in result.points:
            values = params(configuration, p.params)
            ids.append(_log(client, experiment, p.key, values, p.summary, Path(p.result), parent))
        client.set_terminated(parent)
    return parent, ids


def _log(
    client: Any, experiment: str, name: str, values: dict, summary: Summary, result: Path, parent: str = ""
) -> str:
    tags = {"w2s.result": str(Path(result).resolve())} | ({"mlflow.parentRunId": parent} if parent else {})
    run = client.create_run(experiment, run_name=name, tags=tags).info.run_id
    _log_params(client, run, values)
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client.log_batch(run, metrics=[Metric(k, v, stamp, 0) for k, v in metrics(summary).items()])
    client.log_text(run, json_text(summary), "summary.json")
    client.set_terminated(run)
    return run


def _log_params(client: Any, run: str, values: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in values.items()]
    for i in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run, params=items[i : i + PARAMS_PER_BATCH])


@contextlib.contextmanager
def _store(tracking: Tracking, out_dir: Path) -> Iterator[tuple[Any, str]]:
    """The client and the experiment's id; MLflow's own errors (a refused or unreachable store) become one
    W2SError naming the store."""
    from mlflow.exceptions import MlflowException

    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or Path(out_dir).resolve().name
    try:
        client = tracking.client()
        found = client.get_experiment_by_name(name)
        yield client, found.experiment_id if found else client.create_experiment(name)
    except (MlflowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise W2SError(f"--track mlflow:{printable(tracking.uri)}: MLflow could not log: {first}") from None
