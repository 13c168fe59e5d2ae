"""`w2s extract --features grad`: gradient features (w2s_cli.finetuning.gradients) written as an ordinary
embeddings artifact through extract()'s machinery (sharded, resumable, torchrun-ready), so `intrinsic-dim`
(the finetuning dimension d^FT), `train-weak` and `fit-student` (the linearised finetune) read them unchanged.

The start point is the LP-FT head of a finetune result (`--init`, one of its fits), else a seeded random head
(`default_head`). The record states the trained set, the start, how outputs enter, the projection, and the
projection's inner-product distortion measured at extraction time on the first rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

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
from w2s_cli.inputs.backbones import Backbone
from w2s_cli.inputs.sources import ImageSource, open_source, subset
from w2s_cli.options import BackboneSpec, DataOptions, ExtractOptions
from w2s_cli.options.recipe import TrainSpec
from w2s_cli.progress import running, stderr
from w2s_cli.store.records import TensorsRead

FITS = ("w2s", "strong_sft", "ceiling")
DISTORTION_ROWS = 64


class Start(NamedTuple):
    """A point of a finetune: its LP-FT start head (coef (width, C), intercept (C,)), its record (with the inputs
    the trained part read), the result's seed (that of its LoRA adapters), the tensors file its trained part
    read (StudentRecord.tensors_read, its `ref` holding where the file is now), if any, the signature of the
    strong embeddings it finetuned (the network: model, weights, input size; the samples), and the trained
    parameters to load on top of the start (`weights`, a safetensors file; None: the start itself, epoch 0)."""

    head: tuple[np.ndarray, np.ndarray] | None
    record: dict[str, Any] | None
    seed: int
    read: TensorsRead | None = None
    strong: dict[str, Any] | None = None
    weights: Path | None = None


def parse_epoch(text: str | int, *, option: str = "--init-epoch") -> str | int:
    """--init-epoch (or predict's --epoch, `option`): start (the LP-FT start, epoch 0), final (the weights the
    fit kept) or an epoch number."""
    value = str(text).strip()
    if value in ("start", "final"):
        return value
    if value.isdigit():
        return 0 if int(value) == 0 else int(value)
    raise W2SError(f"{option} must be start, final or an epoch number, not '{printable(value)}'")


def epoch_weights_file(
    init: str | os.PathLike, result, fit: str, epoch: str | int, *, option: str = "--init-epoch"
) -> Path | None:
    """The trained parameters of fit `fit` of the finetune result `init` after `epoch` (None: the start)."""
    if epoch in ("start", 0):
        return None
    extra = result.fits[fit].extra
    owner = Path(init).resolve().parent
    if epoch == "final":
        return owner / extra["weights"]
    kept = extra.get("epoch_weights") or []
    if not 1 <= int(epoch) <= len(kept):
        what = f"epochs 1-{len(kept)} and final" if kept else "only its start and final weights (epochs not kept)"
        raise W2SError(f"{option} {epoch}: fit {fit} of {printable(init)} has {what}")
    return owner / kept[int(epoch) - 1]


def start_head(init: str | os.PathLike, fit: str, out: str | os.PathLike, epoch: str | int = "start") -> Start:
    """Fit `fit` of the finetune result `init` at `epoch` (see `Start`, `parse_epoch`), its record's paths
    (absolute, and relative to the gradient features to be written at `out`)."""
    from w2s_cli.finetuning.prefix import prefix_cache_path
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
    if not art.has(f"start_coef_{fit}"):
        raise W2SError(f"--init {printable(init)}: holds no LP-FT start head of fit {fit} (made by an older w2s)")
    head = (np.asarray(art[f"start_coef_{fit}"], np.float64), np.asarray(art[f"start_intercept_{fit}"], np.float64))
    read, inputs = result.student.tensors_read, dict(result.student.inputs)
    strong = result.provenance.get("strong_embeddings") or {}
    if read is not None:  # where that file is now; a record of an older w2s: else beside the strong embeddings
        where = store.resolve(read.ref, init)
        if not where.is_file() and "relpath" not in read.ref and read.input == "activations" and strong:
            where = prefix_cache_path(store.resolve(strong, init), inputs)
        inputs.update(store.rebase({**read.ref, "path": str(where)}, init, out))
        read = read._replace(ref={**read.ref, "path": inputs["path"]})
    record = {
        "kind": "finetune result",
        **store.reference(art, out),  # every artifact has its content hash (artifact_id)
        "fit": fit,
        "strong_model": result.strong_model,
        "recipe_train": result.student.recipe["train"],
        "inputs": inputs,
    }
    weights = epoch_weights_file(init, result, fit, epoch)
    if weights is not None:
        if not weights.is_file():
            raise W2SError(f"--init {printable(init)}: the weights of fit {fit} at epoch {epoch} are gone")
        record["epoch"] = epoch
        if epoch == "final":
            record["chosen_epoch"] = result.fits[fit].chosen_epoch
    return Start(head, record, int(art.meta["seed"]), read, strong.get("signature"), weights)


def cached_prefix(
    read: TensorsRead | None, c, bb: Backbone, source: ImageSource, ids: np.ndarray, out: str | os.PathLike
) -> tuple[Callable[[list[int]], torch.Tensor], dict[str, Any]] | None:
    """The frozen prefix's outputs that a finetune read (`read`: Start.read, its path where the file is now),
    as a function of the extraction's row positions (rows of `ids`), and their record (a reference relative
    to the features to be written at `out`); None unless they are still there, the very file the finetune
    read (its artifact_id, when recorded), made by the same weights and cut from the same images, and hold
    every sample."""
    from w2s_cli.store import artifact as store
    from w2s_cli.store.embeddings import EmbeddingSet

    if read is None or not Path(read.ref["path"]).is_file():
        return None
    path = Path(read.ref["path"])
    try:
        cache = EmbeddingSet(path, "cached activations")
    except W2SError:
        return None
    if read.ref.get("artifact_id", cache.meta["artifact_id"]) != cache.meta["artifact_id"]:
        return None  # made again since the finetune read it
    made = cache.record
    feats = made.features or {"kind": "embeddings"}
    shape = tuple(made.feature_shape or [cache.width])
    wanted = {"kind": "activations", **c.record, "shape": list(shape)} if c.record["input"] == "activations" else None
    if (
        made.model["weights"]["state_dict_sha256"] != bb.weights["state_dict_sha256"]
        or list(made.preprocessing["input_size"]) != list(bb.input_size)
        or made.dataset["fingerprint"] != source.fingerprint
        or feats != (wanted or {"kind": "embeddings"})
    ):
        return None
    order = np.argsort(cache.art["sample_ids"], kind="stable")
    where = np.searchsorted(cache.art["sample_ids"], ids, sorter=order)
    where = order[np.minimum(where, len(order) - 1)]
    if not np.array_equal(np.asarray(cache.art["sample_ids"])[where], ids):
        return None

    def rows(positions: list[int]) -> torch.Tensor:
        return torch.from_numpy(cache.rows(where[positions])).reshape(-1, *shape)

    return rows, {**store.reference(cache.art, out), "shape": list(shape)}


def load_point(student, names: list[str], weights: Path, init) -> None:
    """Load a finetune's trained parameters at a later point onto `student` (built at its start), read
    through the one weights loader (damage is one line): refused unless they are exactly the parameters this
    trained set names."""
    from w2s_cli.finetuning.network import load_trained, read_tensors

    state, _ = read_tensors(weights, f"--init {printable(init)}: finetuned weights")
    if sorted(state) != sorted(names):
        raise W2SError(
            f"--init {printable(init)}: {printable(weights)} holds {len(state)} tensors, not the {len(names)} "
            "this trained set has (give the --train of that finetune)"
        )
    load_trained(student, state)


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


def start_point(
    bb: Backbone, C: int, lp: Start, init: str | os.PathLike | None, proj_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The head (coef (width, C), intercept (C,)) the gradients are taken at: the LP-FT head of `init` (`lp`),
    refused unless it was made for this very backbone (name, width, weights, input size), else
    `default_head`."""
    if lp.head is None:
        return default_head(bb.width, C, proj_seed)
    width, model = lp.head[0].shape[0], str(lp.record["strong_model"])
    if width != bb.width or model != bb.name:
        raise W2SError(
            f"--init {printable(init)}: a finetune of {printable(model)} (width {width}), not of "
            f"{printable(bb.name)} (width {bb.width})"
        )
    made = lp.strong or {}  # older results without the signature: the name and width only
    weights, size = made.get("state_dict_sha256"), made.get("input_size")
    if (weights is not None and weights != bb.weights["state_dict_sha256"]) or (
        size is not None and list(size) != list(bb.input_size)
    ):
        raise W2SError(
            f"--init {printable(init)}: a finetune of {printable(model)} with weights {str(weights)[:12]} at input "
            f"{size}, not of these ({bb.weights['state_dict_sha256'][:12]} at {list(bb.input_size)}): give the "
            "strong network it finetuned (--weights, --image-size, --pretrained as its strong embeddings were made)"
        )
    return lp.head


def measure_distortion(
    fn: GradientFeatures,
    bb: Backbone,
    source: ImageSource,
    ids: np.ndarray,
    options: ExtractOptions,
    cached: Callable[[list[int]], torch.Tensor] | None,
) -> dict[str, Any]:
    """The projection's inner-product distortion on the first DISTORTION_ROWS samples (`distortion`), read
    from the frozen prefix's cached outputs when there are (`cached`), else from the images."""
    from w2s_cli.extraction.extract import resolve_device

    first = list(range(min(DISTORTION_ROWS, len(ids))))
    dev = resolve_device(options.device)
    x = cached(first).to(dev) if cached else first_images(bb, source, ids[first], dev)
    return distortion(fn, x)


@running("gradient features", "rerun the same command to resume them from their finished shards")
def extract_gradients(
    data: DataOptions,
    backbone: BackboneSpec,
    out: str | os.PathLike,
    options: ExtractOptions | None = None,
    *,
    train: str,
    init: str | os.PathLike | None = None,
    init_fit: str = "w2s",
    init_epoch: str | int = "start",
    proj_dim: int | None = 2048,
    proj_seed: int = 0,
    limit: int | None = None,
    seed: int = 0,
    request: dict[str, Any] | None = None,
) -> Path:
    """Write, for every sample, the projected gradient of s(x) with respect to what `--train train` trains, at
    fit `init_fit` of the finetune `init` after `init_epoch` (start: its LP-FT head on the pretrained network;
    final: its kept weights; K: after epoch K), else at `default_head`, as an embeddings artifact at `out`.
    `proj_dim` None writes the exact gradients (small models only: a test's reference)."""
    from w2s_cli.extraction.extract import extract

    spec = TrainSpec.parse(train)
    if proj_dim is not None and proj_dim < 1:
        raise W2SError(f"--proj-dim must be at least 1, got {proj_dim}")
    lp = start_head(init, init_fit, out, parse_epoch(init_epoch)) if init is not None else Start(None, None, seed)
    options = options or ExtractOptions()
    source = open_source(data)

    def features(bb: Backbone):
        start = start_point(bb, n_outputs(source), lp, init, proj_seed)
        student, names = gradient_student(bb.model, bb.name, spec, start, lp.seed)
        if lp.weights is not None:
            load_point(student, names, lp.weights, init)
        ids = subset(source, limit, seed)
        cached = cached_prefix(lp.read, student.cut, bb, source, ids, out)
        if cached:
            stderr.print(f"reading {cached[1]['path']} (the frozen prefix's outputs the finetune read)")
        xi = output_signs(start[0].shape[1], proj_seed)
        fn = GradientFeatures(student, names, xi, proj_dim, proj_seed, cached[0] if cached else None)
        measured = measure_distortion(fn, bb, source, ids, options, cached[0] if cached else None)
        n_params = sum(p.numel() for n, p in student.named_parameters() if p.requires_grad)
        record = {
            "kind": "grad",
            "train": str(spec),
            "trained": {"tensors": len(names), "parameters": int(n_params)},
            "inputs": {"kind": "cached prefix outputs", **cached[1]} if cached else {"kind": "images"},
            "init": lp.record or {"kind": "default", "head": "N(0, 1/width) coef, zero intercept", "seed": proj_seed},
            "lora_seed": lp.seed if spec.kind == "lora" else None,
            "outputs": OUTPUTS,
            "output_signs": [int(v) for v in fn.xi.tolist()],
            "projection": fn.record(),
            "measured": {"distortion": measured},
        }
        return fn, record

    return extract(
        data, backbone, out, options, limit=limit, seed=seed, request=request, source=source, features=features
    )


class FinetunedEmbeddings:
    """The function an extraction writes for a finetuned network: its penultimate embedding (the trained
    part's output, before the head) at a point of a finetune: the after-kernel of its head. `inputs`: row
    positions -> the frozen prefix's outputs the finetune cached (then the function takes those); else
    images."""

    def __init__(self, student, inputs: Callable[[list[int]], torch.Tensor] | None) -> None:
        self.student, self.inputs = student, inputs
        self.width = student.head.in_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = x if self.inputs is not None else self.student.cut.prefix(x)
        return self.student.cut.suffix(a)


def extract_finetuned(
    data: DataOptions,
    backbone: BackboneSpec,
    out: str | os.PathLike,
    options: ExtractOptions | None = None,
    *,
    init: str | os.PathLike,
    init_fit: str = "w2s",
    init_epoch: str | int = "final",
    limit: int | None = None,
    seed: int = 0,
) -> Path:
    """Write, for every sample, the penultimate embedding of fit `init_fit` of the finetune `init` after
    `init_epoch` (final: its kept weights; K: after epoch K; start: the pretrained network) as an embeddings
    artifact at `out`: the finetuned network's own embeddings, read from the frozen prefix's cache where the
    finetune cached it."""
    from w2s_cli.extraction.extract import extract
    from w2s_cli.store import artifact as store
    from w2s_cli.store.records import ResultRecord

    lp = start_head(init, init_fit, out, parse_epoch(init_epoch))
    spec = TrainSpec.parse(ResultRecord.from_json(store.read_meta(init)).student.recipe["train"])
    options = options or ExtractOptions()
    source = open_source(data)

    def features(bb: Backbone):
        start = start_point(bb, n_outputs(source), lp, init, 0)
        student, names = gradient_student(bb.model, bb.name, spec, start, lp.seed)
        if lp.weights is not None:
            load_point(student, names, lp.weights, init)
        cached = cached_prefix(lp.read, student.cut, bb, source, subset(source, limit, seed), out)
        if cached:
            stderr.print(f"reading {cached[1]['path']} (the frozen prefix's outputs the finetune read)")
        record = {
            "kind": "finetuned",
            "train": str(spec),
            "inputs": {"kind": "cached prefix outputs", **cached[1]} if cached else {"kind": "images"},
            "init": lp.record,
        }
        return FinetunedEmbeddings(student, cached[0] if cached else None), record

    return extract(data, backbone, out, options, limit=limit, seed=seed, source=source, features=features)
