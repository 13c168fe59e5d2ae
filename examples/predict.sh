#!/usr/bin/env bash
# Predicting finetuned students from the n labels (docs/finetuning.md, "Predicting finetuned students";
# docs/predict-grid.csv, docs/predict-epochs.csv). On the default pair (Fashion-MNIST, lite0@64 -> lite2@112,
# n = 1,000, N = 8,000, recipe `--train last:2`, lr 1e-3, 5 epochs), offline, from the repository root after
# `make install`:
#  1. the finetunes, each trial's result carrying the predictions from its W2S fit's after-kernel (what
#     `w2s run --student finetune` does by itself): the default over 3 seeds, N = 1,000/2,000/4,000, two more
#     teachers (lite0@32, lite1@96) and two more recipes (lr 1e-4; last:4);
#  2. per trial (examples/predict_study.py): the gradient after-kernel's predictions, a 1-epoch proxy's (before
#     the three finetunes) with its cost, the stopping rule along the W2S fit's kept epochs, misfit vs gain;
#     then the tables.
# Everything is cached in $PREDICT_DIR (default w2s-predict): a killed run, rerun, computes what is missing.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
out=${PREDICT_DIR:-w2s-predict}
docs=${DOCS_DIR:-docs}
mkdir -p "$out"
w2s run --student finetune --trials 3 --out-dir "$out" -q --json > "$out/default.json"
w2s sweep --student finetune --vary n-pseudo=1000,2000,4000 --out-dir "$out" -q --json > "$out/n-pseudo.json"
w2s sweep --student finetune --vary weak=tf_efficientnet_lite0@32,tf_efficientnet_lite1@96 --out-dir "$out" -q \
  --json > "$out/teachers.json"
w2s sweep --student finetune --vary lr=1e-4 --out-dir "$out" -q --json > "$out/lr.json"
w2s sweep --student finetune --vary train=last:4 --out-dir "$out" -q --json > "$out/last4.json"
python examples/predict_study.py "$out" "$docs"
