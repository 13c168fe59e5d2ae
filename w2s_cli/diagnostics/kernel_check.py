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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2s_cli.errors import W2SError, printable
from w2s_cli.numerics.stats import mean_and_sem, pgr_from_rows, ratio, squared_errors
from w2s_cli.store.records import KernelCheck, KernelFit, Linearised, Measured

FITS = ("w2s", "strong_sft", "ceiling")


def kernel_check(
    result: str | os.PathLike,
    *,
    grads: dict[str, str | os.PathLike] | None = None,
    device: str = "auto",
    batch_size: int = 256,
) -> KernelCheck:
    """The first-order check of every fit of the finetune `result` (see the module doc), a `KernelCheck`.
    `grads`: fit -> gradient features made at that fit's LP-FT start (`w2s extract --features grad --init
    RESULT --init-fit FIT`); for each, the linearised finetune's test outputs and error are added."""
    import torch

    from w2s_cli.extraction.extract import resolve_device
    from w2s_cli.finetuning.network import backbone_from_record

    art, rec, recipe, emb_s = _read(result)
    grads = grads or {}
    unknown = sorted(set(grads) - set(FITS))
    if unknown:
        raise W2SError(f"--grads {printable(unknown[0])}=...: the fits are {', '.join(FITS)}")
    grads = {name: _checked_grads(art, result, rec, emb_s, name, path) for name, path in grads.items()}  # no work yet
    test = np.asarray(art["test_rows"])
    x = torch.from_numpy(np.ascontiguousarray(_trained_inputs(result, rec, emb_s, test), np.float32))
    dev = resolve_device(device)
    bb = backbone_from_record(emb_s.meta, f"strong embeddings {printable(emb_s.path)}")
    truth = emb_s.truth(test)
    rows = _fit_rows(result, rec, emb_s) if grads else None
    fits, errors = {}, {}
    for name in FITS:
        head = (np.asarray(art[f"start_coef_{name}"]), np.asarray(art[f"start_intercept_{name}"]))
        weights = _fit_weights(result, rec, name)
        moved = _one_fit(copy.deepcopy(bb.model), bb.name, recipe, head, weights, x, dev, batch_size, fit=name)
        lin = None
        if name in grads:
            moved.outputs["linearised"], lin = linearised(art, rec, emb_s, rows, name, grads[name])
        errors[name] = {k: squared_errors(v, truth) for k, v in moved.outputs.items()}
        fits[name] = KernelFit(
            trained_parameters=moved.trained_parameters,
            weight_change=moved.weight_change,
            output_change_rms=moved.output_change_rms,
            unexplained=moved.unexplained,
            chosen_epoch=rec.fits[name].chosen_epoch,
            stored_outputs_gap=float(np.abs(moved.f1 - art[f"test_output_{name}"]).max()),
            error={k: _mean_se(e) for k, e in errors[name].items()},
            linearised=lin,
        )
    weak = squared_errors(np.asarray(art["test_output_weak"], np.float64), truth)
    kinds = ["start", "finetuned", "first_order"] + (["linearised"] if {"w2s", "ceiling"} <= set(grads) else [])
    pgr = {k: Measured(*pgr_from_rows(weak, errors["w2s"][k], errors["ceiling"][k])) for k in kinds}
    return KernelCheck(
        result=str(Path(result).resolve()),  # absolute, like every path this check reports
        recipe=recipe.describe(),
        n_test=len(test),
        error_weak=_mean_se(weak),
        fits=fits,
        pgr=pgr,
    )


def _read(result: str | os.PathLike):
    """The finetune result (artifact, record, recipe) and its strong embeddings, or one clear error."""
    from w2s_cli.options.recipe import FinetuneRecipe
    from w2s_cli.store import artifact as store
    from w2s_cli.store.embeddings import find
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
    return art, rec, recipe, find(rec.provenance["strong_embeddings"], result, None, "strong embeddings")


def _fit_weights(result, rec, name: str) -> tuple[Path, str | None]:
    """Where fit `name`'s finetuned weights are (recorded relative to the result, and absolute), and the hash
    of their tensors the result recorded (None in records of older w2s)."""
    from w2s_cli.store import artifact as store

    extra = rec.fits[name].extra
    ref = {"relpath": extra["weights"], "path": extra.get("weights_path") or extra["weights"]}
    return store.resolve(ref, result), extra.get("weights_sha256")


def _trained_inputs(result, rec, emb_s, rows: np.ndarray) -> np.ndarray:
    """What the trained part took for `rows`: the frozen prefix's cached outputs, or the embeddings (head)."""
    read = rec.student.tensors_read
    if read is None or read.input != "activations":
        return emb_s.rows(rows)
    if read.shape is None:
        raise W2SError(f"{printable(result)}: its record does not say the shape of the activations it trained on")
    return _trained_cache(result, rec, emb_s).rows(rows).reshape(len(rows), *read.shape)


def _trained_cache(result, rec, emb_s):
    """The frozen prefix's cached outputs a finetune result trained on (an EmbeddingSet), found as any
    recorded input is (beside the result, else at its absolute path; a record of an older w2s holds a path
    relative to where the finetune ran: that, else the cache's place beside the strong embeddings), and
    refused unless they are the very ones it read (their artifact_id; older records: the same kind of
    activations of the same samples through the same weights)."""
    from w2s_cli.finetuning.prefix import prefix_cache_path
    from w2s_cli.store import artifact as store
    from w2s_cli.store.embeddings import EmbeddingSet

    read = rec.student.tensors_read
    path = store.resolve(read.ref, result)
    if not path.is_file() and "relpath" not in read.ref:
        path = prefix_cache_path(emb_s.path, rec.student.inputs)
    if not path.is_file():
        raise W2SError(
            f"{printable(result)}: the cached activations it trained on ({printable(read.ref['path'])}) are gone"
        )
    cache = EmbeddingSet(path, "cached activations")
    made, wanted = cache.record, {k: rec.student.inputs.get(k) for k in ("before_block", "blocks", "shape")}
    if read.ref.get("artifact_id", cache.meta["artifact_id"]) != cache.meta["artifact_id"] or not (
        made.feature_kind == "activations"
        and {k: (made.features or {}).get(k) for k in wanted} == wanted
        and made.same_samples_and_weights(emb_s.record)
    ):
        raise W2SError(
            f"{printable(result)}: the cached activations at {printable(path)} are not the ones it trained on "
            "(made again since, from other samples or weights?)"
        )
    return cache


def _fit_rows(result, rec, emb_s):
    """The three fits' rows and targets, from the pseudo-labels the finetune read."""
    from w2s_cli.stages.finetune import training_sets
    from w2s_cli.store import artifact as store

    pseudo = store.load(store.resolve(rec.provenance["pseudolabels"], result), "pseudolabels", what="pseudo-labels")
    return training_sets(pseudo, emb_s)


def _checked_grads(art, result, rec, emb_s, fit: str, grads: str | os.PathLike):
    """The gradient features given for fit `fit` (an EmbeddingSet), refused unless the linearised finetune can
    use them (see `grads_belong`), before any network runs."""
    from w2s_cli.store.embeddings import EmbeddingSet

    where = f"--grads {fit}={printable(grads)}"
    if rec.student.loss != "mse":
        raise W2SError(f"{where}: the linearised finetune is of squared loss; this finetune used another")
    g = EmbeddingSet(grads, "gradient features")
    grads_belong(g, art, rec, emb_s, fit, where=where, result=result)
    return g


def linearised(art, rec, emb_s, rows, fit: str, g) -> tuple[np.ndarray, Linearised]:
    """The linearised finetune of fit `fit` on its test rows: its LP-FT start f0 plus the ridgeless fit of the
    residual targets - f0 on the gradient features `g` (made at that start, checked by `_checked_grads`), in
    their energy basis (`auto`, 0.9, over the n + N rows, as fit-student's), over the fit's own rows."""
    from w2s_cli.options import Solver
    from w2s_cli.stages.heads import fit_head, shared_basis

    coef, intercept = np.asarray(art[f"start_coef_{fit}"]), np.asarray(art[f"start_intercept_{fit}"])

    def start(r: np.ndarray) -> np.ndarray:
        return emb_s.rows(r).astype(np.float64) @ coef + intercept

    train = np.concatenate([rows["strong_sft"].rows, rows["w2s"].rows])
    basis, record, _ = shared_basis(g, train, "auto", 0.9, len(rows["strong_sft"].rows))
    f = rows[fit]
    head = fit_head(Solver.ridgeless, basis.transform(g.rows(f.rows)), f.targets - start(f.rows))
    c, b = head.linear()
    test = np.asarray(art["test_rows"])
    out = start(test) + basis.transform(g.rows(test)) @ c + b
    return out, Linearised(str(Path(g.path).resolve()), len(f.rows), record)


def grads_belong(g, art, rec, emb_s, fit: str, *, where: str, result) -> None:
    """Refuse gradient features `g` that are not of this finetune's fit `fit`: made at another start (of
    another result, or of another of its fits), for another trained set, through another network (weights,
    input size) or of other samples than its strong embeddings `emb_s`."""
    from w2s_cli.options.recipe import TrainSpec

    made = g.record
    made_at, made_fit = made.grad_start
    if made_at is None or made_at != art.meta["artifact_id"]:
        raise W2SError(f"{where}: not gradient features made with --init {printable(result)}")
    if made_fit != fit:
        raise W2SError(f"{where}: made at the start of fit {printable(made_fit)}, not of {fit}")
    if made.grad_epoch != "start":
        raise W2SError(f"{where}: made after epoch {made.grad_epoch} of that fit, not at its start")
    trained, theirs = str(TrainSpec.parse(rec.student.recipe["train"])), (made.features or {}).get("train")
    if theirs != trained:
        raise W2SError(
            f"{where}: gradient features of --train {printable(theirs)}, but this finetune trained {trained} "
            f"(make them with --train {trained})"
        )
    mine, other = emb_s.record.signature, made.signature
    if any(mine[k] != other[k] for k in ("model", "state_dict_sha256", "input_size")):
        raise W2SError(
            f"{where}: made through another network ({printable(other['model'])}, weights "
            f"{other['state_dict_sha256'][:12]}, input {other['input_size']}) than this finetune's "
            f"({printable(mine['model'])}, weights {mine['state_dict_sha256'][:12]}, input {mine['input_size']})"
        )
    if mine["dataset_fingerprint"] != other["dataset_fingerprint"] or not np.array_equal(
        np.asarray(g.art["sample_ids"]), np.asarray(emb_s.art["sample_ids"])
    ):
        raise W2SError(f"{where}: not the samples of the strong embeddings {printable(emb_s.path)}")


def _mean_se(e: np.ndarray) -> Measured:
    return Measured(*mean_and_sem(list(e)))


@dataclass(frozen=True)
class Moved:
    """How far one fit moved from its start: its trained parameters, |θ1 - θ0| / |θ0|, the rms output change
    and the share J dθ leaves unexplained; its test outputs (start, finetuned, first order) and f(x; θ1)."""

    trained_parameters: int
    weight_change: float | None
    output_change_rms: float
    unexplained: Measured
    outputs: dict[str, np.ndarray]
    f1: np.ndarray


def _one_fit(model, name: str, recipe, head, weights, x, dev, batch_size: int, *, fit: str) -> Moved:
    """θ₀ (the start head on the pretrained backbone) and θ₁ (the finetuned weights: (path, recorded hash)) of
    one fit: movement, outputs f₀, f₁, first order f₀ + JΔθ on the rows x, and the unexplained share of the
    change."""
    import torch
    from torch.func import functional_call, jvp

    from w2s_cli.finetuning.network import Student, cut, read_tensors, set_trainable
    from w2s_cli.finetuning.train import outputs_of

    student = Student(model, cut(model, recipe.spec, name), *head).to(dev)
    names = set_trainable(student, recipe.spec, [])
    named = dict(student.named_parameters())
    theta0 = {n: named[n].detach().clone() for n in names}
    path, sha256 = weights
    if not path.exists():
        raise W2SError(f"finetuned weights {printable(path)} not found (moved without the result's .fits folder?)")
    stored, _ = read_tensors(path, f"finetuned weights of fit {fit}", like=theta0, sha256=sha256)
    theta1 = {k: v.to(dev) for k, v in stored.items()}
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
    outputs = {k: outputs_of(v, recipe.loss) for k, v in (("start", f0), ("finetuned", f1), ("first_order", lin))}
    return Moved(
        trained_parameters=int(sum(p.numel() for p in theta0.values())),
        weight_change=moved / size if size else None,
        output_change_rms=float(np.sqrt(change.mean())),
        unexplained=Measured(
            math.sqrt(share) if share is not None else None,
            # delta method through the square root: se(sqrt R) = se(R) / (2 sqrt R)
            share_se / (2 * math.sqrt(share)) if share and share_se is not None else None,
        ),
        outputs=outputs,
        f1=outputs_of(f1, recipe.loss),
    )
