"""`w2s finetune`: the strong backbone itself finetuned, three times with one recipe, on the split the
pipeline drew, beside (not instead of) the linear student of `fit-student`:

* W2S student: the N pseudo rows with the teacher's labels (validation: a held-out slice of those rows, with
  the teacher's labels: no true label of the pool is ever read for it);
* strong SFT:  the n labelled rows with their observed labels;
* ceiling:     the n + N rows with their observed labels.

LP-FT: each head starts from the linear student of the fit's training slice, the ridgeless fit on those rows
and targets in the strong shared basis that `fit-student` uses, mapped back to the embedding; so epoch 0 is a
linear student and every later epoch is what finetuning adds. The validation slice is held out of the start
head too, so every epoch, 0 included, is judged out of sample (with --val-fraction 0 epoch 0 is fit-student's
student itself). With `--train head` or `last:K`, the frozen part of the network runs once: its outputs for every
row are cached in activations/ beside the strong embeddings (sharded and resumable, like an
extraction) and shared by the three fits, by trials and by sweep points. The result has the schema of
`fit-student`'s, so report, run and sweep read it unchanged; test labels are read only to evaluate.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli.distributed import main_writes, world
from w2s_cli.errors import W2SError, printable
from w2s_cli.finetuning.job import FitDone, FitPlan, Job, Rows, precision_in_use, validation_split
from w2s_cli.finetuning.prefix import prefix_cache_path, prepare_prefix_cache  # noqa: F401  (their old home)
from w2s_cli.numerics.stats import as_targets, probabilities
from w2s_cli.options import DataOptions, ExtractOptions, Solver, SubspaceOptions
from w2s_cli.options.recipe import FinetuneRecipe, Loss
from w2s_cli.progress import running
from w2s_cli.stages.heads import fit_head, shared_basis, to_embedding_space
from w2s_cli.stages.student import result_meta
from w2s_cli.stages.summary import evaluate, member_errors
from w2s_cli.store import artifact as store
from w2s_cli.store.cache import Entry, arrays_sha256, key, obtain, read_entry, write_entry
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.locks import producing
from w2s_cli.store.outputs import check_output
from w2s_cli.store.records import (
    Basis,
    PseudoLabelsRecord,
    StudentRecord,
    Trial,
    read_record,
)

FITS = ("w2s", "strong_sft", "ceiling")
SHARED = ("strong_sft", "ceiling")  # neither depends on the teacher: reused through the fit cache
FIT_NAMES = {"w2s": "W2S", "strong_sft": "strong SFT", "ceiling": "ceiling"}
RESUME = (
    "rerun the same command to resume it: the frozen prefix's cache from its finished shards, each fit from "
    "its last finished epoch"
)


@running("a finetune", RESUME)
def finetune(
    pseudo_path: str | os.PathLike,
    strong: str | os.PathLike,
    out: str | os.PathLike,
    *,
    recipe: FinetuneRecipe | None = None,
    subspace: SubspaceOptions | None = None,
    data: DataOptions | None = None,
    extract: ExtractOptions | None = None,
    trained: tuple[str, ...] = FITS,
    fit_cache: Path | None = None,
    reuse: bool = True,
) -> Path:
    """Finetune the W2S student, strong SFT and ceiling; evaluate them with the teacher; write a `result`.
    `data`: where the images are now, when not where STRONG's record says; `extract`: device, batch size,
    workers and quiet for the frozen prefix's cache and the image loaders. `trained`: the fits to finetune
    (a proxy finetunes the W2S student alone); the others stay at their LP-FT start, and their records say so.
    `fit_cache`: the folder where finished strong SFT and ceiling fits are kept and, with `reuse`, looked for
    (`shared_fit`; run and sweep: `fit_cache_folder`); None: every fit is run."""
    start = time.perf_counter()
    recipe, sub_opts, extract = recipe or FinetuneRecipe(), subspace or SubspaceOptions(), extract or ExtractOptions()
    pseudo = store.load(pseudo_path, "pseudolabels", what="pseudo-labels")
    made = read_record(pseudo, PseudoLabelsRecord)
    out = check_output(out, inputs=[pseudo_path, strong])
    emb_s = EmbeddingSet(strong, "strong embeddings")
    store.require_same_samples(
        pseudo.meta, emb_s.meta, f"pseudo-labels {printable(pseudo.path)}", f"strong embeddings {printable(strong)}"
    )
    recipe.check_task(classification=emb_s.labels is not None)
    fits = training_sets(pseudo, emb_s)
    recipe.check_rows({name: len(f.rows) for name, f in fits.items()})  # before the basis, the network, any fit
    train_rows = np.concatenate([fits["strong_sft"].rows, fits["w2s"].rows])
    basis, basis_record, _ = shared_basis(
        emb_s, train_rows, sub_opts.parsed(), sub_opts.energy, len(fits["strong_sft"].rows)
    )
    from w2s_cli.finetuning.network import backbone_from_record

    bb = backbone_from_record(emb_s.meta, f"strong embeddings {printable(strong)}")
    _check_network(recipe, bb)
    test = np.asarray(pseudo["test_rows"])
    needed = np.unique(np.concatenate([test, train_rows]))
    job = Job.build(recipe, bb, emb_s, needed, test, extract, data=data, out=out)
    precision = precision_in_use(recipe, job.dev)
    identity = fits_identity(recipe, pseudo, emb_s, sub_opts)
    folder = Path(f"{out}.fits")
    seed = int(made.seed)
    slices = {name: validation_split(len(fits[name].rows), recipe.val_fraction, seed, k) for k, name in enumerate(FITS)}
    heads = {name: _lp_head(emb_s, basis, fits[name], slices[name][0], recipe.loss) for name in FITS}
    plans = {
        name: FitPlan(name, fits[name], slices[name], heads[name], folder / name, {**identity, "fit": name})
        for name in FITS
    }
    with producing(out):  # the fits' checkpoints and weights, and the result: one process at a time
        done = {  # an untrained fit (a proxy's) is its LP-FT start: never a cached fit, never cached
            name: run_fit(job, plans[name], seed, out, fit_cache, reuse) if name in trained else job.start(plans[name])
            for name in FITS
        }
        outputs, init, trial = _trial(pseudo, made, emb_s, test, fits, done)
        seconds = {**made.seconds, "finetune": round(time.perf_counter() - start, 3)}
        result = result_meta(
            pseudo,
            emb_s,
            out,
            student="finetune",
            strong_subspace=Basis(requested=sub_opts.subspace, **basis_record),
            fits={name: d.record for name, d in done.items()},
            trial=trial,
            seconds=seconds,
            analysis_note="finetuned students: the variance analysis is about linear fits on fixed features",
            student_record=StudentRecord(
                "finetune", recipe.record(), recipe.describe(), job.inputs_record, str(job.dev), precision
            ),
        )
        tensors = result_tensors(outputs, init, heads, test, basis)
        main_writes(lambda: store.save(store.Artifact("result", result.to_json(), tensors), out), out)
        remove_checkpoints(folder)
    return out


def fit_cache_folder(strong: str | os.PathLike) -> Path:
    """Where run and sweep keep their finished fits for reuse: fits/ beside the strong embeddings (like the
    frozen prefix's activations/), so that whatever shares those embeddings (trials, sweep points, teachers,
    a run and a sweep in one out-dir) shares the fits; in a study the embeddings are in its out-dir."""
    return Path(strong).parent / "fits"


def fit_identity(job: Job, plan: FitPlan, seed: int) -> dict[str, Any]:
    """What a fit's weights and test outputs depend on: the strong embeddings and the inputs of the trained
    part, the fit's rows and targets, its train/val positions, its LP-FT start head, the recipe, the seed (its
    validation slice and batch order), the world size, the device, the test rows and the versions that
    compute it. Not the teacher, unless through these (the W2S fit's targets are the teacher's labels)."""
    versions = store.package_versions()
    return {
        "fit": plan.name,
        "strong": job.emb_s.meta["artifact_id"],
        "inputs": {k: v for k, v in job.inputs_record.items() if k not in ("path", "relpath")},
        "rows": arrays_sha256(plan.rows.rows, plan.rows.targets),
        "split": arrays_sha256(*plan.split),
        "start_head": arrays_sha256(*plan.head),
        "recipe": job.recipe.record(),
        "seed": seed,
        "world_size": world().size,
        "device": job.dev.type,
        "test_rows": arrays_sha256(job.test),
        "versions": {k: versions.get(k) for k in ("w2s", "torch", "timm")},
    }


def run_fit(job: Job, plan: FitPlan, seed: int, out: Path, fit_cache: Path | None, reuse: bool) -> FitDone:
    """One fit: strong SFT and ceiling through the fit cache when there is one, the W2S fit (the teacher's)
    always run."""
    if fit_cache is None or plan.name not in SHARED:
        return job.run(plan, seed, out)
    return shared_fit(job, plan, seed, out, fit_cache, reuse)


def shared_fit(job: Job, plan: FitPlan, seed: int, out: Path, folder: Path, reuse: bool) -> FitDone:
    """A fit through the fit cache in `folder` (store/cache.py): a finished one of the same identity is
    reused (its test outputs and record as it computed them, its weights where it wrote them, the record
    saying `reused_from` that result), else it is run and its entry written for the next finetune."""
    identity = fit_identity(job, plan, seed)
    stem = Path(job.emb_s.path).name.removesuffix(".safetensors")
    entry = folder / f"{stem}.{plan.name}-{key(identity)[:16]}.safetensors"

    def make() -> FitDone:
        done = job.run(plan, seed, out)
        weights = Path(done.record["weights_path"])
        made = {
            "result": {
                "path": str(Path(out).resolve()),
                "relpath": os.path.relpath(Path(out).resolve(), folder.resolve()),
            },
            "weights": {"path": str(weights), "relpath": os.path.relpath(weights, folder.resolve())},
            "weights_file_sha256": store.file_sha256(weights),
            "record": done.record,
        }
        main_writes(lambda: write_entry(entry, identity, made, {"first": done.first, "last": done.last}), entry)
        return done

    return obtain(
        entry,
        lambda: _reused(read_entry(entry, identity), entry, out),
        make,
        reuse=reuse,
        say=lambda d: (
            f"{Path(d.record['weights_path']).parent} ({FIT_NAMES[plan.name]} fit of the same strong "
            "embeddings, rows, start head, recipe and seed)"
        ),
    )


def _reused(found: Entry | None, entry: Path, out: Path) -> FitDone | None:
    """The fit an entry keeps, as this finetune's (its weights relative to `out`; `reused_from` the result
    that ran it, unless that is `out` itself); None when its weights are gone or no longer the same file."""
    if found is None:
        return None
    weights = store.resolve(found.made["weights"], entry)
    if not weights.is_file() or store.file_sha256(weights) != found.made["weights_file_sha256"]:
        return None
    here = Path(out).resolve().parent
    record = {**found.made["record"], "weights": os.path.relpath(weights.resolve(), here)}
    record["weights_path"] = str(weights.resolve())
    source = store.resolve(found.made["result"], entry).resolve()
    if source != Path(out).resolve():
        record["reused_from"] = {"path": str(source), "relpath": os.path.relpath(source, here)}
    return FitDone(found.arrays["first"], found.arrays["last"], record)


def remove_checkpoints(folder: Path) -> None:
    """Once the result is written, the fits' checkpoints are no longer needed (their weights stay); rank 0."""
    if world().main:
        for name in FITS:
            (folder / name / "checkpoint.safetensors").unlink(missing_ok=True)


def fits_identity(recipe: FinetuneRecipe, pseudo, emb_s: EmbeddingSet, sub_opts: SubspaceOptions) -> dict[str, Any]:
    """What makes two runs of the fits the same work (for resuming from their checkpoints), less the fit's name."""
    return {
        "recipe": recipe.record(),
        "pseudolabels": pseudo.meta["artifact_id"],
        "strong": emb_s.meta["artifact_id"],
        "subspace": [sub_opts.subspace, sub_opts.energy],
        "world_size": world().size,
    }


def result_tensors(outputs: dict, init: dict, heads: dict, test: np.ndarray, basis) -> dict[str, Any]:
    """The result's tensors: the test outputs after finetuning and at epoch 0, the LP-FT start heads, the
    test rows and the strong shared basis."""
    tensors: dict[str, Any] = {f"test_output_{k}": np.asarray(v, np.float64) for k, v in outputs.items()}
    tensors.update({f"init_output_{k}": np.asarray(init[k], np.float64) for k in FITS})
    for k in FITS:  # the LP-FT start: each head on the embeddings (for a later linearisation at that point)
        tensors[f"start_coef_{k}"], tensors[f"start_intercept_{k}"] = heads[k]
    tensors.update({"test_rows": test, "strong_basis_mean": basis.mean})
    if basis.components is not None:
        tensors["strong_basis"] = basis.components
    return tensors


def _check_network(recipe: FinetuneRecipe, bb) -> None:
    """What the recipe needs of the network itself, before any fit: layers for LoRA to adapt."""
    from w2s_cli.finetuning.lora import lora_targets

    if recipe.spec.kind == "lora" and not lora_targets(bb.model):
        raise W2SError(
            f"--train {recipe.train}: {printable(bb.name)} has no linear or dense 1x1 conv layer for LoRA to adapt; "
            "use --train last:K or all"
        )


def _trial(pseudo, made: PseudoLabelsRecord, emb_s: EmbeddingSet, test: np.ndarray, fits: dict[str, Rows], done: dict):
    """The four models' test outputs after finetuning and at epoch 0, and the trial's metrics of both."""
    outputs = {"weak": np.asarray(pseudo["weak_test_output"], np.float64)}
    init = dict(outputs)
    for name, d in done.items():
        init[name], outputs[name] = d.first, d.last
    labels = emb_s.labels[test] if emb_s.labels is not None else None
    truth = emb_s.truth(test)
    start = dataclasses.replace(evaluate(init, truth, labels), n_test=None)  # the trial's n_test is its own
    trial = Trial(
        evaluate(outputs, truth, labels),
        seed=made.seed,
        n_labeled=len(fits["strong_sft"].rows),
        n_pseudo=len(fits["w2s"].rows),
        pseudo_label_accuracy=made.pseudo_label_accuracy,
        init=start,
        members=member_errors(pseudo, truth, labels),
    )
    return outputs, init, trial


def training_sets(pseudo: store.Artifact, emb_s: EmbeddingSet) -> dict[str, Rows]:
    """The three fits' rows and targets. The W2S student's are the pseudo rows and the teacher's labels only:
    the observed labels of those rows go to the ceiling and nowhere else."""
    C = emb_s.n_outputs
    labeled, pool = np.asarray(pseudo["labeled_rows"]), np.asarray(pseudo["pseudo_rows"])
    teacher = np.asarray(pseudo["pseudo_labels"], np.float64)
    if teacher.shape != (len(pool), C):
        raise W2SError(
            f"pseudo-labels {printable(pseudo.path)}: labels of shape {teacher.shape}, expected {(len(pool), C)}"
        )
    if not np.isfinite(teacher).all():
        bad = int(np.flatnonzero(~np.isfinite(teacher).all(axis=1))[0])
        raise W2SError(
            f"pseudo-labels {printable(pseudo.path)}: tensor 'pseudo_labels' holds NaN or inf (first: row {bad})"
        )
    Y_L = as_targets(pseudo["labeled_observed"], emb_s.n_classes)
    Y_P = as_targets(pseudo["pseudo_observed"], emb_s.n_classes)
    return {
        "w2s": Rows(pool, teacher),
        "strong_sft": Rows(labeled, Y_L),
        "ceiling": Rows(np.concatenate([labeled, pool]), np.vstack([Y_L, Y_P])),
    }


def _lp_head(emb_s: EmbeddingSet, basis, f: Rows, train: np.ndarray, loss: Loss) -> tuple[np.ndarray, np.ndarray]:
    """LP-FT: the linear student on the fit's training slice (positions `train` of its rows; the validation
    slice stays out, so that its loss judges epoch 0 out of sample like every later epoch) in the strong
    shared basis (ridgeless for mse, the soft-target logistic head for the cross-entropies), as
    (coef (width, C), intercept (C,)) on embeddings."""
    Z, targets = basis.transform(emb_s.rows(f.rows[train])), f.targets[train]
    if loss == Loss.mse:
        head = fit_head(Solver.ridgeless, Z, targets)
    else:
        head = fit_head(Solver.logistic, Z, probabilities(targets))
    return to_embedding_space(basis, *head.linear())
