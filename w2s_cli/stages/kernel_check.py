"""`w2s kernel-check RESULT`: how far a finetune left the kernel (linearised) regime, from its own weights.

For each fit of a finetune result (W2S student, strong SFT, ceiling), with θ₀ its LP-FT start (the start head
the result stores, the pretrained backbone) and θ₁ its finetuned weights, on the teacher's test rows:

* the weight movement ‖θ₁ − θ₀‖ / ‖θ₀‖ over the trained parameters;
* the output change Δf = f(x; θ₁) − f(x; θ₀) and its first-order part J(x)(θ₁ − θ₀) (a forward-mode
  Jacobian-vector product, torch.func.jvp): the share of the change the linearisation leaves unexplained,
  ‖Δf − JΔθ‖ / ‖Δf‖ (root of a ratio of means over rows, delta-method standard error);
* the test error of the start, of the finetuned model and of its linearisation f₀ + JΔθ (and PGR of both).

An unexplained share near 0 means the finetune stayed in the kernel regime, where a linear model on
gradient features (`w2s extract --features grad`) describes it; near 1 or above, it did not. Reads the
cached inputs the finetune trained on (`--train head` or `last:K`); the recipes that train on images
(`lora:R`, `all`) are refused.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli.errors import W2SError, printable
from w2s_cli.numerics.stats import mean_and_sem, pgr_from_rows, ratio, squared_errors

FITS = ("w2s", "strong_sft", "ceiling")


def kernel_check(result: str | os.PathLike, *, device: str = "auto", batch_size: int = 256) -> dict[str, Any]:
    """The first-order check of every fit of the finetune `result` (see the module doc), as a JSON-ready dict."""
    import torch

    from w2s_cli.extraction.extract import resolve_device
    from w2s_cli.finetuning.network import backbone_from_record
    from w2s_cli.finetuning.recipe import FinetuneRecipe
    from w2s_cli.store import artifact as store
    from w2s_cli.store.embeddings import EmbeddingSet, find
    from w2s_cli.store.records import ResultRecord, read_record

    art = store.load(result, "result", what="finetune result")
    rec = read_record(art, ResultRecord)
    if rec.student is None or rec.student.kind != "finetune":
        raise W2SError(f"{printable(result)}: not a finetune result (made by w2s fit-student, not w2s finetune)")
    recipe = FinetuneRecipe.from_record(rec.student.recipe)
    if recipe.spec.kind in ("lora", "all"):
        raise W2SError(
            f"{printable(result)}: trained {recipe.train} on images; kernel-check reads the cached inputs of "
            "--train head or last:K"
        )
    missing = [f for f in FITS if not art.has(f"start_coef_{f}")]
    if missing:
        raise W2SError(f"{printable(result)}: holds no LP-FT start head of fit {missing[0]} (made by an older w2s)")
    emb_s = find(rec.provenance["strong_embeddings"], result, None, "strong embeddings")
    test = np.asarray(art["test_rows"])
    inputs = rec.student.inputs
    if inputs.get("input") == "activations":
        path = inputs["path"]
        if not os.path.isfile(path):
            raise W2SError(f"{printable(result)}: the cached activations it trained on ({printable(path)}) are gone")
        a = EmbeddingSet(path, "cached activations").rows(test).reshape(len(test), *inputs["shape"])
    else:
        a = emb_s.rows(test)
    dev = resolve_device(device)
    bb = backbone_from_record(emb_s.meta, f"strong embeddings {printable(emb_s.path)}")
    truth = emb_s.truth(test)
    x = torch.from_numpy(np.ascontiguousarray(a, np.float32))
    fits = {}
    for name in FITS:
        head = (np.asarray(art[f"start_coef_{name}"]), np.asarray(art[f"start_intercept_{name}"]))
        weights = Path(result).resolve().parent / rec.fits[name].extra["weights"]  # recorded relative to it
        fits[name] = _one_fit(copy.deepcopy(bb.model), bb.name, recipe, head, weights, x, dev, batch_size)
        fits[name]["chosen_epoch"] = rec.fits[name].chosen_epoch
        fits[name]["stored_outputs_gap"] = float(np.abs(fits[name].pop("f1") - art[f"test_output_{name}"]).max())
    errors = {n: {k: squared_errors(v, truth) for k, v in f.pop("outputs").items()} for n, f in fits.items()}
    weak = squared_errors(np.asarray(art["test_output_weak"], np.float64), truth)
    for n, f in fits.items():
        f["error"] = {k: _mean_se(e) for k, e in errors[n].items()}
    pgr = {
        k: dict(zip(("value", "stderr"), pgr_from_rows(weak, errors["w2s"][k], errors["ceiling"][k]), strict=True))
        for k in ("start", "finetuned", "first_order")
    }
    return {
        "result": str(result),
        "recipe": recipe.describe(),
        "n_test": len(test),
        "error_weak": _mean_se(weak),
        "fits": fits,
        "pgr": pgr,
    }


def _mean_se(e: np.ndarray) -> dict[str, float | None]:
    m, se = mean_and_sem(list(e))
    return {"value": m, "stderr": se}


def _one_fit(model, name: str, recipe, head, weights, x, dev, batch_size: int) -> dict[str, Any]:
    """θ₀ (the start head on the pretrained backbone) and θ₁ (the finetuned weights) of one fit: movement,
    outputs f₀, f₁, first order f₀ + JΔθ on the rows x, and the unexplained share of the change."""
    import torch
    from safetensors.torch import load_file
    from torch.func import functional_call, jvp

    from w2s_cli.finetuning.network import Student, cut, set_trainable
    from w2s_cli.finetuning.train import predictions

    student = Student(model, cut(model, recipe.spec, name), *head).to(dev)
    names = set_trainable(student, recipe.spec, [])
    named = dict(student.named_parameters())
    theta0 = {n: named[n].detach().clone() for n in names}
    if not os.path.isfile(weights):
        raise W2SError(f"finetuned weights {printable(weights)} not found (moved without the result's .fits folder?)")
    theta1 = {k: v.to(dev) for k, v in load_file(str(weights)).items()}
    if sorted(theta1) != names:
        raise W2SError(f"{printable(weights)}: holds {len(theta1)} tensors, not the {len(names)} this recipe trains")
    delta = {n: theta1[n] - theta0[n] for n in names}
    moved = math.sqrt(sum(float(d.double().pow(2).sum()) for d in delta.values()))
    size = math.sqrt(sum(float(p.double().pow(2).sum()) for p in theta0.values()))
    f0, f1, lin = [], [], []
    with torch.no_grad(), warnings.catch_warnings():
        # torch's forward-mode decompositions are scripted as they load (its own deprecation warning, not ours)
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(dev)
            out0, tangent = jvp(lambda p, xb=xb: functional_call(student, p, (xb,)), (theta0,), (delta,))
            f0.append(out0.double().cpu())
            lin.append((out0.double() + tangent.double()).cpu())
            f1.append(functional_call(student, theta1, (xb,)).double().cpu())
    f0, f1, lin = (torch.cat(t).numpy() for t in (f0, f1, lin))
    change = ((f1 - f0) ** 2).sum(axis=1)
    left = ((f1 - lin) ** 2).sum(axis=1)
    share, share_se = ratio(left, change)
    outputs = {k: predictions(v, recipe.loss) for k, v in (("start", f0), ("finetuned", f1), ("first_order", lin))}
    return {
        "trained_parameters": int(sum(p.numel() for p in theta0.values())),
        "weight_change": moved / size if size else None,
        "output_change_rms": float(np.sqrt(change.mean())),
        "unexplained": {
            "value": math.sqrt(share) if share is not None else None,
            # delta method through the square root: se(sqrt R) = se(R) / (2 sqrt R)
            "stderr": share_se / (2 * math.sqrt(share)) if share and share_se is not None else None,
        },
        "outputs": outputs,
        "f1": predictions(f1, recipe.loss),
    }
