"""Tables of examples/kernel.sh ("Does the linear theory describe finetuning?"), from the JSON it wrote:
markdown on stdout, CSV files in --csv-dir.

    python examples/kernel_tables.py OUT [--csv-dir docs]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from w2s_cli.numerics.stats import mean_and_sem, pgr_from_rows

MODELS = {"w2s": "W2S student", "strong_sft": "strong SFT", "ceiling": "strong ceiling"}
KC_KINDS = ("start", "finetuned", "first_order", "linearised")
KINDS = ("finetuned", "linearised", "epoch 0", "from scratch", "label-light")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def fmt(m, se=None, digits=4) -> str:
    if m is None:
        return "–"
    return f"{m:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def table(cols: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def write_csv(path: Path | None, cols: list[str], rows: list[list]) -> None:
    if path is None:
        return
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)


def default_pair(out: Path, seeds: list[int], csv_dir: Path | None) -> None:
    """Per model over seeds: finetuned test MSE, linearised (ridgeless on gradient features at the model's LP-FT
    start), label-light (from the n labels only), epoch 0; PGR of each; the first-order check."""
    kc = [load(out / f"lin/kc-s{s}.json") for s in seeds]
    lin = {(s, m): load(out / f"lin/lin-s{s}-{m}.json") for s in seeds for m in MODELS}
    per = {}
    for m in MODELS:
        per[m] = {
            "finetuned": [k["fits"][m]["error"]["finetuned"]["value"] for k in kc],
            "epoch 0": [k["fits"][m]["error"]["start"]["value"] for k in kc],
            "linearised": [k["fits"][m]["error"]["linearised"]["value"] for k in kc],
            "from scratch": [lin[s, m]["error"][m] for s in seeds],
            "label-light": [lin[s, m]["predicted"]["error"][m] for s in seeds],
            "unexplained": [k["fits"][m]["unexplained"]["value"] for k in kc],
            "moved": [k["fits"][m]["weight_change"] for k in kc],
        }
    weak = [k["error_weak"]["value"] for k in kc]
    cols = ["model", "finetuned test MSE", "linearised (from start)", "miss", "epoch 0 (LP-FT start)"]
    cols += ["kernel fit from scratch", "its label-light prediction", "weights moved", "unexplained by J dθ"]
    rows, raw = [], []
    for m, v in per.items():
        f, lo = (mean_and_sem(v[k]) for k in ("finetuned", "linearised"))
        miss = (lo[0] - f[0]) / f[0]
        un = [u for u in v["unexplained"] if u is not None]
        rows.append(
            [MODELS[m], fmt(*f), fmt(*lo), f"{100 * miss:+.1f}%", fmt(*mean_and_sem(v["epoch 0"]))]
            + [fmt(*mean_and_sem(v["from scratch"])), fmt(*mean_and_sem(v["label-light"]))]
            + [fmt(*mean_and_sem(v["moved"]), digits=3), fmt(*mean_and_sem(un), digits=2) if un else "no change"]
        )
        raw.append([m] + [x for k in KINDS for x in mean_and_sem(v[k])])
    print(f"**Default pair, seeds {', '.join(map(str, seeds))} (mean ± se over seeds)**\n")
    print(table(cols, rows))
    pg = []
    for what in KINDS:
        p, se = pgr_from_rows(np.array(weak), np.array(per["w2s"][what]), np.array(per["ceiling"][what]))
        pg.append(f"{what} {fmt(p, se, 3)}")
        raw.append([f"pgr_{what}", p, se] + [None] * (2 * len(KINDS) - 2))
    print("\nPGR: " + ", ".join(pg) + "\n")
    header = ["model"] + [f"{k.replace(' ', '_')}{s}" for k in KINDS for s in ("", "_se")]
    write_csv(csv_dir and csv_dir / "kernel-default.csv", header, raw)


def variants(out: Path) -> None:
    """Seed 0 finetuned with other steps, epochs and depths: the first-order check of each."""
    names = {
        "lr1e-5": "lr 1e-5",
        "lr1e-4": "lr 1e-4",
        "../lin/kc-s0": "lr 1e-3 (default)",
        "e1": "lr 1e-3, 1 epoch",
        "last4": "last:4, lr 1e-3",
    }
    cols = ["recipe (seed 0)", "model", "chosen epoch", "weights moved", "unexplained by J dθ", "test MSE epoch 0"]
    cols += ["finetuned", "first order f0 + J dθ", "linearised (from start)"]
    rows = []
    for key, label in names.items():
        path = out / "var" / (f"{key}.json" if key.startswith("..") else f"kc-{key}.json")
        if not path.exists():
            continue
        r = load(path)
        for m, f in r["fits"].items():
            e, u = f["error"], f["unexplained"]
            rows.append(
                [label, MODELS[m], str(f.get("chosen_epoch", "")), fmt(f["weight_change"], digits=3)]
                + [fmt(u["value"], u["stderr"], 2) if u["value"] is not None else "no change"]
                + [fmt(e[x]["value"], e[x]["stderr"]) if x in e else "–" for x in KC_KINDS]
            )
    print("**Where the kernel view holds and breaks (seed 0)**\n")
    print(table(cols, rows) + "\n")


def teachers(out: Path, csv_dir: Path | None) -> None:
    """Three weak teachers against lite2@112 (seed 0): finetuned vs linearised W2S; PGR vs d_sw/d_w."""
    runs = {
        "lite0@32": (out / "t0-32/kc.json", out / "t0-32/lin-w2s.json"),
        "lite0@64": (out / "lin/kc-s0.json", out / "lin/lin-s0-w2s.json"),
        "lite1@96": (out / "t1-96/kc.json", out / "t1-96/lin-w2s.json"),
    }
    cols = ["weak teacher", "W2S finetuned", "W2S linearised (from start)", "W2S epoch 0", "kernel fit from scratch"]
    cols += ["PGR finetuned", "PGR epoch 0"]
    cols += ["d_sw/d_w embeddings", "d_sw/d_w gradients"]
    rows, raw = [], []
    for t, (kc_path, lin_path) in runs.items():
        if not kc_path.exists() or not lin_path.exists():
            continue
        kc, lin = load(kc_path), load(lin_path)
        ratio = {}
        for kind in ("emb", "grad"):
            path = out / f"dim/sw-{kind}-{t}.json"
            if path.exists():
                r = load(path)
                ratio[kind] = r["d_sw"] / r["weak"]["d"]
        e = kc["fits"]["w2s"]["error"]
        lo = e.get("linearised", {"value": None, "stderr": None})
        rows.append(
            [t]
            + [fmt(e[k]["value"], e[k]["stderr"]) for k in ("finetuned",)]
            + [fmt(lo["value"], lo["stderr"])]
            + [fmt(e["start"]["value"], e["start"]["stderr"]), fmt(lin["error"]["w2s"], lin["error_stderr"]["w2s"])]
            + [fmt(kc["pgr"][k]["value"], kc["pgr"][k]["stderr"], 3) for k in ("finetuned", "start")]
            + [fmt(ratio.get("emb"), digits=3), fmt(ratio.get("grad"), digits=3)]
        )
        raw.append([t, e["finetuned"]["value"], lo["value"], e["start"]["value"], lin["error"]["w2s"]])
        raw[-1] += [kc["pgr"]["finetuned"]["value"], kc["pgr"]["start"]["value"], ratio.get("emb"), ratio.get("grad")]
    print("**Three weak teachers (seed 0)**\n")
    print(table(cols, rows) + "\n")
    header = ["teacher", "w2s_finetuned", "w2s_linearised", "w2s_epoch0", "w2s_kernel_scratch", "pgr_finetuned"]
    header += ["pgr_epoch0"]
    write_csv(csv_dir and csv_dir / "kernel-teachers.csv", header + ["dsw_dw_embeddings", "dsw_dw_gradients"], raw)


def dimensions(out: Path, csv_dir: Path | None) -> None:
    """d^FT (gradient features, last:2, default head) against the embeddings' d, on the same 2,000 rows."""
    cols = ["backbone", "kind", "width", "d@0.90", "d@0.99", "participation ratio", "TwoNN", "MLE"]
    rows, raw = [], []
    for t in ("lite0@32", "lite0@64", "lite1@64", "lite1@96", "lite2@64", "lite2@112"):
        for kind, label in (("emb", "embeddings"), ("grad", "gradients (d^FT)")):
            path = out / f"dim/id-{kind}-{t}.json"
            if not path.exists():
                continue
            w = load(path)["weak"]
            vals = [w["width"], w["d_at"]["0.90"], w["d_at"]["0.99"], w["participation_ratio"], w["twonn"], w["mle"]]
            rows.append([t, label, str(vals[0]), str(vals[1]), str(vals[2])] + [f"{v:.1f}" for v in vals[3:]])
            raw.append([t, kind] + vals)
    print("**Finetuning dimension vs embedding dimension (2,000 Fashion-MNIST rows)**\n")
    print(table(cols, rows) + "\n")
    header = ["backbone", "features", "width", "d_090", "d_099", "participation_ratio", "twonn", "mle"]
    write_csv(csv_dir and csv_dir / "kernel-dimensions.csv", header, raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--csv-dir", type=Path)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if (args.out / f"lin/kc-s{s}.json").exists()]
    if seeds:
        default_pair(args.out, seeds, args.csv_dir)
    variants(args.out)
    teachers(args.out, args.csv_dir)
    dimensions(args.out, args.csv_dir)


if __name__ == "__main__":
    main()
