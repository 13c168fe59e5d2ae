"""The finetuning loop of one fit (W2S student, strong SFT or ceiling): batches in a seeded order, timm's
optimiser and schedule, a validation loss after every epoch, a checkpoint after every epoch.

Deterministic and resumable: the order of epoch e is a permutation drawn from (seed, e), the learning rate
is a function of the update count, so a checkpoint (trained parameters, optimiser state, counters) is all a
killed fit needs to reach the very weights an uninterrupted one reaches (on the CPU). Under torchrun each
rank takes its share of every batch and the gradients are summed across ranks before each step.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from w2s_cli.distributed import barrier, world
from w2s_cli.errors import W2SError, printable
from w2s_cli.finetuning.network import Student, load_trained, read_tensors, save_tensors, trained_state
from w2s_cli.options.recipe import FLAGS, FinetuneRecipe, Loss, Select, schedule
from w2s_cli.progress import progress_bar, stderr
from w2s_cli.store.records import PrecisionRecord


class TensorInputs:
    """Cached inputs of the trained part (embeddings or a frozen prefix's activations), in memory."""

    def __init__(self, values: np.ndarray, shape: tuple[int, ...]) -> None:
        self.values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(-1, *shape)

    def __len__(self) -> int:
        return len(self.values)

    def batches(self, order: np.ndarray, size: int, dev: torch.device) -> Iterator[torch.Tensor]:
        for start in range(0, len(order), size):
            yield self.values[torch.as_tensor(order[start : start + size])].to(dev)


class ImageInputs:
    """Images of a data source, transformed in loader workers (timm's eval transform, or its train
    transform with augmentation) and finished on the device."""

    def __init__(self, source, sample_ids: np.ndarray, config: dict[str, Any], augment: bool, workers: int) -> None:
        import timm

        from w2s_cli.extraction.extract import ImageRows
        from w2s_cli.inputs.preprocess import split_transform

        if augment:
            self.transform, self.finish = timm.data.create_transform(**config, is_training=True), (lambda x: x)
        else:
            self.transform, self.finish = split_transform(config)
        self.rows = ImageRows(source, sample_ids, self.transform, tuple(config["input_size"]))
        self.workers = workers

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, order: np.ndarray, size: int, dev: torch.device) -> Iterator[torch.Tensor]:
        from w2s_cli.extraction.extract import quiet_worker

        plan = [order[s : s + size].tolist() for s in range(0, len(order), size)]
        loader = DataLoader(
            self.rows,
            batch_sampler=plan,
            num_workers=self.workers,
            pin_memory=dev.type == "cuda",
            persistent_workers=False,
            worker_init_fn=quiet_worker,
        )
        for x, errors in loader:
            bad = next((e for e in errors if e), None)
            if bad:
                raise W2SError(bad)
            x = self.finish(x.to(dev, non_blocking=True)).float()
            yield x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x


@dataclass
class Fit:
    """One fit's rows: inputs of the trained part and (len, C) float32 targets, split into train and val."""

    name: str
    inputs: Any  # TensorInputs | ImageInputs over the fit's rows (train then val positions index it)
    targets: np.ndarray
    train: np.ndarray  # positions in `inputs`
    val: np.ndarray


@dataclass
class FitLog:
    """What a fit did: the validation loss per epoch (epoch 0 = the LP-FT start), the chosen epoch."""

    history: list[dict[str, float]] = field(default_factory=list)
    chosen_epoch: int = 0
    updates: int = 0
    resumed_from: int | None = None

    def record(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "chosen_epoch": self.chosen_epoch,
            "updates": self.updates,
            "resumed_from_epoch": self.resumed_from,
        }


def row_losses(out: torch.Tensor, y: torch.Tensor, loss: Loss, aux: float = 0.0) -> torch.Tensor:
    """Per-row loss: squared error averaged over outputs (mse), or cross-entropy of the softmax (xent,
    logconf: mixed with weight `aux` with the cross-entropy to the row's own argmax)."""
    if loss == Loss.mse:
        return ((out - y) ** 2).mean(dim=1)
    logp = F.log_softmax(out, dim=1)
    ce = -(y * logp).sum(dim=1)
    if loss == Loss.logconf and aux > 0:
        hard = F.one_hot(out.detach().argmax(dim=1), out.shape[1]).to(logp.dtype)
        ce = (1 - aux) * ce + aux * -(hard * logp).sum(dim=1)
    return ce


def raw_outputs(
    student: Student, inputs, positions: np.ndarray, recipe: FinetuneRecipe, dev: torch.device
) -> np.ndarray:
    """The model's raw outputs (float64) on rows `positions` of `inputs`."""
    parts = []
    with torch.inference_mode(), _autocast(dev, recipe.precision):
        for x in inputs.batches(positions, max(recipe.batch_size, 256), dev):
            parts.append(student(x).double().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, student.head.out_features))


def outputs_of(raw: np.ndarray, loss: Loss) -> np.ndarray:
    """What the model predicts from its raw outputs: themselves (mse), or their softmax (cross-entropies)."""
    if loss == Loss.mse:
        return raw
    from scipy.special import softmax

    return softmax(raw, axis=1)


def _val_loss(student: Student, fit: Fit, recipe: FinetuneRecipe, dev: torch.device) -> float | None:
    """The loss to the targets on the validation rows (for logconf: its cross-entropy part)."""
    if len(fit.val) == 0:
        return None
    out = torch.from_numpy(raw_outputs(student, fit.inputs, fit.val, recipe, dev))
    y = torch.from_numpy(fit.targets[fit.val]).double()
    return float(row_losses(out, y, Loss.mse if recipe.loss == Loss.mse else Loss.xent).mean())


def precision_used(dev: torch.device, requested: str) -> PrecisionRecord:
    """What a finetune that asks for `requested` (fp32, bf16, fp16) runs on `dev`: AMP (autocast to bf16 or
    fp16, and for fp16 a gradient scaler) on a CUDA device only; plain fp32 anywhere else."""
    amp = requested != "fp32" and dev.type == "cuda"
    return PrecisionRecord(
        requested, requested if amp else "fp32", autocast=amp, grad_scaler=amp and requested == "fp16"
    )


def _autocast(dev: torch.device, precision: str):
    if not precision_used(dev, precision).autocast:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, 4, epoch]).permutation(n)


def train_fit(
    student: Student,
    fit: Fit,
    recipe: FinetuneRecipe,
    *,
    seed: int,
    folder: Path,
    identity: dict[str, Any],
    dev: torch.device,
    quiet: bool = False,
    keep_epochs: bool = False,
) -> FitLog:
    """Finetune `student` on `fit`'s training rows; leave it holding the chosen epoch's weights. keep_epochs:
    also write each epoch's trained parameters (`epoch_weights`), for the kernel at that point of the finetune."""
    w = world()
    if recipe.select == Select.best and len(fit.val) == 0:  # before anything is written (check_rows says it first)
        raise W2SError(f"{fit.name}: {FLAGS['select']} best needs validation rows, and this fit has none")
    steps = recipe.updates_per_epoch(len(fit.train))
    opt, sched = optimiser_and_schedule(student, recipe, steps)
    scaler = torch.amp.GradScaler("cuda") if precision_used(dev, recipe.precision).grad_scaler else None
    log, best = FitLog(), None
    ckpt = folder / "checkpoint.safetensors"
    start = _resume(ckpt, identity, student, opt, log)
    if start == 0:
        log.history.append({"epoch": 0, "val_loss": _val_loss(student, fit, recipe, dev)})
    best = trained_state(student) if recipe.select == Select.best else None
    if start > 0:
        best = _load_best(ckpt) if recipe.select == Select.best else None
        log.resumed_from = start
    total = recipe.epochs * steps
    with progress_bar(quiet or not w.main) as bar:
        task = bar.add_task(f"finetune {fit.name}", total=total, completed=start * steps)
        for epoch in range(start, recipe.epochs):
            running = 0.0
            order = fit.train[epoch_order(len(fit.train), seed, epoch)]
            for k, x in enumerate(_local_batches(fit, order, recipe.batch_size, w, dev)):
                sched.step_update(num_updates=log.updates)
                rows = order[k * recipe.batch_size : (k + 1) * recipe.batch_size]
                y = torch.from_numpy(fit.targets[rows[w.rank :: w.size]]).to(dev)
                aux = recipe.aux_weight * min(1.0, log.updates / max(recipe.aux_warmup * total, 1e-12))
                loss = _step(student, x, y, len(rows), recipe, aux, opt, scaler, dev)
                log.updates += 1
                value = float(loss)
                running = 0.9 * running + 0.1 * value if k else value
                bar.update(task, advance=1, description=f"finetune {fit.name} e{epoch + 1} loss {running:.4f}")
            log.history.append({"epoch": epoch + 1, "val_loss": _val_loss(student, fit, recipe, dev)})
            if recipe.select == Select.best and log.history[-1]["val_loss"] < min(
                h["val_loss"] for h in log.history[:-1]
            ):
                best = trained_state(student)
            if keep_epochs:
                save_weights(student, epoch_weights(folder, epoch + 1))
            _save_checkpoint(ckpt, identity, student, opt, log, best)
    log.chosen_epoch = _chosen(log, recipe)
    if recipe.select == Select.best and best is not None:
        load_trained(student, best)
    return log


def optimiser_and_schedule(student: Student, recipe: FinetuneRecipe, steps: int):
    """timm's optimiser over `student`'s parameters and the recipe's learning-rate schedule over `steps`
    updates an epoch (recipe.py's `schedule`, which FinetuneRecipe.check_rows also lays out before any work)."""
    import timm.optim

    opt = timm.optim.create_optimizer_v2(student, opt=recipe.opt, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return opt, schedule(opt, recipe, steps)


def _step(student: Student, x, y, batch: int, recipe: FinetuneRecipe, aux: float, opt, scaler, dev) -> float:
    """One update: this rank's rows' loss (normalised by the whole batch), gradients summed across ranks."""
    params = [p for p in student.parameters() if p.requires_grad]
    opt.zero_grad(set_to_none=True)
    loss = torch.zeros(())
    if x is not None:  # None: no row of this batch is this rank's; it adds nothing to the summed gradient
        with _autocast(dev, recipe.precision):
            out = student(x).float()
        loss = row_losses(out, y, recipe.loss, aux).sum() / batch
        (scaler.scale(loss) if scaler else loss).backward()
    _sum_gradients(params, world())
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return float(loss.detach())


def _local_batches(fit: Fit, order: np.ndarray, size: int, w, dev: torch.device) -> Iterator[torch.Tensor | None]:
    """This rank's share of each batch (rows k*size + rank :: world of batch k), one item per batch so that
    ranks step together; None where a short last batch leaves this rank no row."""
    if w.size == 1:
        yield from fit.inputs.batches(order, size, dev)
        return
    for s in range(0, len(order), size):
        mine = order[s : s + size][w.rank :: w.size]
        yield next(iter(fit.inputs.batches(mine, len(mine), dev))) if len(mine) else None


def _sum_gradients(params: list[torch.Tensor], w) -> None:
    if w.size == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def _chosen(log: FitLog, recipe: FinetuneRecipe) -> int:
    if recipe.select == Select.last or log.history[0]["val_loss"] is None:
        return log.history[-1]["epoch"]
    return min(log.history, key=lambda h: (h["val_loss"], h["epoch"]))["epoch"]


def epoch_weights(folder: Path, epoch: int) -> Path:
    """Where a fit kept its trained parameters after `epoch` (train_fit's keep_epochs)."""
    return Path(folder) / f"epoch-{epoch}.safetensors"


def save_weights(student: Student, path: Path) -> None:
    """The trained parameters (safetensors with their hash inside, written atomically by rank 0)."""
    if world().main:
        save_tensors(trained_state(student), path)


def _save_checkpoint(path: Path, identity, student: Student, opt, log: FitLog, best) -> None:
    """Trained parameters, optimiser state and counters after an epoch, written atomically (rank 0)."""
    if world().main:
        tensors = {f"param.{k}": v for k, v in trained_state(student).items()}
        if best is not None:
            tensors.update({f"best.{k}": v.contiguous() for k, v in best.items()})
        state = opt.state_dict()
        for i, s in state["state"].items():
            for key, v in s.items():
                tensors[f"opt.{i}.{key}"] = torch.as_tensor(v).contiguous()
        meta = {"identity": identity, "log": log.record(), "param_groups": state["param_groups"]}
        save_tensors(tensors, path, {"w2s_checkpoint": json.dumps(meta)})
    barrier()


def _resume(path: Path, identity, student: Student, opt, log: FitLog) -> int:
    """Load the checkpoint of this very fit if there is one; returns the epoch to start from. A damaged or
    foreign checkpoint, or one of other work, is not used: the fit starts over, and says so."""
    if not path.exists():
        return 0
    try:
        tensors, raw = read_tensors(path, "checkpoint")
        meta = json.loads(raw["w2s_checkpoint"])
        same = meta["identity"] == identity
    except W2SError as exc:
        return _start_over(f"{exc.message}; starting this fit over")
    except (KeyError, TypeError, ValueError):
        return _start_over(f"checkpoint {printable(path)}: not a w2s checkpoint; starting this fit over")
    if not same:
        return _start_over(f"checkpoint {printable(path)}: of other settings or inputs; starting this fit over")
    load_trained(student, {k[6:]: v for k, v in tensors.items() if k.startswith("param.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, key = k.split(".", 2)
            state.setdefault(int(i), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    saved = meta["log"]
    log.history, log.updates = saved["history"], saved["updates"]
    return int(log.history[-1]["epoch"])


def _start_over(note: str) -> int:
    if world().main:
        stderr.print(f"note: {note}")
    return 0


def _load_best(path: Path) -> dict[str, torch.Tensor] | None:
    tensors, _ = read_tensors(path, "checkpoint")
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return best or None
