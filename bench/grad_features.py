"""Gradient features (`w2s extract --features grad`) against one finetuning epoch of the same trained set over
the same rows, in one process.

Both read what the trained part takes (the frozen prefix's outputs for last:K: random values of the right
shape, since throughput does not depend on them), in batches of the same size: the epoch is the least training
loop (forward, squared-error loss, backward, AdamW step: bench/finetune.py's `bare`); the features are one
forward and backward of the trained part per batch plus the per-sample projections (k values). The frozen
prefix from images, which both can skip once its outputs are cached, is timed alongside for scale.

    python bench/grad_features.py                                   # lite2@112, last:2, k = 2048, CPU
    python bench/grad_features.py --train last:4 --proj-dim 4096 --rows 2048
"""

from __future__ import annotations

import time

import torch
from finetune import bare, cached_inputs, parser, student

from w2s_cli.finetuning.gradients import GradientFeatures, output_signs
from w2s_cli.inputs.backbones import create_backbone
from w2s_cli.options import BackboneSpec


def features_rate(s, x: torch.Tensor, k: int, batch: int, dev) -> float:
    """Rows per second of gradient features over x (the prefix's outputs), as an extraction computes them."""
    names = sorted(n for n, p in s.named_parameters() if p.requires_grad)
    fn = GradientFeatures(s, names, output_signs(10, 0), k, 0, inputs=lambda rows: x[rows])
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        fn(x[i : i + batch].to(dev)).cpu()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    fn.close()
    return len(x) / (time.perf_counter() - start)


def prefix_rate(c, bb, rows: int, batch: int, dev) -> float:
    x = torch.randn(batch, *bb.input_size)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(0, rows, batch):
            c.prefix(x.to(dev))
    return rows / (time.perf_counter() - start)


def main() -> None:
    ap = parser(__doc__, 1024)
    ap.add_argument("--proj-dim", type=int, default=2048)
    args = ap.parse_args()
    dev, spec, bb, c, shape, x, y = cached_inputs(args)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    print(
        f"{args.model}@{args.image_size} --train {args.train}, k = {args.proj_dim}: {args.rows} rows of {shape}, "
        f"batch {args.batch_size}, {dev}, {torch.get_num_threads()} threads"
    )
    rates = {"epoch": [], "features": [], "prefix": []}
    for _ in range(args.repeats):  # interleaved, so drift of a noisy machine hits all alike
        s = student(create_backbone(BackboneSpec(args.model, args.image_size)), spec, 10, dev)
        rates["epoch"].append(bare(s, x, y, args.batch_size, 1, 1e-4, dev))
        s = student(create_backbone(BackboneSpec(args.model, args.image_size)), spec, 10, dev)
        with torch.no_grad():  # a head that is not zero (at a zero head every backbone gradient vanishes)
            s.head.weight.normal_(0, s.head.in_features**-0.5)
        rates["features"].append(features_rate(s, x, args.proj_dim, args.batch_size, dev))
        rates["prefix"].append(prefix_rate(c, bb, min(args.rows, 512), args.batch_size, dev))
    best = {k: max(v) for k, v in rates.items()}
    for k, what in (("epoch", "finetuning epoch"), ("features", "gradient features"), ("prefix", "frozen prefix")):
        runs = ", ".join(f"{v:.1f}" for v in rates[k])
        print(f"{what:18s} {best[k]:9.1f} rows/s  (best of {args.repeats}: {runs})")
    print(f"time of gradient features / one epoch, same rows: {best['epoch'] / best['features']:.2f}")
    both = 1 / best["features"] + 1 / best["prefix"]
    print(f"  with the frozen prefix from images (no cache): {best['epoch'] * both:.2f}")


if __name__ == "__main__":
    main()
