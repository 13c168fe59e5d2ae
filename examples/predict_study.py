"""Issue 23's grid, after its finetunes (examples/predict.sh): per finetuned trial, measured vs label-light
predicted test errors, PGR and OPR (after the fact: the full W2S finetune's after-kernel, `embeddings` and
`grad`; before: a 1-epoch proxy's, with its cost), the stopping rule along the W2S fit's kept epochs, and the
misfit vs gain of the W2S student. The gradient after-kernel and the epochs (one extraction per kept epoch) are
computed on the default point's first trial (seed 0) only: on 2 CPU cores they cost more than the finetunes.
Each trial's analysis is cached beside its result (`.study.json`).

    python examples/predict_study.py OUT_DIR DOCS_DIR
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from w2s_cli.diagnostics.predict import predict_and_attach, predict_finetune, predicted_along_epochs, stop_epoch
from w2s_cli.options import ExtractOptions, SubspaceOptions
from w2s_cli.options.recipe import FinetuneRecipe
from w2s_cli.stages.summary import load_result, summary
from w2s_cli.store import artifact as store
from w2s_cli.store.embeddings import find
from w2s_cli.store.records import ResultRecord
from w2s_cli.studies.proxy import proxy_finetune

QUIET = ExtractOptions(quiet=True)
MODELS = ("weak", "w2s", "strong_sft", "ceiling")
KINDS = ("embeddings", "grad", "proxy")


def point_of(result: Path, out: Path) -> str:
    rel = result.relative_to(out).parts
    return rel[1] if rel[0] == "points" else "default"


def network_outputs(result: Path, features: Path, weights: Path, rows: np.ndarray) -> np.ndarray:
    """The finetuned network's outputs on `rows`: its embeddings (the after-kernel features) through its head."""
    from w2s_cli.finetuning.network import read_tensors

    w, _ = read_tensors(weights, "a kept epoch's weights")  # checked against the hash written with them
    X = np.asarray(store.load(features, "embeddings").rows("embeddings", rows), np.float64)
    return X @ w["head.weight"].double().numpy().T + w["head.bias"].double().numpy()


def epochs_study(result: Path, rec: ResultRecord) -> dict:
    """The stopping rule: predicted W2S error after each kept epoch, and the network's measured one there."""
    rows = predicted_along_epochs(result, extract=QUIET)
    emb = find(rec.provenance["strong_embeddings"], result, None, "strong embeddings")
    test = np.asarray(store.load(result)["test_rows"])
    truth = emb.truth(test)
    fits = Path(f"{result}.fits") / "w2s"
    for r in rows:
        f = network_outputs(result, fits / f"after-kernel-embeddings-{r['epoch']}.safetensors",
                            fits / f"epoch-{r['epoch']}.safetensors", test)  # fmt: skip
        r["measured_w2s"] = float(((f - truth) ** 2).mean())
    start = rec.trials[0].init.error["w2s"]
    return {"rows": rows, "stop_epoch": stop_epoch(rows), "epoch0_w2s": start}


def misfit_and_gain(result: Path, rec: ResultRecord) -> dict:
    """Charikar et al.: the W2S student's misfit to its teacher on the N pseudo rows, beside its gain."""
    pseudo = store.load(store.resolve(rec.provenance["pseudolabels"], result))
    pool = np.asarray(pseudo["pseudo_rows"])
    fits = Path(f"{result}.fits") / "w2s"
    f = network_outputs(result, fits / "after-kernel-embeddings-final.safetensors", fits / "final.safetensors", pool)
    misfit = float(((f - np.asarray(pseudo["pseudo_labels"], np.float64)) ** 2).mean())
    e = rec.trials[0].metrics.error
    return {"misfit": misfit, "gain": e["weak"] - e["w2s"]}


def study(result: Path, out: Path) -> dict:
    cache = Path(str(result).removesuffix(".safetensors") + ".study.json")
    if cache.exists():
        return json.loads(cache.read_text())
    rec = ResultRecord.from_json(store.read_meta(result))
    if rec.trials[0].predicted is None:  # made by a w2s that did not predict yet
        predict_and_attach(result, extract=QUIET, quiet=True)
        rec = ResultRecord.from_json(store.read_meta(result))
    t = rec.trials[0]
    row = {
        "seed": t.seed,
        "n_pseudo": t.n_pseudo,
        "weak": f"{rec.weak_model}@{rec.weak_input_size}",
        "recipe": rec.student.recipe,
        "measured": {"error": t.metrics.error, "pgr": t.metrics.pgr, "opr": t.metrics.opr},
        "measured_stderr": {"error": t.metrics.error_stderr, "pgr": t.metrics.pgr_stderr, "opr": t.metrics.opr_stderr},
        "fit_seconds": {k: rec.fits[k].extra.get("seconds") for k in MODELS[1:]},
        "chosen_epoch": {k: rec.fits[k].chosen_epoch for k in MODELS[1:]},
        "embeddings": {
            **t.predicted.to_json(),
            "capture": t.after_kernel.get("w2s_by_capture"),
            "seconds": t.after_kernel.get("seconds"),
        },  # fmt: skip
    }
    default = point_of(result, out) == "default" and t.seed == 0
    if default:
        begin = time.perf_counter()
        grad, where = predict_finetune(result, kernel="grad", extract=QUIET)
        row["grad"] = {**grad.to_json(), "seconds": round(time.perf_counter() - begin, 1)}
    pseudo = store.resolve(rec.provenance["pseudolabels"], result)
    strong = store.resolve(rec.provenance["strong_embeddings"], result)
    recipe = FinetuneRecipe.from_record(rec.student.recipe)
    proxy_out = result.parent / f"proxy-e1-{recipe.key()}.safetensors"
    subspace = SubspaceOptions(rec.subspace["strong"].requested)
    made, cost = proxy_finetune(pseudo, strong, proxy_out, recipe=recipe, epochs=1, subspace=subspace, extract=QUIET)
    s = summary(load_result(made))
    row["proxy"] = {**s.predicted.to_json(), "cost": cost, "measured_proxy_w2s": s.metrics.error["w2s"]}
    if default:
        row["epochs"] = epochs_study(result, rec)
    row["misfit"] = misfit_and_gain(result, rec)
    cache.write_text(json.dumps(row))
    return row


def miss(pred: float | None, meas: float | None) -> str:
    return "" if pred is None or meas is None else f"{100 * (pred / meas - 1):+.1f}%"


def tables(rows: list[tuple[str, dict]], docs: Path) -> None:
    header = ["point", "seed", "kind"] + [f"error_{m}" for m in MODELS] + ["pgr", "opr", "seconds"]
    with open(docs / "predict-grid.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for point, r in rows:
            for kind in ("measured", "embeddings", "grad", "proxy"):
                if kind not in r:
                    continue
                d = r[kind]
                secs = d.get("seconds") if kind != "proxy" else d["cost"]["proxy_seconds"]
                w.writerow([point, r["seed"], kind, *[d["error"][m] for m in MODELS], d["pgr"], d["opr"], secs])
    with open(docs / "predict-epochs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["point", "seed", "epoch", "predicted_w2s", "measured_w2s", "val_chosen", "stop_epoch"])
        for point, r in rows:
            for e in r.get("epochs", {}).get("rows", []):
                w.writerow([point, r["seed"], e["epoch"], e["error_w2s"], e["measured_w2s"],
                            r["chosen_epoch"]["w2s"], r["epochs"]["stop_epoch"]])  # fmt: skip
    print("| point | seed | model | measured | after-kernel (embeddings) | (grad) | 1-epoch proxy |")
    print("|---|---|---|---|---|---|---|")
    for point, r in rows:
        for m in MODELS[1:]:
            meas = r["measured"]["error"][m]
            cells = [f"{r[k]['error'][m]:.4f} ({miss(r[k]['error'][m], meas)})" if k in r else "–" for k in KINDS]
            print(f"| {point} | {r['seed']} | {m} | {meas:.4f} | " + " | ".join(cells) + " |")
        pm = r["measured"]["pgr"]
        cells = [f"{r[k]['pgr']:.3f} ({r[k]['pgr'] - pm:+.3f})" if k in r else "–" for k in KINDS]
        print(f"| {point} | {r['seed']} | PGR | {pm:.3f} | " + " | ".join(cells) + " |")


def main() -> None:
    out, docs = Path(sys.argv[1]), Path(sys.argv[2])
    results = sorted(out.glob("trial-*/result-finetune-*.safetensors"))
    results += sorted(out.glob("points/*/trial-*/result-finetune-*.safetensors"))
    rows = []
    for r in results:
        print(f"{r}", file=sys.stderr)
        rows.append((point_of(r, out), study(r, out)))
    tables(rows, docs)


if __name__ == "__main__":
    main()
