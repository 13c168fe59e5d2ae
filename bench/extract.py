"""Extraction throughput vs the bare model forward on the same images, in one process.

    python bench/extract.py [--model tf_efficientnet_lite2] [--size 112] [--images 1024] [--workers W]
                            [--device cpu|cuda] [--preprocess timm|device] [--precision fp32|bf16]

Prints images/s of each and the ratios (target >= 0.85 on CPU, >= 0.9 on a GPU with --preprocess device).
The bare forward sees batches already transformed and on the device, in channels_last (and the same
precision), so the ratio measures what loading, decoding, resizing, the DataLoader, the copies to the
device and the shard writes cost on top of the model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from w2s_cli.distributed import World
from w2s_cli.extraction.extract import _autocast, default_workers, embed_batch, embed_shards, extract, resolve_device
from w2s_cli.extraction.shards import ShardPlan
from w2s_cli.inputs.backbones import create_backbone
from w2s_cli.inputs.preprocess import make_transform
from w2s_cli.inputs.sources import DEBIAN_FASHION_MNIST, open_source, subset
from w2s_cli.options import BackboneSpec, DataOptions, ExtractOptions, Precision, Preprocess
from w2s_cli.store import artifact as store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tf_efficientnet_lite2")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | mps")
    ap.add_argument("--preprocess", default="timm", choices=[p.value for p in Preprocess])
    ap.add_argument("--precision", default="fp32", choices=[p.value for p in Precision])
    ap.add_argument("--data", default=None, help="data SPEC (default: fashion-mnist if installed, else digits)")
    ap.add_argument("--root", default=None, help="folder holding the dataset files")
    ap.add_argument("--no-pretrained", action="store_true", help="random weights (same speed, no download)")
    ap.add_argument("--compare", action="store_true", help="also: embeddings of --preprocess device vs timm")
    args = ap.parse_args()

    spec = args.data or ("fashion-mnist" if DEBIAN_FASHION_MNIST.exists() or args.root else "digits")
    data = DataOptions(spec, root=args.root)
    source = open_source(data)
    limit = min(args.images, len(source))
    ids = subset(source, limit, 0)
    bspec = BackboneSpec(args.model, args.size, pretrained=not args.no_pretrained)
    bb = create_backbone(bspec)
    dev = resolve_device(args.device)
    model = bb.model.to(dev).to(memory_format=torch.channels_last)
    tf = make_transform(bb.data_config)
    batches = [
        torch.stack([tf(source.load(int(i))) for i in ids[s : s + args.batch_size]])
        .to(dev)
        .contiguous(memory_format=torch.channels_last)
        for s in range(0, len(ids), args.batch_size)
    ]
    precision = Precision(args.precision)
    with torch.inference_mode(), _autocast(dev, precision):
        embed_batch(model, batches[0])  # warm-up

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def bare() -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode(), _autocast(dev, precision):
            # like the pipeline: outputs stay on the device and come back in one copy (no sync per batch)
            torch.cat([embed_batch(model, x).float() for x in batches]).cpu()
        sync()
        return len(ids) / (time.perf_counter() - start)

    options = ExtractOptions(
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.workers,
        quiet=True,
        preprocess=Preprocess(args.preprocess),
        precision=precision,
    )

    def loop() -> float:
        """The extraction loop (loader, transform, device copies, forward, shard writes) on a ready model."""
        with tempfile.TemporaryDirectory() as tmp:
            plan = ShardPlan(Path(tmp) / "e.safetensors", {}, len(ids), options.shard_rows)
            plan.prepare()
            start = time.perf_counter()
            embed_shards(bb, source, ids, plan, list(range(plan.count)), options, dev, World())
            sync()
            return len(ids) / (time.perf_counter() - start)

    def command() -> float:
        """The whole `w2s extract`: model creation and checks, the loop, the final artifact."""
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            extract(data, bspec, Path(tmp) / "e.safetensors", options, limit=limit, source=source)
            return len(ids) / (time.perf_counter() - start)

    # interleave them so that machine noise hits all alike; keep each one's best
    bare_best = loop_best = pipe_best = 0.0
    for _ in range(args.repeats):
        bare_best = max(bare_best, bare())
        loop_best = max(loop_best, loop())
        pipe_best = max(pipe_best, command())
    print(
        f"source={source.name} model={args.model}@{args.size} images={len(ids)} batch={args.batch_size} "
        f"device={dev} threads={torch.get_num_threads()} workers={args.workers or default_workers()} "
        f"preprocess={args.preprocess} precision={args.precision}"
    )
    if args.compare:
        embeddings = {}
        for mode in (Preprocess.timm, Preprocess.device):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "e.safetensors"
                extract(data, bspec, out, replace(options, preprocess=mode), limit=limit, source=source)
                embeddings[mode] = store.load(out)["embeddings"].astype(np.float64)
        a, b = embeddings[Preprocess.timm], embeddings[Preprocess.device]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        print(
            f"device vs timm preprocessing: relative difference of the embeddings "
            f"{np.linalg.norm(a - b) / np.linalg.norm(a):.4f}, cosine similarity min {cos.min():.4f} "
            f"mean {cos.mean():.5f}"
        )
    print(f"bare forward          {bare_best:8.1f} images/s")
    print(f"w2s extraction loop   {loop_best:8.1f} images/s  ratio {loop_best / bare_best:.3f}")
    print(f"whole w2s extract     {pipe_best:8.1f} images/s  ratio {pipe_best / bare_best:.3f} (+ model, file)")


if __name__ == "__main__":
    main()
