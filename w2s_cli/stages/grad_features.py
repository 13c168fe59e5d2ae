"""`w2s extract --features grad`: gradient features (w2s_cli.finetuning.gradients) written as an ordinary
embeddings artifact through extract()'s machinery (sharded, resumable, torchrun-ready), so `intrinsic-dim`
(the finetuning dimension d^FT), `train-weak` and `fit-student` (the linearised finetune) read them unchanged.

The start point is the LP-FT head of a finetune result (`--init`, one of its fits), else a seeded random head
(`default_head`). The record states the trained set, the start, how outputs enter, the projection, and the
projection's inner-product distortion measured at extraction time on the first rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from w2s_cli.errors import W2SError, printable
from w2s_cli.finetuning.gradients import (
    OUTPUTS,
    GradientFeatures,
    default_head,
    distortion,
    gradient_student,
    output_signs,
)
from w2s_cli.finetuning.recipe import TrainSpec
from w2s_cli.inputs.backbones import Backbone
from w2s_cli.inputs.sources import ImageSource, open_source, subset
from w2s_cli.options import BackboneSpec, DataOptions, ExtractOptions

FITS = ("w2s", "strong_sft", "ceiling")
DISTORTION_ROWS = 64


def start_head(init: str | os.PathLike, fit: str) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any], int]:
    """The LP-FT head (coef (width, C), intercept (C,)) of fit `fit` in the finetune result `init`, its record,
    and the result's seed (that of its LoRA adapters)."""
    from w2s_cli.store import artifact as store
    from w2s_cli.store.records import ResultRecord, read_record

    if fit not in FITS:
        raise W2SError(f"--init-fit must be one of {', '.join(FITS)}, not '{printable(fit)}'")
    art = store.load(init, "result", what="--init")
    result = read_record(art, ResultRecord)
    student = None if result.solver is None else result.solver["student"]
    if student != "finetune" or result.student is None:
        raise W2SError(
            f"--init {printable(init)}: not a finetune result (its student is {student}); give one of w2s finetune"
        )
    if f"start_coef_{fit}" not in art.tensors:
        raise W2SError(f"--init {printable(init)}: holds no LP-FT start head of fit {fit} (made by an older w2s)")
    head = (np.asarray(art[f"start_coef_{fit}"], np.float64), np.asarray(art[f"start_intercept_{fit}"], np.float64))
    record = {
        "kind": "finetune result",
        "result": str(init),
        "artifact_id": art.meta["artifact_id"],  # every artifact has its content hash
        "fit": fit,
        "strong_model": result.strong_model,
        "recipe_train": result.student.recipe["train"],
    }
    return head, record, int(art.meta["seed"])


def n_outputs(source: ImageSource) -> int:
    if source.task != "classification":
        return 1
    return len(source.classes) if source.classes else int(np.max(source.targets)) + 1


def first_images(bb: Backbone, source: ImageSource, ids: np.ndarray, dev: torch.device) -> torch.Tensor:
    """The images of samples `ids`, transformed for the model as an extraction does, on `dev`."""
    from w2s_cli.extraction.extract import ImageRows
    from w2s_cli.inputs.preprocess import split_transform

    transform, finish = split_transform(bb.data_config)
    rows = ImageRows(source, ids, transform, bb.input_size)
    items = [rows[k] for k in range(len(rows))]
    bad = next((e for _, e in items if e), None)
    if bad:
        raise W2SError(bad)
    return finish(torch.stack([x for x, _ in items]).to(dev))


def extract_gradients(
    data: DataOptions,
    backbone: BackboneSpec,
    out: str | os.PathLike,
    options: ExtractOptions | None = None,
    *,
    train: str,
    init: str | os.PathLike | None = None,
    init_fit: str = "w2s",
    proj_dim: int | None = 2048,
    proj_seed: int = 0,
    limit: int | None = None,
    seed: int = 0,
    request: dict[str, Any] | None = None,
) -> Path:
    """Write, for every sample, the projected gradient of s(x) with respect to what `--train train` trains, at
    the LP-FT head of `init` (else `default_head`), as an embeddings artifact at `out`; returns its path.
    `proj_dim` None writes the exact gradients (small models only: a test's reference)."""
    from w2s_cli.extraction.extract import extract, resolve_device

    spec = TrainSpec.parse(train)
    if proj_dim is not None and proj_dim < 1:
        raise W2SError(f"--proj-dim must be at least 1, got {proj_dim}")
    head, init_record, lora_seed = start_head(init, init_fit) if init is not None else (None, None, seed)
    options = options or ExtractOptions()
    source = open_source(data)

    def features(bb: Backbone):
        C = n_outputs(source)
        start = head if head is not None else default_head(bb.width, C, proj_seed)
        if head is not None and (start[0].shape[0] != bb.width or init_record["strong_model"] != bb.name):
            raise W2SError(
                f"--init {printable(init)}: a finetune of {printable(str(init_record['strong_model']))} "
                f"(width {start[0].shape[0]}), not of {printable(bb.name)} (width {bb.width})"
            )
        student, names = gradient_student(bb.model, bb.name, spec, start, lora_seed)
        fn = GradientFeatures(student, names, output_signs(start[0].shape[1], proj_seed), proj_dim, proj_seed)
        ids = subset(source, limit, seed)[:DISTORTION_ROWS]
        measured = distortion(fn, first_images(bb, source, ids, resolve_device(options.device)))
        n_params = sum(p.numel() for n, p in student.named_parameters() if p.requires_grad)
        record = {
            "kind": "grad",
            "train": str(spec),
            "trained": {"tensors": len(names), "parameters": int(n_params)},
            "init": init_record or {"kind": "default", "head": "N(0, 1/width) coef, zero intercept", "seed": proj_seed},
            "lora_seed": lora_seed if spec.kind == "lora" else None,
            "outputs": OUTPUTS,
            "output_signs": [int(v) for v in fn.xi.tolist()],
            "projection": fn.record(),
            "measured": {"distortion": measured},
        }
        return fn, record

    return extract(
        data, backbone, out, options, limit=limit, seed=seed, request=request, source=source, features=features
    )
