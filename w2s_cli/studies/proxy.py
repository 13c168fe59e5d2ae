"""`w2s proxy`: before spending the three finetunes, a short W2S finetune alone (the recipe with fewer epochs;
strong SFT and the ceiling stay at their LP-FT starts), then the label-light predictions of the recipe's three
fits from its after-kernel (diagnostics/predict.py), with its cost beside the estimated cost of the three.
`rank-teachers --student finetune` runs one per teacher (studies/rank_finetune.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from w2s_cli.diagnostics.predict import attach_predictions, check_kernel, predict_finetune
from w2s_cli.errors import W2SError
from w2s_cli.options import ExtractOptions, SubspaceOptions
from w2s_cli.options.recipe import PROXY_EPOCHS, FinetuneRecipe
from w2s_cli.store.outputs import check_output
from w2s_cli.store.records import Predicted

Predictor = Callable[[Path], tuple[Predicted, dict[str, Any]]]


def check_proxy_epochs(recipe: FinetuneRecipe, epochs: int) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1 or epochs > recipe.epochs:
        raise W2SError(f"--proxy-epochs must be between 1 and the recipe's --epochs ({recipe.epochs}), got {epochs}")


def short_recipe(recipe: FinetuneRecipe, epochs: int) -> FinetuneRecipe:
    """The recipe over its first `epochs` epochs (the warm-up cut to fit): the proxy's."""
    return replace(recipe, epochs=epochs, warmup_epochs=min(recipe.warmup_epochs, epochs))


def short_finetune(
    pseudo: str | os.PathLike,
    strong: str | os.PathLike,
    out: str | os.PathLike,
    *,
    recipe: FinetuneRecipe,
    epochs: int = PROXY_EPOCHS,
    subspace: SubspaceOptions | None = None,
    extract: ExtractOptions | None = None,
    kernel: str = "embeddings",
    predict: Predictor | None = None,
) -> Path:
    """The short W2S finetune alone (strong SFT and the ceiling at their LP-FT starts), then the label-light
    predictions from its after-kernel, written into its result at `out`. `predict` (the finished short finetune
    -> predictions and where they came from) defaults to diagnostics/predict.py's `predict_finetune`;
    rank-teachers passes its own (studies/rank_finetune.py)."""
    from w2s_cli.stages.finetune import finetune

    check_kernel(kernel)
    check_proxy_epochs(recipe, epochs)
    short = short_recipe(recipe, epochs)
    made = finetune(pseudo, strong, out, recipe=short, subspace=subspace, extract=extract, trained=("w2s",))
    if predict is None:
        predicted, where = predict_finetune(made, kernel=kernel, extract=extract)
    else:
        predicted, where = predict(made)
    return attach_predictions(made, predicted, where)


def proxy_finetune(
    pseudo: str | os.PathLike,
    strong: str | os.PathLike,
    out: str | os.PathLike,
    *,
    recipe: FinetuneRecipe,
    epochs: int = PROXY_EPOCHS,
    subspace: SubspaceOptions | None = None,
    extract: ExtractOptions | None = None,
    kernel: str = "embeddings",
) -> tuple[Path, dict[str, Any]]:
    """Before the three finetunes: a short W2S finetune alone (the recipe with `epochs` epochs; strong SFT and the
    ceiling stay at their LP-FT starts), then the label-light predictions from its after-kernel, written into
    its result at `out`; with the time it took beside the estimated time of the full recipe's three fits."""
    from w2s_cli.studies.finetune_cost import estimate_finetune

    check_kernel(kernel)  # before the short finetune, not after it
    check_proxy_epochs(recipe, epochs)
    check_output(out, inputs=[pseudo, strong])  # before the calibration of the estimate below
    full = estimate_finetune(pseudo, strong, recipe)
    begin = time.perf_counter()
    made = short_finetune(
        pseudo, strong, out, recipe=recipe, epochs=epochs, subspace=subspace, extract=extract, kernel=kernel
    )
    cost = {
        "proxy_seconds": round(time.perf_counter() - begin, 3),
        "full_estimated_seconds": round(full.seconds["finetuning"], 3),
        "proxy_epochs": epochs,
        "recipe_epochs": recipe.epochs,
    }
    return made, cost
