"""Extraction throughput vs the bare model forward on the same pre-made batches, in one process.

    python bench/extract.py [--model tf_efficientnet_lite2] [--size 112] [--images 1024] [--workers W]

Prints images/s of both and their ratio (target >= 0.85 on CPU). The bare forward sees batches that are
already transformed, in channels_last, so the ratio measures what loading, decoding, resizing and the
DataLoader cost on top of the model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from w2s_cli.data import DEBIAN_FASHION_MNIST, open_source
from w2s_cli.extract import default_workers, embed, embed_batch, resolve_device
from w2s_cli.models import create_backbone, make_transform


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tf_efficientnet_lite2")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | mps")
    ap.add_argument("--data", default=None, help="data SPEC (default: fashion-mnist if installed, else digits)")
    ap.add_argument("--root", default=None, help="folder holding the dataset files")
    ap.add_argument("--no-pretrained", action="store_true", help="random weights (same speed, no download)")
    args = ap.parse_args()

    spec = args.data or ("fashion-mnist" if DEBIAN_FASHION_MNIST.exists() or args.root else "digits")
    source = open_source(spec, root=args.root)
    ids = np.arange(min(args.images, len(source)))
    bb = create_backbone(args.model, pretrained=not args.no_pretrained, image_size=args.size)
    dev = resolve_device(args.device)
    model = bb.model.to(dev).to(memory_format=torch.channels_last)
    tf = make_transform(bb.data_config)
    batches = [
        torch.stack([tf(source.load(int(i))) for i in ids[s : s + args.batch_size]])
        .to(dev)
        .contiguous(memory_format=torch.channels_last)
        for s in range(0, len(ids), args.batch_size)
    ]
    with torch.inference_mode():
        embed_batch(model, batches[0])  # warm-up

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def bare() -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                embed_batch(model, x).float().cpu()  # the pipeline copies its outputs back too
        sync()
        return len(ids) / (time.perf_counter() - start)

    def pipeline() -> float:
        start = time.perf_counter()
        embed(bb, source, ids, args.batch_size, args.device, args.workers, quiet=True)
        return len(ids) / (time.perf_counter() - start)

    # interleave the two so that machine noise hits both alike; keep each one's best
    bare_best = pipe_best = 0.0
    for _ in range(args.repeats):
        bare_best = max(bare_best, bare())
        pipe_best = max(pipe_best, pipeline())
    print(
        f"source={source.name} model={args.model}@{args.size} images={len(ids)} batch={args.batch_size} "
        f"device={dev} threads={torch.get_num_threads()} workers={args.workers or default_workers()}"
    )
    print(f"bare forward   {bare_best:8.1f} images/s")
    print(f"w2s extraction {pipe_best:8.1f} images/s")
    print(f"ratio          {pipe_best / bare_best:8.3f}  (target >= 0.85)")


if __name__ == "__main__":
    main()
