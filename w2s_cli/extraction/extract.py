"""Extraction: penultimate pooled embeddings (or a stage's pooled feature map) of every sample, batched
under torch.inference_mode, written as atomic shards so that a killed run resumes, split over torchrun ranks,
finished as one safetensors file."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from w2s_cli.distributed import World, barrier, world
from w2s_cli.errors import W2SError
from w2s_cli.extraction.shards import ShardPlan
from w2s_cli.inputs.backbones import Backbone, create_backbone, embed_batch
from w2s_cli.inputs.preprocess import split_transform
from w2s_cli.inputs.sources import ArrayImages, ImageSource, UnreadableImage, open_source, subset
from w2s_cli.options import BackboneSpec, DataOptions, Device, ExtractOptions, Precision, Preprocess
from w2s_cli.progress import progress_bar, stderr
from w2s_cli.store import artifact as store
from w2s_cli.store.locks import agreed, producing
from w2s_cli.store.outputs import check_output
from w2s_cli.store.records import EmbeddingsRecord

# given the backbone: the function whose outputs an extraction writes, and its record
FeatureMap = Callable[[Backbone], tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]]


class ImageRows(Dataset):
    """The chosen samples of a source, transformed for the model. An unreadable image yields a blank tensor
    and its error message (raised in the main process as one clean line, not as a worker traceback)."""

    def __init__(self, source: ImageSource, sample_ids: np.ndarray, transform, blank_shape: tuple[int, ...]) -> None:
        self.source, self.sample_ids, self.transform, self.blank_shape = source, sample_ids, transform, blank_shape

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, str]:
        try:
            return self.transform(self.source.load(int(self.sample_ids[k]))), ""
        except UnreadableImage as exc:
            return torch.zeros(self.blank_shape, dtype=torch.uint8), str(exc)
        except Exception as exc:  # a transform failing on odd image data
            return torch.zeros(self.blank_shape, dtype=torch.uint8), f"sample {int(self.sample_ids[k])}: {exc!r}"


def quiet_worker(worker_id: int) -> None:
    """A loader worker's start (worker_init_fn). Ctrl-C (or SIGTERM) reaches the whole process group and only
    the main process answers it (one line, `w2s: interrupted`), shutting its workers down as it unwinds;
    without this a forked worker runs w2s's own handler and prints a traceback, and one killed by SIGTERM
    makes torch raise in the main process. A worker still ends with its parent (torch's watchdog). Its
    connection errors are not shown either (`_quiet_connection_errors`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.excepthook = _quiet_connection_errors


def _quiet_connection_errors(kind, value, tb) -> None:
    """A loader worker's excepthook: a broken connection (OSError, EOFError) is the main process going away,
    e.g. multiprocessing's file-descriptor server thread (resource_sharer) printing a traceback when Ctrl-C
    interrupts the main process while it takes a batch's shared memory; other errors print as usual (the
    worker's own errors reach the main process through the loader, not through this hook)."""
    if not issubclass(kind, (OSError, EOFError)):
        sys.__excepthook__(kind, value, tb)


def resolve_device(device: Device | str, w: World | None = None) -> torch.device:
    device = Device(device)
    w = w or World()
    cuda, mps = (
        torch.cuda.is_available(),
        bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
    )
    if device == Device.auto:
        device = Device.cuda if cuda else Device.mps if mps else Device.cpu
    if device == Device.cuda and not cuda:
        raise W2SError("--device cuda: no CUDA device is available")
    if device == Device.mps and not mps:
        raise W2SError("--device mps: no MPS device is available")
    if device == Device.cuda:
        return torch.device("cuda", w.local_rank % torch.cuda.device_count())
    return torch.device(device.value)


def default_workers(w: World | None = None) -> int:
    """Loader workers per process: the spare cores (one drives the model), at most 8."""
    size = (w or World()).size
    return max(1, min(8, (os.cpu_count() or 2) // size - 1))


def _autocast(dev: torch.device, precision: Precision):
    if precision == Precision.fp32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == Precision.bf16 else torch.float16
    if dev.type == "cpu" and dtype == torch.float16:
        raise W2SError("--precision fp16 needs a GPU; use bf16 on the CPU")
    return torch.autocast(dev.type, dtype=dtype)


def embed_shards(
    backbone: Backbone,
    source: ImageSource,
    sample_ids: np.ndarray,
    plan: ShardPlan,
    todo: list[int],
    options: ExtractOptions,
    dev: torch.device,
    w: World,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    inputs: Callable[[list[int]], torch.Tensor] | None = None,
) -> None:
    """Embed the rows of the shards `todo` and write each shard as soon as it is complete. `features`: what
    to write per sample instead of the penultimate embedding (flattened), e.g. a frozen prefix's output.
    `inputs`: what `features` takes for a batch of rows, when not the images (a frozen prefix's cached outputs)."""
    model = backbone.model.to(dev).to(memory_format=torch.channels_last)
    embed = features or (lambda x: embed_batch(model, x, backbone.stage))
    loader, finish = batch_loader(
        backbone, source, sample_ids, shard_batches(plan, todo, options.batch_size), options, dev, w, inputs
    )
    total = sum(plan.rows(k)[1] - plan.rows(k)[0] for k in todo)
    pending = iter(todo)
    k = next(pending, None)
    buffer: list[torch.Tensor] = []
    filled = 0

    # a shard is checked and written (with fsync) by a thread while the next one is embedded; at most one
    # is in flight, and leaving the block (done, error or interrupt) waits for it, so no write is cut short
    with (
        ThreadPoolExecutor(max_workers=1) as writer,
        progress_bar(options.quiet or not w.main) as bar,
        torch.inference_mode(not getattr(embed, "needs_grad", False)),  # gradient features need autograd
        _autocast(dev, options.precision),
    ):
        task = bar.add_task(f"extract {backbone.name}", total=total)
        written = None
        for x, errors in loader:
            bad = next((e for e in errors if e), None)
            if bad:
                raise W2SError(bad)
            x = finish(x.to(dev, non_blocking=True))
            x = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
            z = embed(x).flatten(1).float()  # stays on the device until its shard is complete: no sync per batch
            buffer.append(z)
            filled += len(z)
            bar.advance(task, len(z))
            start, stop = plan.rows(k)
            if filled == stop - start:
                block = torch.cat(buffer).cpu().numpy()
                if written is not None:
                    written.result()  # the previous shard's error, if any, surfaces here
                written = writer.submit(store_shard, plan, backbone.name, k, block)
                buffer, filled, k = [], 0, next(pending, None)
        if written is not None:
            written.result()


def store_shard(plan: ShardPlan, model_name: str, k: int, block: np.ndarray) -> None:
    """Write shard `k` of `plan` (refused if `model_name` produced a non-finite value)."""
    if not np.isfinite(block).all():
        raise W2SError(f"{model_name} produced non-finite embeddings (NaN/inf); check the weights")
    plan.write(k, block)


def shard_batches(plan: ShardPlan, todo: list[int], batch_size: int) -> list[list[int]]:
    """The row positions of each batch of the shards `todo`, in order. Batches never straddle shards, so a
    resumed run sees exactly the same batches."""
    batches = []
    for k in todo:
        start, stop = plan.rows(k)
        batches += [list(range(s, min(s + batch_size, stop))) for s in range(start, stop, batch_size)]
    return batches


def batch_loader(
    backbone: Backbone,
    source: ImageSource,
    sample_ids: np.ndarray,
    batches: list[list[int]],
    options: ExtractOptions,
    dev: torch.device,
    w: World,
    inputs: Callable[[list[int]], torch.Tensor] | None,
) -> tuple[Any, Callable[[torch.Tensor], torch.Tensor]]:
    """The (batch, errors) of each of `batches`, and what finishes a batch on the device: the given `inputs`,
    batches sliced from an in-memory image array (preprocessed on the device), or the loader workers'."""
    workers = default_workers(w) if options.num_workers is None else options.num_workers
    resize_on_device = options.preprocess == Preprocess.device and isinstance(source.load, ArrayImages)
    transform, finish = split_transform(backbone.data_config, resize_on_device)
    if inputs is not None:  # computed before (a frozen prefix's cached outputs): no images to load
        return ((inputs(b), ()) for b in batches), (lambda x: x)
    if resize_on_device:  # same-size images in memory: batches sliced from the array, no loader workers
        return array_batches(source.load.images, sample_ids, batches, dev), finish
    loader = DataLoader(
        ImageRows(source, sample_ids, transform, backbone.input_size),
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=quiet_worker,
    )
    return loader, finish


def array_batches(images: np.ndarray, sample_ids: np.ndarray, batches: list[list[int]], dev: torch.device):
    """(uint8 (B, 3, H, W) batch, no errors) for each batch of row positions, sliced from an in-memory image
    array (m, H, W) or (m, H, W, 3) by a background thread that keeps a few pinned batches ready."""

    def host(rows: list[int]) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images[sample_ids[rows]]))
        x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = x.contiguous()
        return x.pin_memory() if dev.type == "cuda" else x

    with ThreadPoolExecutor(max_workers=2) as pool:
        ahead = [pool.submit(host, b) for b in batches[:4]]
        for i in range(len(batches)):
            x, ahead[i] = ahead[i].result(), None
            if i + 4 < len(batches):
                ahead.append(pool.submit(host, batches[i + 4]))
            yield x, ()


def identity(backbone: Backbone, source: ImageSource, sample_ids: np.ndarray, options: ExtractOptions) -> dict:
    """What makes two extractions the same work (for resuming): weights, preprocessing, data, samples, and
    the batch layout and arithmetic (which change float order)."""
    cut = {} if backbone.stage is None else {"stage": backbone.stage}  # (absent for a whole model, as before)
    return {
        "model": backbone.name,
        **cut,
        "state_dict_sha256": backbone.weights["state_dict_sha256"],
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in backbone.data_config.items()},
        "dataset_fingerprint": source.fingerprint,
        "sample_ids_sha256": store.ids_sha256(sample_ids),
        "batch_size": options.batch_size,
        "preprocess": Preprocess(options.preprocess).value,
        "precision": Precision(options.precision).value,
    }


def extract(
    data: DataOptions,
    backbone: BackboneSpec,
    out: str | os.PathLike,
    options: ExtractOptions | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    request: dict[str, Any] | None = None,
    source: ImageSource | None = None,
    features: FeatureMap | None = None,
) -> Path:
    """Run a backbone over a dataset and write an `embeddings` artifact at `out`; returns its path.

    Rerunning the same extraction after it was killed resumes from its last complete shard. Under torchrun
    every rank embeds its own shards (k = rank, rank + world, ...) and rank 0 writes the artifact. Another
    w2s process extracting to the same `out` is waited for; when it made this very extraction meanwhile,
    its artifact is kept.
    `source`: the already opened data source (saves opening it again). `features`: given the backbone, the
    function whose (flattened) outputs are written instead of the embeddings, and its record (the
    artifact's `features`); e.g. the frozen prefix of a finetune. A function with a true `needs_grad`
    attribute runs with autograd on (not under inference_mode); a record's `measured` entry is kept in the
    artifact but not compared when resuming; one with an `inputs` attribute (not None) takes
    `inputs(row positions)` instead of images (gradient features reading a finetune's cached prefix outputs).
    """
    options = options or ExtractOptions()
    if features is not None and backbone.stage is not None:
        raise W2SError("a backbone cut at a stage gives embeddings only (not gradient or prefix features)")
    kind, _, arg = data.data.partition(":")
    out = check_output(out, inputs=[backbone.weights, arg if kind == "csv" else None])
    found = _file_stamp(out)  # what is at `out` now, to tell what another process makes meanwhile
    w = world()
    dev = resolve_device(options.device, w)  # refuse an unavailable device or precision before any slow work
    _autocast(dev, options.precision)
    if source is None:
        source = open_source(data)
    bb = create_backbone(backbone, seed=seed)
    fn, feature_record = features(bb) if features is not None else (None, {"kind": "embeddings"})
    width = bb.width if fn is None else _width(bb, fn)
    sample_ids = subset(source, limit, seed)
    # what was measured while making the features (e.g. a projection's distortion) does not identify the work
    same = {k: v for k, v in feature_record.items() if k != "measured"}
    work = {**identity(bb, source, sample_ids, options), "features": same}
    plan = ShardPlan(out, work, len(sample_ids), options.shard_rows)
    with producing(out):  # the output and its shards: one process at a time
        if agreed(w.main and made_meanwhile(plan, found)):
            stderr.print(f"{out}: made meanwhile by another w2s process (the same extraction); kept")
            return out
        start_time = time.perf_counter()
        if w.main:
            note = plan.prepare()
            if note:
                stderr.print(f"note: {note}")
        barrier()
        todo = shards_to_do(plan, w, out)
        try:
            embed_shards(bb, source, sample_ids, plan, todo, options, dev, w, fn, getattr(fn, "inputs", None))
        except W2SError:
            if w.main and not any(plan.done(k) for k in range(plan.count)):
                plan.remove()  # nothing to resume: leave no work folder behind
            raise
        barrier()
        if w.main:
            missing = [k for k in range(plan.count) if not plan.done(k)]
            if missing:
                raise W2SError(f"shard {missing[0]} of {out} is missing after every rank finished; rerun to resume")
            record = {"features": feature_record, "width": width, "data": dataclasses.asdict(data), "request": request}
            seconds = time.perf_counter() - start_time
            _finish(plan, bb, source, sample_ids, options, dev, w, limit, seed, record, seconds)
        barrier()
    return out


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, modification time) of the file at `path`, None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def made_meanwhile(plan: ShardPlan, found: tuple[int, int, int] | None) -> bool:
    """Whether the artifact at plan.out is not the file `found` there when this extraction started, but one
    written since by another process doing this very work (its record carries the work's hash)."""
    if _file_stamp(plan.out) in (None, found):
        return False
    try:
        return store.read_meta(plan.out).get("extraction", {}).get("work") == plan.work_sha256()
    except W2SError:
        return False


def shards_to_do(plan: ShardPlan, w: World, out: Path) -> list[int]:
    """This rank's shards (k = rank, rank + world, ...) not yet done; rank 0 says where a resumed run starts."""
    done = [k for k in range(plan.count) if plan.done(k)]
    todo = [k for k in range(plan.count) if k % w.size == w.rank and k not in done]
    if done and w.main:
        first = min(set(range(plan.count)) - set(done), default=plan.count)
        row = plan.rows(first)[0] if first < plan.count else plan.n_rows
        stderr.print(f"resuming {out} from row {row}: {len(done)} of {plan.count} shards already done")
    return todo


def _width(bb: Backbone, fn: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """Values per sample that `fn` gives (its own `width`, else one forward pass on a blank input)."""
    if hasattr(fn, "width"):
        return int(fn.width)
    with torch.inference_mode(not getattr(fn, "needs_grad", False)):
        return int(fn(torch.zeros(1, *bb.input_size)).numel())


def _model_record(bb: Backbone) -> tuple[dict[str, Any], str]:
    """The embeddings record's `model` (a cut model: its stage, recorded only then) and how rows were pooled."""
    if bb.stage is None:
        return {"name": bb.name, "weights": bb.weights, "width": bb.width}, (
            "timm forward_features + forward_head(pre_logits=True)"
        )
    model = {"name": bb.name, "weights": bb.weights, "width": bb.width, "stage": bb.stage}
    return model, f"timm forward_intermediates(indices=[{bb.stage}]) + global average pool"


def _finish(plan, bb, source, sample_ids, options, dev, w, limit, seed, record, seconds) -> None:
    width = record.pop("width")
    extraction = {
        "device": dev.type,
        "batch_size": options.batch_size,
        "shard_rows": options.shard_rows,
        "world_size": w.size,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(sample_ids) / max(seconds, 1e-9), 2),
        "work": plan.work_sha256(),  # what made these rows: another process waiting for them reuses them
    }
    model, pooling = _model_record(bb)
    made = EmbeddingsRecord(
        model=model,
        preprocessing={
            **{k: list(v) if isinstance(v, tuple) else v for k, v in bb.data_config.items()},
            "grey_to_rgb": True,
            "transform": "timm.data.create_transform(eval)",
            "mode": Preprocess(options.preprocess).value,
            "precision": Precision(options.precision).value,
        },
        dataset=source.record(),
        sample_ids_sha256=store.ids_sha256(sample_ids),
        n_samples=len(sample_ids),
        limit=limit,
        **record,
        provenance={
            **store.base_meta("embeddings", seed),
            "pooling": pooling,
            "dtype": "float32",
            "extraction": extraction,
        },
    )
    tensors: dict[str, Any] = {
        "embeddings": store.Chunked((len(sample_ids), width), np.dtype(np.float32), plan.blocks()),
        "sample_ids": sample_ids,
        "labels" if source.task == "classification" else "targets": source.targets[sample_ids],
    }
    if source.split is not None:
        tensors["split"] = source.split[sample_ids]
    store.save(store.Artifact("embeddings", made.to_json(), tensors), plan.out)
    plan.remove()
    sys.stderr.flush()
