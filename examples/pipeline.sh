#!/usr/bin/env bash
# The W2S pipeline stage by stage on scikit-learn's digits (always present, no download), chained through
# pipes: each stage prints its artifact's path, the next reads it from stdin. Run from anywhere after
# `make install` (or with the `w2s` command on PATH); artifacts land in ./w2s-digits/.
set -euo pipefail
out=w2s-digits
mkdir -p "$out"
w2s extract --data digits --model tf_efficientnet_lite0 --image-size 24 -o "$out/weak.safetensors"
w2s extract --data digits --model tf_efficientnet_lite2 --image-size 64 -o "$out/strong.safetensors"
w2s intrinsic-dim "$out/weak.safetensors" "$out/strong.safetensors" --estimator spectral,pr --plot "$out/spectra.png"
w2s train-weak "$out/weak.safetensors" --n-labeled 300 --n-pseudo 1000 --n-test 400 --subspace 40 \
  | w2s pseudolabel \
  | w2s fit-student --strong "$out/strong.safetensors" --subspace 100 \
  | w2s report
