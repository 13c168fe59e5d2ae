"""One finetune's training job: what its three fits share (the recipe, the pretrained network, the inputs of
its trained part over every row they and the test need, the device), and one fit run from its LP-FT head to
its chosen epoch (`Job.run`), returning its test outputs before and after and its record."""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli.distributed import main_writes, world
from w2s_cli.finetuning.prefix import data_options, open_images, prefix_cache
from w2s_cli.numerics.stats import probabilities
from w2s_cli.options import DataOptions, ExtractOptions
from w2s_cli.options.recipe import FinetuneRecipe, Loss, held_out
from w2s_cli.progress import stderr
from w2s_cli.store import artifact as store
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.records import PrecisionRecord


@dataclasses.dataclass(frozen=True)
class Rows:
    """One fit's training rows (row indices of the embeddings) and targets; nothing else reaches the fit."""

    rows: np.ndarray
    targets: np.ndarray


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """One fit as the job runs it: its name, rows and targets, (train, val) positions in them, LP-FT head
    (coef (width, C), intercept (C,)), folder (checkpoint, weights) and identity (what resuming must match)."""

    name: str
    rows: Rows
    split: tuple[np.ndarray, np.ndarray]
    head: tuple[np.ndarray, np.ndarray]
    folder: Path
    identity: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class FitDone:
    """A finished fit: its test outputs at epoch 0 (`first`) and after finetuning (`last`), and its record."""

    first: np.ndarray
    last: np.ndarray
    record: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Job:
    """What the three fits share: the recipe, the pretrained network (`bb`), the strong embeddings, the rows
    every fit and the test need (`needed`, sorted), the test rows, the device, and the inputs of the trained
    part over `needed` with their record (`inputs_record`)."""

    recipe: FinetuneRecipe
    bb: Any
    emb_s: EmbeddingSet
    needed: np.ndarray
    test: np.ndarray
    extract: ExtractOptions
    dev: Any
    inputs: Any
    inputs_record: dict[str, Any]

    @classmethod
    def build(
        cls,
        recipe: FinetuneRecipe,
        bb,
        emb_s: EmbeddingSet,
        needed: np.ndarray,
        test: np.ndarray,
        extract: ExtractOptions,
        *,
        data: DataOptions | None,
        out: Path,
    ) -> Job:
        """The job, its trained part's inputs read (or cached) now; `out`: the result its record refers from."""
        from w2s_cli.extraction.extract import resolve_device
        from w2s_cli.finetuning.network import cut

        dev = resolve_device(extract.device)
        c = cut(bb.model, recipe.spec, bb.name)
        inputs, record = trained_inputs(c, recipe, bb, emb_s, needed, extract, data, out)
        return cls(recipe, bb, emb_s, needed, test, extract, dev, inputs, record)

    def positions(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.needed, rows)

    def start(self, plan: FitPlan) -> FitDone:
        """A fit left at its LP-FT start (not finetuned: a proxy's strong SFT and ceiling): its test outputs at
        epoch 0 are also its last, from its head on the test rows' inputs (no weights are written)."""
        from w2s_cli.finetuning.network import Student, cut
        from w2s_cli.finetuning.train import outputs_of, raw_outputs

        student = Student(self.bb.model, cut(self.bb.model, self.recipe.spec, self.bb.name), *plan.head).to(self.dev)
        first = outputs_of(
            raw_outputs(student, self.inputs, self.positions(self.test), self.recipe, self.dev), self.recipe.loss
        )
        train, val = plan.split
        record = {
            "solver": "finetune",
            "rows": len(plan.rows.rows),
            "train_rows": len(train),
            "val_rows": len(val),
            "finetuned": False,
            "chosen_epoch": 0,
            "history": [],
        }
        return FitDone(first, first, record)

    def run(self, plan: FitPlan, seed: int, out: Path) -> FitDone:
        """One fit from its LP-FT head (the W2S fit keeps each epoch's weights: its kernel at every epoch is
        what predicting and stopping it read)."""
        import torch

        from w2s_cli.finetuning.lora import add_lora
        from w2s_cli.finetuning.network import Student, cut, set_trainable
        from w2s_cli.finetuning.train import Fit, outputs_of, raw_outputs, save_weights, train_fit

        recipe, spec, begin = self.recipe, self.recipe.spec, time.perf_counter()
        torch.manual_seed(seed)  # LoRA's A matrices
        model = copy.deepcopy(self.bb.model)
        lora = add_lora(model, spec.size) if spec.kind == "lora" else []
        student = Student(model, cut(model, spec, self.bb.name), *plan.head).to(self.dev)
        if self.dev.type == "cuda":
            student = student.to(memory_format=torch.channels_last)
        trained = set_trainable(student, spec, lora)
        f, (train, val) = plan.rows, plan.split
        targets = np.zeros((len(self.needed), f.targets.shape[1]), np.float32)
        targets[self.positions(f.rows)] = f.targets if recipe.loss == Loss.mse else probabilities(f.targets)
        fit = Fit(plan.name, self.inputs, targets, self.positions(f.rows[train]), self.positions(f.rows[val]))
        test = self.positions(self.test)
        first = outputs_of(raw_outputs(student, self.inputs, test, recipe, self.dev), recipe.loss)
        keep = plan.name == "w2s"
        log = train_fit(
            student,
            fit,
            recipe,
            seed=seed,
            folder=plan.folder,
            identity=plan.identity,
            dev=self.dev,
            quiet=self.extract.quiet,
            keep_epochs=keep,
        )
        last = outputs_of(raw_outputs(student, self.inputs, test, recipe, self.dev), recipe.loss)
        weights = plan.folder / "final.safetensors"
        main_writes(lambda: save_weights(student, weights), weights)
        record = fit_record(student, plan, trained, weights, out, keep=keep, recipe=recipe)
        record.update(seconds=round(time.perf_counter() - begin, 3), **log.record())
        return FitDone(first, last, record)


def fit_record(student, plan: FitPlan, trained: list[str], weights: Path, out: Path, *, keep: bool, recipe) -> dict:
    """What a fit's record says of it: rows, trained parameters, where its weights are (relative to the
    result `out`, and absolute) and their hash, and the epochs' weights it kept."""
    from w2s_cli.finetuning.network import tensors_sha256, trained_state
    from w2s_cli.finetuning.train import epoch_weights

    def rel(path: Path) -> str:
        return os.path.relpath(path.resolve(), Path(out).resolve().parent)

    train, val = plan.split
    return {
        "solver": "finetune",
        "rows": len(plan.rows.rows),
        "train_rows": len(train),
        "val_rows": len(val),
        "trained_parameters": int(sum(p.numel() for p in student.parameters() if p.requires_grad)),
        "trained_tensors": len(trained),
        "weights": rel(weights),  # beside the result
        "weights_path": str(weights.resolve()),
        "weights_sha256": tensors_sha256(trained_state(student)),  # what kernel-check reads is checked
        "epoch_weights": [rel(epoch_weights(plan.folder, e)) for e in range(1, recipe.epochs + 1)] if keep else None,
    }


def trained_inputs(c, recipe: FinetuneRecipe, bb, emb_s: EmbeddingSet, needed: np.ndarray, extract, data, out):
    """The inputs of the trained part over rows `needed`: the strong embeddings themselves (`head`), the frozen
    prefix's cached outputs (`last:K`), or the images (`lora:R`, `all`); and their record, which names a file
    of tensors as any input is referenced (absolute, relative to the result `out`, its artifact_id)."""
    from w2s_cli.finetuning.train import ImageInputs, TensorInputs

    kind = c.record["input"]
    if kind == "embeddings":
        return TensorInputs(emb_s.rows(needed), (emb_s.width,)), {
            "input": "embeddings",
            **store.reference(emb_s.art, out),
        }
    if kind == "images":
        source = open_images(emb_s, data)
        ids = np.asarray(emb_s.art["sample_ids"])[needed]
        workers = extract.num_workers
        if workers is None:
            from w2s_cli.extraction.extract import default_workers

            workers = default_workers()
        record = {"input": "images", "data": dataclasses.asdict(data or data_options(emb_s.record))}
        return ImageInputs(source, ids, bb.data_config, recipe.augment, workers), record
    path = prefix_cache(c, emb_s, bb, recipe, extract, data)
    cache = EmbeddingSet(path, "cached activations")
    shape = tuple(cache.meta["features"]["shape"])
    record = {"input": "activations", **store.reference(cache.art, out), "shape": list(shape), **c.record}
    return TensorInputs(cache.rows(needed), shape), record


def validation_split(n: int, fraction: float, seed: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (sorted) of a fit's training and validation rows: round(fraction * n) held out, drawn
    from (seed, 3, k) for the k-th fit."""
    order = np.random.default_rng([seed, 3, k]).permutation(n)
    n_val = held_out(n, fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def precision_in_use(recipe: FinetuneRecipe, dev) -> PrecisionRecord:
    """The precision the fits run in on `dev` (recorded), said on stderr when it is not the one asked for."""
    from w2s_cli.finetuning.train import precision_used

    ran = precision_used(dev, recipe.precision)
    if ran.used != ran.requested and world().main:
        stderr.print(
            f"note: --ft-precision {ran.requested} (AMP) needs a CUDA device: on {dev} this finetune runs in "
            f"{ran.used}, and its record says so"
        )
    return ran
