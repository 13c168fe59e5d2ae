"""The strong network as finetuning sees it: rebuilt from its embeddings' record (same weights, checked by
hash), cut into a frozen prefix (run once, its outputs cached) and a trained suffix, with a linear head.

The network stays in eval mode throughout: batch norm keeps its pretrained statistics (its affine weights
train when their layer does), dropout and drop-path are off. A finetune is then a deterministic function of
the trained parameters, step 0 reproduces the extracted embeddings, and the linearised view (gradient
features) describes the same function.

Cuts (`last:K`) are defined for timm's EfficientNet/MobileNet-style models (conv_stem, bn1, blocks, conv_head,
bn2) and ViT-style models (patch_embed, blocks, norm); blocks are counted flat across stages. `head`, `lora:R`
and `all` work for any timm model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from w2s_cli.errors import W2SError, printable
from w2s_cli.extraction.extract import embed_batch
from w2s_cli.inputs.backbones import Backbone, create_backbone
from w2s_cli.options import BackboneSpec
from w2s_cli.options.recipe import TrainSpec


def spec_from_record(meta: dict[str, Any]) -> tuple[BackboneSpec, int]:
    """The backbone an embeddings artifact was made with (model name, weights, input size) and the
    extraction's seed (of its --limit draw and of random weights). Embeddings of a model cut at a stage are
    refused: finetuning trains the whole network's embedding."""
    if meta["model"].get("stage") is not None:
        raise W2SError(
            f"these embeddings are of {printable(meta['model']['name'])} cut after stage {meta['model']['stage']}; "
            "finetuning needs a whole network (a cut model can be a weak teacher, or a probed strong model)"
        )
    weights = meta["model"]["weights"]
    source = weights.get("source")
    size = meta["preprocessing"]["input_size"][-1]
    if source == "file":
        spec = BackboneSpec(meta["model"]["name"], size, weights["file"])
    else:
        spec = BackboneSpec(meta["model"]["name"], size, pretrained=source != "random")
    return spec, int(weights.get("init_seed", meta.get("seed") or 0))


def backbone_from_record(meta: dict[str, Any], where: str) -> Backbone:
    """The timm model an embeddings artifact was made with, refused unless its weights hash to the recorded
    state dict."""
    spec, seed = spec_from_record(meta)
    try:
        bb = create_backbone(spec, seed=seed)
    except W2SError as exc:
        raise W2SError(f"{where}: their network cannot be rebuilt ({exc.message})") from None
    if bb.weights["state_dict_sha256"] != meta["model"]["weights"]["state_dict_sha256"]:
        raise W2SError(
            f"{where}: the weights of {printable(spec.model)} found now ({bb.weights.get('source')}) are not the ones "
            "these embeddings were made with (state-dict hash differs)"
        )
    return bb


def flat_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's blocks in forward order, flattened across stages (EfficientNet: blocks[stage][block])."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        return []
    flat: list[nn.Module] = []
    for b in blocks:
        flat.extend(b) if isinstance(b, nn.Sequential) else flat.append(b)
    return flat


def _family(model: nn.Module) -> str | None:
    if all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        return "efficientnet"
    if all(hasattr(model, a) for a in ("patch_embed", "_pos_embed", "blocks", "norm")):
        return "vit"
    return None


@dataclass
class Cut:
    """Where the network is cut: `prefix(images)` gives what the trained part takes (cached for `head` and
    `last:K`), `suffix(that)` the embedding; `trained` are the backbone modules whose parameters train."""

    prefix: Callable[[torch.Tensor], torch.Tensor]
    suffix: Callable[[torch.Tensor], torch.Tensor]
    trained: list[nn.Module] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def cached(self) -> bool:
        """Whether the prefix is frozen (run once, its outputs cached) rather than the identity on images."""
        return self.record["input"] != "images"


def cut(model: nn.Module, spec: TrainSpec, name: str) -> Cut:
    """The cut that `--train spec` asks for, or one clear error."""
    if spec.kind == "head":
        return Cut(lambda x: embed_batch(model, x), lambda a: a, [], {"input": "embeddings"})
    if spec.kind in ("all", "lora"):
        return Cut(lambda x: x, lambda x: embed_batch(model, x), [model], {"input": "images"})
    blocks, family = flat_blocks(model), _family(model)
    if family is None:
        raise W2SError(
            f"--train last:K: {printable(name)} is not an EfficientNet/MobileNet-style or ViT-style timm model "
            "(no blocks to cut); use --train head, lora:R or all"
        )
    K = spec.size
    if K > len(blocks):
        raise W2SError(f"--train last:{K}: {printable(name)} has only {len(blocks)} blocks")
    first, rest = blocks[: len(blocks) - K], blocks[len(blocks) - K :]
    if family == "efficientnet":
        stem, tail = [model.conv_stem, model.bn1], [model.conv_head, model.bn2]
    else:
        stem, tail = [model.patch_embed, model._pos_embed, model.patch_drop, model.norm_pre], [model.norm]

    def prefix(x: torch.Tensor) -> torch.Tensor:
        for m in stem + first:
            x = m(x)
        return x

    def suffix(a: torch.Tensor) -> torch.Tensor:
        for m in rest + tail:
            a = m(a)
        return model.forward_head(a, pre_logits=True)

    trained = rest + [m for m in tail if isinstance(m, nn.Module)]
    return Cut(prefix, suffix, trained, {"input": "activations", "before_block": len(first), "blocks": len(blocks)})


class Student(nn.Module):
    """The finetuned model: the trained part of the backbone, then a linear head (C outputs)."""

    def __init__(self, backbone: nn.Module, c: Cut, coef: np.ndarray, intercept: np.ndarray) -> None:
        super().__init__()
        self.backbone, self.cut = backbone, c
        self.head = nn.Linear(coef.shape[0], coef.shape[1])
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(coef.T, dtype=torch.float32))
            self.head.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))
        self.backbone.eval()

    def train(self, mode: bool = True) -> Student:  # the backbone stays in eval mode (see the module doc)
        return self

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.head(self.cut.suffix(a))


def set_trainable(student: Student, spec: TrainSpec, lora_names: list[str]) -> list[str]:
    """Freeze everything but what `spec` trains; return the names of the trained parameters (sorted)."""
    for p in student.parameters():
        p.requires_grad_(False)
    student.head.requires_grad_(True)
    if spec.kind == "all":
        student.backbone.requires_grad_(True)
    elif spec.kind == "last":
        for m in student.cut.trained:
            m.requires_grad_(True)
    elif spec.kind == "lora":
        named = dict(student.backbone.named_parameters())
        for n in lora_names:
            named[n].requires_grad_(True)
    return sorted(n for n, p in student.named_parameters() if p.requires_grad)


def trained_state(student: Student) -> dict[str, torch.Tensor]:
    """The trained parameters (what a checkpoint and the final weights hold)."""
    return {n: p.detach().clone().contiguous() for n, p in student.named_parameters() if p.requires_grad}


def load_trained(student: Student, state: dict[str, torch.Tensor]) -> None:
    named = dict(student.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            named[n].copy_(t)


# weights files outside the artifact format (a fit's final weights, its checkpoint) -----------------------------
HASH_KEY = "w2s_tensors_sha256"  # in the file's safetensors metadata: the hash of its own tensors


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A content hash of named tensors (names, dtypes, shapes and bytes, in name order): what a weights file
    or checkpoint records of itself, and a fit's record of its final weights."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{list(t.shape)}\n".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, meta: dict[str, str] | None = None) -> None:
    """`tensors` as a safetensors file at `path` (written atomically), its own hash in its metadata."""
    from safetensors.torch import save_file

    from w2s_cli.store.artifact import atomic_output

    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={**(meta or {}), HASH_KEY: tensors_sha256(tensors)})


def read_tensors(
    path: str | os.PathLike,
    role: str,
    *,
    like: dict[str, torch.Tensor] | None = None,
    sha256: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (on the CPU) and metadata of a weights file w2s wrote (`save_tensors`), or one W2SError
    naming the file and its `role`: missing, unreadable, truncated, damaged (its tensors no longer hash to
    the hash written with them, or to `sha256`, the hash a record holds), or foreign (other tensor names or
    shapes than `like`)."""
    from safetensors import SafetensorError, safe_open

    where = f"{role} {printable(path)}"
    try:  # the library checks the header against the file's length: a truncated file fails here
        if not Path(path).is_file():
            raise W2SError(f"{where}: not found" if not Path(path).exists() else f"{where}: not a file")
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except OSError as exc:
        raise W2SError(f"{where}: cannot read ({exc.strerror or type(exc).__name__})") from None
    except (SafetensorError, ValueError, RuntimeError):
        raise W2SError(f"{where}: truncated or damaged (not a readable safetensors file)") from None
    found = tensors_sha256(tensors)
    if meta.get(HASH_KEY, found) != found:
        raise W2SError(f"{where}: damaged (its tensors no longer match the hash written with them)")
    if sha256 is not None and found != sha256:
        raise W2SError(f"{where}: not the weights its result recorded (their hash differs)")
    if like is not None:
        if sorted(tensors) != sorted(like):
            raise W2SError(f"{where}: holds {len(tensors)} tensors, not the {len(like)} this recipe trains")
        bad = next((n for n in sorted(like) if tensors[n].shape != like[n].shape), None)
        if bad is not None:
            shape, wanted = list(tensors[bad].shape), list(like[bad].shape)
            raise W2SError(f"{where}: tensor {printable(bad)} has shape {shape}, not {wanted}")
    return tensors, meta
