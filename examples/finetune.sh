#!/usr/bin/env bash
# Linear probe vs finetuned students on the default pair (Fashion-MNIST, tf_efficientnet_lite0@64 ->
# tf_efficientnet_lite2@112, n = 1,000, default recipe: last 2 blocks, LP-FT, squared error), offline.
# Run from the repository root after `make install`; tables and figures land in docs/. Everything is cached
# in the --out-dir folder (embeddings, the frozen prefix's outputs, finished trials): a killed run, rerun,
# computes only what is missing.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
out=${FINETUNE_DIR:-w2s-finetune}
docs=${DOCS_DIR:-docs}
mkdir -p "$docs"

# the table in docs/finetuning.md: 3 trials (seeds 0, 1, 2) of the probe and of the finetuned students, same pseudo-labels
w2s run --trials 3 --out-dir "$out" --markdown -q > "$docs/finetune-default-probe.md"
w2s run --trials 3 --out-dir "$out" --student finetune --markdown -q > "$docs/finetune-default.md"

# linear vs finetuned W2S over N at n = 1,000 (one trial per point: standard errors over the 2,000 test rows)
w2s sweep --vary n-pseudo=1000,2000,4000,8000 --vary student=probe,finetune --out-dir "$out" \
  --csv "$docs/finetune-n-pseudo.csv" --plot "$docs/finetune-n-pseudo.png" -q

# ... and over three weak teachers (N = 8,000)
w2s sweep --vary weak=tf_efficientnet_lite0@32,tf_efficientnet_lite0@64,tf_efficientnet_lite1@96 \
  --vary student=probe,finetune --out-dir "$out" \
  --csv "$docs/finetune-teachers.csv" --plot "$docs/finetune-teachers.png" -q
