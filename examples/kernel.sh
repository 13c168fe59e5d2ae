#!/usr/bin/env bash
# Does the linear theory describe finetuning? (docs/kernel-check.md, section of that name; docs/kernel-*.csv, docs/theory.md)
# On the default pair (Fashion-MNIST, lite0@64 -> lite2@112, n = 1,000, N = 8,000, the default recipe
# `--train last:2`), offline, from the repository root after `make install`:
#  1. the finetuned students (3 seeds), gradient features at each model's LP-FT start (read from the frozen
#     prefix's cache), the linearised finetune (`fit-student` on them, with its label-light predictions),
#     and the first-order check of the finetuned weights (`kernel-check`);
#  2. seed 0 finetuned with smaller steps, one epoch, four blocks: where the kernel view holds and breaks;
#  3. two more weak teachers (lite0@32, lite1@96): finetuned vs linearised W2S;
#  4. d^FT (gradient features, last:2, default head) vs embedding d for lite0/1/2 at two sizes each, and
#     d_sw/d_w on gradients vs embeddings for the three teachers (2,000 rows).
# Everything is cached in $KERNEL_DIR (default w2s-kernel): a killed run, rerun, computes what is missing.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
out=${KERNEL_DIR:-w2s-kernel}
docs=${DOCS_DIR:-docs}
mkdir -p "$out/lin" "$out/var" "$out/dim" "$docs"
data=(--data fashion-mnist --limit 14000 --seed 0)
strong=(--model tf_efficientnet_lite2 --image-size 112)

# gradient features of lite2@112 at the LP-FT start of fit $3 of finetune result $2, written to $1
grads() { [ -f "$1" ] || w2s extract "${data[@]}" "${strong[@]}" --features grad --train "${4:-last:2}" \
  --init "$2" --init-fit "$3" --proj-dim 2048 -q -o "$1"; }
# the linearised finetune on gradient features $2 with pseudo-labels $1, its report as JSON in $3
linear() { [ -f "${3%.json}.safetensors" ] || w2s fit-student "$1" --strong "$2" -o "${3%.json}.safetensors" >/dev/null
  w2s report "${3%.json}.safetensors" --json > "$3"; }

# 1. the default pair, 3 seeds
w2s run --trials 3 --student finetune --out-dir "$out/run" -q --markdown > "$out/run.md"
for s in 0 1 2; do
  res=$(ls "$out"/run/trial-$s/result-finetune-last2-*.safetensors)
  for fit in w2s strong_sft ceiling; do
    grads "$out/lin/grad-s$s-$fit.safetensors" "$res" $fit
    linear "$out/run/trial-$s/pseudolabels.safetensors" "$out/lin/grad-s$s-$fit.safetensors" "$out/lin/lin-s$s-$fit.json"
  done
  w2s kernel-check "$res" --grads w2s="$out/lin/grad-s$s-w2s.safetensors" \
    --grads strong_sft="$out/lin/grad-s$s-strong_sft.safetensors" --grads ceiling="$out/lin/grad-s$s-ceiling.safetensors" \
    --json > "$out/lin/kc-s$s.json"
done

# 2. seed 0 with other steps, epochs and depth
pseudo=$out/run/trial-0/pseudolabels.safetensors
emb=$out/run/strong-tf_efficientnet_lite2-112px.safetensors
for v in "lr1e-5 --lr 1e-5" "lr1e-4 --lr 1e-4" "e1 --epochs 1" "last4 --train last:4"; do
  set -- $v; name=$1; shift
  [ -f "$out/var/$name.safetensors" ] || w2s finetune "$pseudo" --strong "$emb" "$@" -q -o "$out/var/$name.safetensors" >/dev/null
  w2s kernel-check "$out/var/$name.safetensors" --json > "$out/var/kc-$name.json"
done
grads "$out/var/grad-last4-w2s.safetensors" "$out/var/last4.safetensors" w2s last:4
linear "$pseudo" "$out/var/grad-last4-w2s.safetensors" "$out/var/lin-last4-w2s.json"
w2s kernel-check "$out/var/last4.safetensors" --grads w2s="$out/var/grad-last4-w2s.safetensors" --json > "$out/var/kc-last4.json"

# 3. two more weak teachers (seed 0); the strong embeddings and the prefix's cache shared by hard links
for w in 0-32 1-96; do
  d=$out/t$w; mkdir -p "$d/activations"
  ln -f "$emb" "$d/" && ln -f "$out"/run/activations/*.prefix-19of21.safetensors "$d/activations/"
  w2s run --weak tf_efficientnet_lite${w%-*}@${w#*-} --student finetune --out-dir "$d" -q --json > "$d/run.json"
  res=$(ls "$d"/trial-0/result-finetune-last2-*.safetensors)
  grads "$d/grad-w2s.safetensors" "$res" w2s
  linear "$d/trial-0/pseudolabels.safetensors" "$d/grad-w2s.safetensors" "$d/lin-w2s.json"
  w2s kernel-check "$res" --grads w2s="$d/grad-w2s.safetensors" --json > "$d/kc.json"
done

# 4. dimensions: 2,000 rows, default head
for mp in lite0:32 lite0:64 lite1:64 lite1:96 lite2:64 lite2:112; do
  m=tf_efficientnet_${mp%%:*}; p=${mp##*:}; t=${mp%%:*}@$p
  small=(--data fashion-mnist --limit 2000 --seed 0 --model "$m" --image-size "$p" -q)
  [ -f "$out/dim/emb-$t.safetensors" ] || w2s extract "${small[@]}" -o "$out/dim/emb-$t.safetensors"
  [ -f "$out/dim/grad-$t.safetensors" ] || w2s extract "${small[@]}" --features grad --train last:2 --proj-dim 2048 \
    -o "$out/dim/grad-$t.safetensors"
  w2s intrinsic-dim "$out/dim/emb-$t.safetensors" --json > "$out/dim/id-emb-$t.json"
  w2s intrinsic-dim "$out/dim/grad-$t.safetensors" --json > "$out/dim/id-grad-$t.json"
done
for w in lite0@32 lite0@64 lite1@96; do
  for kind in emb grad; do
    w2s intrinsic-dim "$out/dim/$kind-$w.safetensors" "$out/dim/$kind-lite2@112.safetensors" --energy 0.9 --json \
      > "$out/dim/sw-$kind-$w.json"
  done
done

python examples/kernel_tables.py "$out" --csv-dir "$docs"
