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

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli.distributed import main_writes, world
from w2s_cli.errors import W2SError, printable
from w2s_cli.finetuning.recipe import FinetuneRecipe, Loss, held_out
from w2s_cli.numerics.stats import as_targets, evaluate, probabilities
from w2s_cli.options import DataOptions, ExtractOptions, Solver, SubspaceOptions
from w2s_cli.progress import running, stderr
from w2s_cli.stages.heads import fit_head, shared_basis, to_embedding_space
from w2s_cli.stages.student import result_meta
from w2s_cli.store import artifact as store
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.locks import agreed, producing
from w2s_cli.store.outputs import check_output
from w2s_cli.store.records import (
    EmbeddingsRecord,
    Metrics,
    PrecisionRecord,
    PseudoLabelsRecord,
    RecordError,
    StudentRecord,
    Trial,
    read_record,
)

FITS = ("w2s", "strong_sft", "ceiling")
RESUME = (
    "rerun the same command to resume it: the frozen prefix's cache from its finished shards, each fit from "
    "its last finished epoch"
)


@dataclasses.dataclass
class Rows:
    """One fit's training rows (row indices of the embeddings) and targets; nothing else reaches the fit."""

    rows: np.ndarray
    targets: np.ndarray


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
) -> Path:
    """Finetune the W2S student, strong SFT and ceiling; evaluate them with the teacher; write a `result`.
    `data`: where the images are now, when not where STRONG's record says; `extract`: device, batch size,
    workers and quiet for the frozen prefix's cache and the image loaders."""
    start = time.perf_counter()
    recipe, sub_opts, extract = recipe or FinetuneRecipe(), subspace or SubspaceOptions(), extract or ExtractOptions()
    pseudo = store.load(pseudo_path, "pseudolabels", what="pseudo-labels")
    made = read_record(pseudo, PseudoLabelsRecord)
    out = check_output(out, inputs=[pseudo_path, strong])
    emb_s = EmbeddingSet(strong, "strong embeddings")
    store.require_same_samples(
        pseudo.meta, emb_s.meta, f"pseudo-labels {printable(pseudo.path)}", f"strong embeddings {printable(strong)}"
    )
    _check_recipe(recipe, emb_s)
    fits = fit_rows(pseudo, emb_s)
    recipe.check_rows({name: len(f.rows) for name, f in fits.items()})  # before the basis, the network, any fit
    train_rows = np.concatenate([fits["strong_sft"].rows, fits["w2s"].rows])
    basis, basis_record, _ = shared_basis(
        emb_s, train_rows, sub_opts.parsed(), sub_opts.energy, len(fits["strong_sft"].rows)
    )
    from w2s_cli.finetuning.network import backbone_from_record, cut

    bb = backbone_from_record(emb_s.meta, f"strong embeddings {printable(strong)}")
    _check_network(recipe, bb)
    test = np.asarray(pseudo["test_rows"])
    job = Job(recipe, bb, emb_s, np.unique(np.concatenate([test, train_rows])), test, extract)
    job.inputs = _inputs(cut(bb.model, recipe.spec, bb.name), job, data, out)
    precision = precision_in_use(recipe, job.dev)
    identity = fits_identity(recipe, pseudo, emb_s, sub_opts)
    folder = Path(f"{out}.fits")
    seed = int(made.seed)
    slices = {name: validation_split(len(fits[name].rows), recipe.val_fraction, seed, k) for k, name in enumerate(FITS)}
    heads = {name: _lp_head(emb_s, basis, fits[name], slices[name][0], recipe.loss) for name in FITS}
    with producing(out):  # the fits' checkpoints and weights, and the result: one process at a time
        done = {
            name: job.run(
                name, fits[name], slices[name], heads[name], seed, folder / name, {**identity, "fit": name}, out
            )
            for name in FITS
        }
        outputs, init, trial = _trial(pseudo, made, emb_s, test, fits, done)
        seconds = {**made.seconds, "finetune": round(time.perf_counter() - start, 3)}
        result = result_meta(
            pseudo,
            emb_s,
            out,
            student="finetune",
            strong_subspace={"requested": sub_opts.subspace, **basis_record},
            fits={name: record for name, (_, _, record) in done.items()},
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


def _check_recipe(recipe: FinetuneRecipe, emb_s: EmbeddingSet) -> None:
    if recipe.loss != Loss.mse and emb_s.labels is None:
        raise W2SError(f"--loss {recipe.loss.value} needs classes; this dataset has numeric targets (use --loss mse)")


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
    for name, (first, last, _) in done.items():
        init[name], outputs[name] = first, last
    labels = emb_s.labels[test] if emb_s.labels is not None else None
    truth = emb_s.truth(test)
    start = {k: v for k, v in evaluate(init, truth, labels).items() if k != "n_test"}
    trial = Trial(
        Metrics.from_json(evaluate(outputs, truth, labels)),
        seed=made.seed,
        n_labeled=len(fits["strong_sft"].rows),
        n_pseudo=len(fits["w2s"].rows),
        pseudo_label_accuracy=made.pseudo_label_accuracy,
        init=Metrics.from_json(start),
    )
    return outputs, init, trial


def fit_rows(pseudo: store.Artifact, emb_s: EmbeddingSet) -> dict[str, Rows]:
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


class Job:
    """What the three fits share: the recipe, the pretrained network, the inputs of its trained part over
    every row they and the test need (`needed`, sorted), the device."""

    def __init__(self, recipe, bb, emb_s: EmbeddingSet, needed: np.ndarray, test: np.ndarray, extract) -> None:
        from w2s_cli.extraction.extract import resolve_device

        self.recipe, self.bb, self.emb_s, self.extract = recipe, bb, emb_s, extract
        self.needed, self.test = needed, test
        self.dev = resolve_device(extract.device)
        self.inputs: Any = None
        self.inputs_record: dict[str, Any] = {}

    def positions(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.needed, rows)

    def run(self, name: str, f: Rows, split, head, seed: int, folder: Path, identity: dict, out: Path):
        """One fit from its LP-FT head, on its (train, val) positions `split`: (test outputs at epoch 0, after
        finetuning, its record)."""
        import torch

        from w2s_cli.finetuning.lora import add_lora
        from w2s_cli.finetuning.network import Student, cut, set_trainable, tensors_sha256, trained_state
        from w2s_cli.finetuning.train import Fit, epoch_weights, predictions, raw_outputs, save_weights, train_fit

        recipe, spec = self.recipe, self.recipe.spec
        begin = time.perf_counter()
        torch.manual_seed(seed)  # LoRA's A matrices
        model = copy.deepcopy(self.bb.model)
        lora = add_lora(model, spec.size) if spec.kind == "lora" else []
        student = Student(model, cut(model, spec, self.bb.name), *head).to(self.dev)
        if self.dev.type == "cuda":
            student = student.to(memory_format=torch.channels_last)
        trained = set_trainable(student, spec, lora)
        train, val = split
        targets = np.zeros((len(self.needed), f.targets.shape[1]), np.float32)
        targets[self.positions(f.rows)] = f.targets if recipe.loss == Loss.mse else probabilities(f.targets)
        fit = Fit(name, self.inputs, targets, self.positions(f.rows[train]), self.positions(f.rows[val]))
        test = self.positions(self.test)
        first = predictions(raw_outputs(student, self.inputs, test, recipe, self.dev), recipe.loss)
        keep = name == "w2s"  # its kernel at every epoch is what predicting and stopping it read
        log = train_fit(
            student,
            fit,
            recipe,
            seed=seed,
            folder=folder,
            identity=identity,
            dev=self.dev,
            quiet=self.extract.quiet,
            keep_epochs=keep,
        )
        last = predictions(raw_outputs(student, self.inputs, test, recipe, self.dev), recipe.loss)
        weights = folder / "final.safetensors"
        main_writes(lambda: save_weights(student, weights), weights)
        record = {
            "solver": "finetune",
            "rows": len(f.rows),
            "train_rows": len(train),
            "val_rows": len(val),
            "trained_parameters": int(sum(p.numel() for p in student.parameters() if p.requires_grad)),
            "trained_tensors": len(trained),
            "weights": os.path.relpath(weights.resolve(), Path(out).resolve().parent),  # beside the result
            "weights_path": str(weights.resolve()),
            "weights_sha256": tensors_sha256(trained_state(student)),  # what kernel-check reads is checked
            "epoch_weights": [
                os.path.relpath(epoch_weights(folder, e).resolve(), Path(out).resolve().parent)
                for e in range(1, recipe.epochs + 1)
            ]
            if keep
            else None,
            "seconds": round(time.perf_counter() - begin, 3),
            **log.record(),
        }
        return first, last, record


def validation_split(n: int, fraction: float, seed: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (sorted) of a fit's training and validation rows: round(fraction * n) held out, drawn
    from (seed, 3, k) for the k-th fit."""
    order = np.random.default_rng([seed, 3, k]).permutation(n)
    n_val = held_out(n, fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


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


def data_options(made: EmbeddingsRecord) -> DataOptions:
    """Where an embeddings artifact's images came from, as recorded (older records: the request or name)."""
    if made.data is not None:
        return DataOptions(**made.data)
    if made.request is not None and "data" in made.request and made.request["data"]:
        return DataOptions(made.request["data"])
    return DataOptions(made.dataset["name"])


def open_images(emb_s: EmbeddingSet, data: DataOptions | None):
    """The data source of the strong embeddings, refused unless it still holds the very same images."""
    from w2s_cli.inputs.sources import open_source

    opts = data or data_options(emb_s.record)
    where = f"strong embeddings {printable(emb_s.path)}"
    try:
        source = open_source(opts)
    except W2SError as exc:
        raise W2SError(f"{where}: their images ({printable(opts.data)}) can no longer be read: {exc.message}") from None
    if source.fingerprint != emb_s.meta["dataset"]["fingerprint"]:
        raise W2SError(
            f"{where}: the images of {printable(opts.data)} are not the ones these embeddings were made from "
            "(dataset fingerprint differs); give the original with --data/--root"
        )
    return source


def _inputs(c, job: Job, data: DataOptions | None, out: Path):
    """The inputs of the trained part over job.needed: the strong embeddings themselves (`head`), the frozen
    prefix's cached outputs (`last:K`), or the images (`lora:R`, `all`). The record names a file of tensors
    as any input is referenced (absolute, relative to the result `out`, its artifact_id)."""
    from w2s_cli.finetuning.train import ImageInputs, TensorInputs

    emb_s, kind = job.emb_s, c.record["input"]
    if kind == "embeddings":
        job.inputs_record = {"input": "embeddings", **store.reference(emb_s.art, out)}
        return TensorInputs(emb_s.rows(job.needed), (emb_s.width,))
    if kind == "images":
        source = open_images(emb_s, data)
        ids = np.asarray(emb_s.art["sample_ids"])[job.needed]
        workers = job.extract.num_workers
        if workers is None:
            from w2s_cli.extraction.extract import default_workers

            workers = default_workers()
        job.inputs_record = {"input": "images", "data": dataclasses.asdict(data or data_options(emb_s.record))}
        return ImageInputs(source, ids, job.bb.data_config, job.recipe.augment, workers)
    path = prefix_cache(c, emb_s, job.bb, job.recipe, job.extract, data)
    cache = EmbeddingSet(path, "cached activations")
    shape = tuple(cache.meta["features"]["shape"])
    job.inputs_record = {"input": "activations", **store.reference(cache.art, out), "shape": list(shape), **c.record}
    return TensorInputs(cache.rows(job.needed), shape)


def prefix_cache_path(strong: Path, cut_record: dict[str, Any]) -> Path:
    """Where the frozen prefix's outputs for the strong embeddings at `strong` are cached: in a folder of their
    own beside them, so that a glob over a run's embeddings (strong-*.safetensors) does not catch them."""
    stem = Path(strong).name.removesuffix(".safetensors")
    cut_name = f"prefix-{cut_record['before_block']}of{cut_record['blocks']}"
    return Path(strong).parent / "activations" / f"{stem}.{cut_name}.safetensors"


@running("the frozen prefix's cache", "rerun the same command to resume it from its finished shards")
def prepare_prefix_cache(
    strong: str | os.PathLike, recipe: FinetuneRecipe, extract: ExtractOptions, data: DataOptions | None = None
) -> Path | None:
    """The frozen prefix's cache that finetuning STRONG with `recipe` reads, made now if missing (a sweep's
    executor runs it once, before the trials that share it); None when the recipe trains on the embeddings
    (`head`) or on the images (`lora:R`, `all`)."""
    from w2s_cli.finetuning.network import backbone_from_record, cut

    emb_s = EmbeddingSet(strong, "strong embeddings")
    _check_recipe(recipe, emb_s)
    if recipe.spec.kind in ("head", "lora", "all"):
        return None
    bb = backbone_from_record(emb_s.meta, f"strong embeddings {printable(strong)}")
    return prefix_cache(cut(bb.model, recipe.spec, bb.name), emb_s, bb, recipe, extract, data)


def prefix_cache(c, emb_s: EmbeddingSet, bb, recipe: FinetuneRecipe, extract, data: DataOptions | None) -> Path:
    """The frozen prefix's outputs for every row of the strong embeddings, beside them: reused when made
    from the same network and samples, else extracted (sharded and resumable, torchrun-ready)."""
    import torch

    with torch.inference_mode():
        shape = tuple(c.prefix(torch.zeros(1, *bb.input_size)).shape[1:])
    record = {"kind": "activations", **c.record, "shape": list(shape)}
    path = prefix_cache_path(emb_s.path, c.record)

    def same(made: EmbeddingsRecord) -> bool:
        return made.features == record and made.same_samples_and_weights(emb_s.record)

    def cached() -> bool:
        try:
            return path.exists() and same(EmbeddingsRecord.from_json(store.read_meta(path)))
        except (W2SError, RecordError):
            return False

    if not agreed(cached()):
        _check_cache_writable(path, emb_s, recipe)
        with producing(path):  # another w2s process making it: wait, then look again
            if not cached():
                _extract_prefix(c, emb_s, bb, recipe, extract, data, path, record)
                if not same(read_record(store.load(path, "embeddings"), EmbeddingsRecord)):
                    raise W2SError(f"{printable(path)}: cached activations that do not match {printable(emb_s.path)}")
                return path
    stderr.print(f"reusing {path} (the frozen prefix's outputs)")
    return path


def _extract_prefix(c, emb_s: EmbeddingSet, bb, recipe, extract, data, path: Path, record: dict[str, Any]) -> None:
    """The frozen prefix's outputs for every row of the strong embeddings, extracted to `path`."""
    from w2s_cli.extraction.extract import extract as run_extract
    from w2s_cli.finetuning.network import cut, spec_from_record

    spec, seed = spec_from_record(emb_s.meta)
    source = open_images(emb_s, data)
    run_extract(
        data or data_options(emb_s.record),
        spec,
        path,
        extract,
        limit=emb_s.record.limit,
        seed=seed,
        source=source,
        features=lambda built: (cut(built.model, recipe.spec, bb.name).prefix, record),
    )


def _check_cache_writable(path: Path, emb_s: EmbeddingSet, recipe: FinetuneRecipe) -> None:
    """Refuse, before any work, a prefix cache that cannot be written where it belongs (beside the strong
    embeddings: one cache per strong embeddings, shared by every finetune, trial and sweep point)."""
    import tempfile

    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".w2s-", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise W2SError(
            f"cannot write the frozen prefix's cache {printable(path)} ({exc.strerror or exc}): --train "
            f"{recipe.train} caches the frozen part's outputs in activations/ beside the strong embeddings "
            f"{printable(emb_s.path)}, so that every finetune of them shares it; copy the strong embeddings to a "
            "writable folder and give that copy with --strong"
        ) from None
