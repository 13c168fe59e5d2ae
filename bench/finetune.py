"""The finetune loop's throughput against a bare training loop on the same cached batches, in one process.

The bare loop is the least a training step needs: forward of the trained part and the head, squared-error
loss, backward, AdamW step, over the same batches in the same order. The w2s loop (`train_fit`) adds the
seeded order, timm's schedule, the progress bar, the validation pass and a checkpoint after every epoch.
Inputs are what the trained part takes (a frozen prefix's activations for last:K, images for all), random
(throughput does not depend on the values).

    python bench/finetune.py                                   # lite2@112, last:2, CPU
    python bench/finetune.py --train all --image-size 260 --device cuda --rows 8192 --batch-size 128
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from w2s_cli.extraction.extract import resolve_device
from w2s_cli.finetuning.network import Student, cut, set_trainable
from w2s_cli.finetuning.train import Fit, TensorInputs, train_fit
from w2s_cli.inputs.backbones import create_backbone
from w2s_cli.options import BackboneSpec
from w2s_cli.options.recipe import FinetuneRecipe, TrainSpec


def student(bb, spec: TrainSpec, classes: int, dev: torch.device) -> Student:
    torch.manual_seed(0)
    model = bb.model
    if spec.kind == "lora":
        from w2s_cli.finetuning.lora import add_lora

        lora = add_lora(model, spec.size)
    else:
        lora = []
    s = Student(model, cut(model, spec, bb.name), np.zeros((bb.width, classes)), np.zeros(classes)).to(dev)
    set_trainable(s, spec, lora)
    return s


def bare(s: Student, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, lr: float, dev) -> float:
    """Rows per second of the least training loop: forward, loss, backward, step."""
    opt = torch.optim.AdamW([p for p in s.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    start = time.perf_counter()
    for e in range(epochs):
        order = torch.from_numpy(np.random.default_rng(e).permutation(len(x)))
        for k in range(0, len(x), batch):
            idx = order[k : k + batch]
            out = s(x[idx].to(dev))
            loss = ((out - y[idx].to(dev)) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return epochs * len(x) / (time.perf_counter() - start)


def parser(doc: str, rows: int) -> argparse.ArgumentParser:
    """The options every cached-input benchmark takes (model, size, trained set, rows, batch, device, repeats)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tf_efficientnet_lite2")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--train", default="last:2")
    ap.add_argument("--rows", type=int, default=rows)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    return ap


def cached_inputs(args):
    """(device, spec, backbone, cut, prefix output shape, random inputs x (rows, *shape), one-hot targets y)."""
    dev = resolve_device(args.device)
    spec = TrainSpec.parse(args.train)
    bb = create_backbone(BackboneSpec(args.model, args.image_size))
    c = cut(bb.model, spec, bb.name)
    with torch.inference_mode():
        shape = tuple(c.prefix(torch.zeros(1, *bb.input_size)).shape[1:])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, *shape)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.rows)]
    return dev, spec, bb, c, shape, x, y


def main() -> None:
    ap = parser(__doc__, 4096)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    dev, spec, bb, c, shape, x, y = cached_inputs(args)
    inputs = TensorInputs(x, shape)
    recipe = FinetuneRecipe(train=args.train, epochs=args.epochs, batch_size=args.batch_size, lr=1e-4)
    print(
        f"{args.model}@{args.image_size} --train {args.train}: {args.rows} rows of {shape}, batch {args.batch_size}, "
        f"{args.epochs} epochs, {dev}, {torch.get_num_threads()} threads"
    )
    rates = {"bare": [], "w2s": []}
    for r in range(args.repeats):  # interleaved, so drift of a noisy machine hits both alike
        s = student(create_backbone(BackboneSpec(args.model, args.image_size)), spec, 10, dev)
        rates["bare"].append(bare(s, inputs.values, torch.from_numpy(y), args.batch_size, args.epochs, 1e-4, dev))
        s = student(create_backbone(BackboneSpec(args.model, args.image_size)), spec, 10, dev)
        n_val = args.rows // 10
        fit = Fit("bench", inputs, y, np.arange(n_val, args.rows), np.arange(n_val))
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            train_fit(s, fit, recipe, seed=r, folder=Path(tmp), identity={"bench": r}, dev=dev, quiet=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            # the w2s loop also validates (n_val rows per epoch, and once at epoch 0): count training rows only
            rates["w2s"].append(args.epochs * (args.rows - n_val) / (time.perf_counter() - start))
    b, w = max(rates["bare"]), max(rates["w2s"])
    print(f"bare loop   {b:9.1f} rows/s  (best of {args.repeats}: {', '.join(f'{v:.1f}' for v in rates['bare'])})")
    print(f"w2s loop    {w:9.1f} rows/s  (best of {args.repeats}: {', '.join(f'{v:.1f}' for v in rates['w2s'])})")
    print(f"ratio w2s / bare: {w / b:.2f}")


if __name__ == "__main__":
    main()
