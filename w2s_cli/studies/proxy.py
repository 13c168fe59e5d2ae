"""`w2s proxy`: before spending the three finetunes, a short W2S finetune alone (the recipe with fewer epochs;
strong SFT and the ceiling stay at their LP-FT starts), then the label-light predictions of the recipe's three
fits from its after-kernel (diagnostics/predict.py), with its cost beside the estimated cost of the three."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from w2s_cli.diagnostics.predict import attach_predictions, check_kernel, predict_finetune
from w2s_cli.errors import W2SError
from w2s_cli.options import ExtractOptions, SubspaceOptions
from w2s_cli.store.outputs import check_output


def proxy_finetune(
    pseudo: str | os.PathLike,
    strong: str | os.PathLike,
    out: str | os.PathLike,
    *,
    recipe,
    epochs: int = 1,
    subspace: SubspaceOptions | None = None,
    extract: ExtractOptions | None = None,
    kernel: str = "embeddings",
) -> tuple[Path, dict[str, Any]]:
    """Before the three finetunes: a short W2S finetune alone (the recipe with `epochs` epochs; strong SFT and the
    ceiling stay at their LP-FT starts), then the label-light predictions from its after-kernel, written into
    its result at `out`; with the time it took beside the estimated time of the full recipe's three fits."""
    from w2s_cli.stages.finetune import finetune
    from w2s_cli.studies.finetune_cost import estimate_finetune

    check_kernel(kernel)  # before the short finetune, not after it
    if epochs < 1 or epochs > recipe.epochs:
        raise W2SError(f"--proxy-epochs must be between 1 and the recipe's --epochs ({recipe.epochs}), got {epochs}")
    check_output(out, inputs=[pseudo, strong])  # before the calibration of the estimate below
    short = replace(recipe, epochs=epochs, warmup_epochs=min(recipe.warmup_epochs, epochs))
    full = estimate_finetune(pseudo, strong, recipe)
    begin = time.perf_counter()
    made = finetune(pseudo, strong, out, recipe=short, subspace=subspace, extract=extract, trained=("w2s",))
    predicted, where = predict_finetune(made, kernel=kernel, extract=extract)
    attach_predictions(made, predicted, where)
    cost = {
        "proxy_seconds": round(time.perf_counter() - begin, 3),
        "full_estimated_seconds": round(full.seconds["finetuning"], 3),
        "proxy_epochs": epochs,
        "recipe_epochs": recipe.epochs,
    }
    return made, cost
