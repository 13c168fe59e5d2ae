"""The frozen prefix's cache: with `--train head` or `last:K` the frozen part of the strong network runs once,
its outputs for every row of the strong embeddings kept in activations/ beside them (sharded and resumable
like an extraction, torchrun-ready) and shared by the three fits, trials and sweep points; and the images a
finetune reads, checked to be the ones its embeddings were made from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from w2s_cli.errors import W2SError, printable
from w2s_cli.options import DataOptions, ExtractOptions
from w2s_cli.options.recipe import FinetuneRecipe
from w2s_cli.progress import running
from w2s_cli.store import artifact as store
from w2s_cli.store.cache import obtain
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.records import EmbeddingsRecord, RecordError, read_record


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
    recipe.check_task(classification=emb_s.labels is not None)
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

    def same(made: EmbeddingsRecord) -> bool:  # its identity: the cut and shape, the samples and weights
        return made.features == record and made.same_samples_and_weights(emb_s.record)

    def cached() -> Path | None:
        try:
            return path if path.exists() and same(EmbeddingsRecord.from_json(store.read_meta(path))) else None
        except (W2SError, RecordError):
            return None

    def make() -> Path:
        _extract_prefix(c, emb_s, bb, recipe, extract, data, path, record)
        if not same(read_record(store.load(path, "embeddings"), EmbeddingsRecord)):
            raise W2SError(f"{printable(path)}: cached activations that do not match {printable(emb_s.path)}")
        return path

    return obtain(
        path,
        cached,
        make,
        say=lambda p: f"{p} (the frozen prefix's outputs)",
        prepare=lambda: _check_cache_writable(path, emb_s, recipe),
    )


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
