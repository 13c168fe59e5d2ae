"""Preprocessing: timm's eval transform (from the model's own data config), cut between loader workers and
the model's device.

* `timm` (default): workers run timm's PIL steps (resize, centre crop) and ship uint8 tensors; the division
  by 255 and the normalisation run on the device with the same arithmetic as timm's whole transform
  (tested equal), for a quarter of the bytes between processes.
* `device`: for sources of same-size images held in memory (Fashion-MNIST, CIFAR, ...), workers only decode
  to uint8 at the native size; resize (bicubic, antialiased), centre crop and normalisation run batched on
  the device. Faster on a GPU, not bit-identical to PIL's bicubic (the difference is measured in
  docs/scale.md). Sources of image files keep timm's PIL resize in the workers.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torchvision import transforms as T
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F2


def make_transform(config: dict[str, Any]):
    """timm's eval transform for this data config (resize, centre crop, tensor, normalise)."""
    return timm.data.create_transform(**config, is_training=False)


def pil_to_uint8() -> v2.Compose:
    """PIL image -> (3, H, W) uint8 tensor (grey and palette images to RGB): ToTensor without the /255."""
    return v2.Compose([v2.RGB(), v2.PILToTensor()])


class DeviceFinish:
    """The device half: optional resize of the shorter side to `scale` (bicubic, antialiased) and centre
    crop to `crop`, then /255 and (x - mean) / std, on a uint8 (B, 3, H, W) batch. The normalisation keeps
    mean and std on the device (torchvision's `normalize` copies them from host memory every batch, which
    waits for the device)."""

    def __init__(self, mean, std, scale: int | None = None, crop: tuple[int, int] | None = None) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale, self.crop = scale, crop

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.scale is not None:
            if min(x.shape[-2:]) != self.scale:  # else the shorter side has the size already
                x = F2.resize(x, [self.scale], interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
                x = x.clamp_(0, 255)
            x = F2.center_crop(x, list(self.crop))
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
        return T.Compose([*steps[:-2], pil_to_uint8()]), DeviceFinish(norm.mean, norm.std)
    resize = next((s for s in steps if isinstance(s, T.Resize)), None)
    crop = next((s for s in steps if isinstance(s, T.CenterCrop)), None)
    if resize is None or crop is None or not isinstance(resize.size, int):
        return T.Compose([*steps[:-2], pil_to_uint8()]), DeviceFinish(norm.mean, norm.std)
    return pil_to_uint8(), DeviceFinish(norm.mean, norm.std, resize.size, tuple(crop.size))
