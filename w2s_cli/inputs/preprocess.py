"""Preprocessing: timm's eval transform (from the model's own data config), cut between loader workers and
the model's device.

* `timm` (default): workers run timm's PIL steps (resize, centre crop) and ship uint8 tensors; the division
  by 255 and the normalisation run on the device with the same arithmetic as timm's whole transform
  (tested equal), for a quarter of the bytes between processes.
* `device`: for sources of same-size images held in memory (Fashion-MNIST, CIFAR, ...), workers only decode
  to uint8 at the native size; resize (bicubic, antialiased), centre crop and normalisation run batched on
  the device. Faster on a GPU, not bit-identical to PIL's bicubic (the difference is measured in the
  README). Sources of image files keep timm's PIL resize in the workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torchvision import transforms as T


def make_transform(config: dict[str, Any]):
    """timm's eval transform for this data config (resize, centre crop, tensor, normalise)."""
    return timm.data.create_transform(**config, is_training=False)


class PilToUint8:
    """PIL image -> (3, H, W) uint8 tensor: ToTensor without the division by 255."""

    def __call__(self, img) -> torch.Tensor:
        return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()


class DeviceFinish:
    """The device half: optional resize of the shorter side to `scale` and centre crop to `crop`, then
    /255 and (x - mean) / std, on a uint8 (B, 3, H, W) batch."""

    def __init__(self, mean, std, scale: int | None = None, crop: tuple[int, int] | None = None) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale, self.crop = scale, crop

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.scale is not None:
            h, w = x.shape[-2:]
            short = min(h, w)
            size = (self.scale, int(self.scale * w / h)) if h == short else (int(self.scale * h / w), self.scale)
            if size != (h, w):
                x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 255)
            ch, cw = self.crop
            top, left = int(round((x.shape[-2] - ch) / 2.0)), int(round((x.shape[-1] - cw) / 2.0))
            x = x[..., top : top + ch, left : left + cw]
        if self.mean.device != x.device:  # moved once: a copy from pageable memory would sync every batch
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return x.div_(255).sub_(self.mean).div_(self.std)


def split_transform(config: dict[str, Any], resize_on_device: bool = False) -> tuple[Any, DeviceFinish]:
    """(worker transform ending in a uint8 tensor, device finish). With resize_on_device the workers only
    convert to uint8 and the device resizes and crops too (for sources of same-size images)."""
    full = make_transform(config)
    steps = list(getattr(full, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-2], T.ToTensor) or not isinstance(steps[-1], T.Normalize):
        raise ValueError(f"unexpected timm transform {full}")  # timm's eval transforms all end this way
    norm = steps[-1]
    if not resize_on_device:
        return T.Compose([*steps[:-2], PilToUint8()]), DeviceFinish(norm.mean, norm.std)
    resize = next((s for s in steps if isinstance(s, T.Resize)), None)
    crop = next((s for s in steps if isinstance(s, T.CenterCrop)), None)
    if resize is None or crop is None or not isinstance(resize.size, int):
        return T.Compose([*steps[:-2], PilToUint8()]), DeviceFinish(norm.mean, norm.std)
    return PilToUint8(), DeviceFinish(norm.mean, norm.std, resize.size, tuple(crop.size))
