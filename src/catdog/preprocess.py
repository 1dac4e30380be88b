"""The one path from a decoded image to the model's input tensor.

It has two halves so that the expensive half can be cached:

1. :func:`to_uint8` — decode, resize the shorter side to ``resize_size`` and center-crop a
   square: a ``(resize_size, resize_size, 3)`` uint8 array. This is what the decoded-image
   cache stores, what the training augmentations start from, and what prediction computes
   on the fly.
2. :func:`normalize` — center-crop ``image_size`` from a batch of those squares and
   normalise with the model's mean and std (the eval view; training crops randomly instead).
   It takes numpy arrays (prediction, which never imports torch) or torch tensors (training,
   on any device), with the same arithmetic.

Together they reproduce timm's eval transform (resize to ``image_size / crop_pct``, center
crop, normalise) for the settings stored in every model's ``config.json``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from catdog.errors import CatdogError
from catdog.images import DEFAULT_MAX_PIXELS, decode

_INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}

# Longer side over shorter side beyond which the resize is restricted to the crop (see image_to_uint8).
MAX_ASPECT = 4

if TYPE_CHECKING:
    import torch

PREPROCESS_VERSION = 1  # bump when to_uint8 changes, so caches built by older code are not reused


@dataclass(frozen=True)
class Preprocess:
    """Preprocessing settings, saved in config.json beside every model."""

    image_size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise CatdogError(f"image size {self.image_size} is too small; use at least 8 pixels.")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise CatdogError(f"crop_pct {self.crop_pct} must be between 0.1 and 1.0.")
        if self.interpolation not in _INTERPOLATIONS:
            raise CatdogError(f"interpolation '{self.interpolation}' must be one of {sorted(_INTERPOLATIONS)}.")

    @property
    def resize_size(self) -> int:
        """Side of the stored square; the model sees a centre ``image_size`` crop of it."""
        return math.floor(self.image_size / self.crop_pct)

    def cache_key(self) -> str:
        """Identifies the uint8 squares: everything :func:`to_uint8` depends on."""
        return f"v{PREPROCESS_VERSION}-{self.resize_size}px-{self.interpolation}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocess:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


def image_to_uint8(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """Resize the shorter side to ``resize_size`` and center-crop a square (HWC uint8)."""
    side = pre.resize_size
    width, height = img.size
    if width <= height:
        new_size = (side, max(side, int(side * height / width)))
    else:
        new_size = (max(side, int(side * width / height)), side)
    left = int(round((new_size[0] - side) / 2.0))
    top = int(round((new_size[1] - side) / 2.0))
    if max(new_size) > MAX_ASPECT * side:
        # A strip such as 1x65535 would be resized to 256x16,776,960 (12 GB) only to be cropped:
        # resize just the source region that the crop keeps (same sampling positions; bicubic
        # ringing at the seams may differ by a few levels). Ordinary photos keep the exact path.
        scale_x, scale_y = width / new_size[0], height / new_size[1]
        box = (left * scale_x, top * scale_y, (left + side) * scale_x, (top + side) * scale_y)
        return np.asarray(img.resize((side, side), _INTERPOLATIONS[pre.interpolation], box=box), dtype=np.uint8)
    if new_size != img.size:
        img = img.resize(new_size, _INTERPOLATIONS[pre.interpolation])
    img = img.crop((left, top, left + side, top + side))
    return np.asarray(img, dtype=np.uint8)


def to_uint8(source: bytes | str | os.PathLike, pre: Preprocess, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes or a path to the stored square: safe decode (JPEG draft mode) then :func:`image_to_uint8`."""
    img = decode(source, max_pixels=max_pixels, min_size=pre.resize_size)
    return image_to_uint8(img, pre)


def center_crop(batch: np.ndarray | torch.Tensor, size: int) -> np.ndarray | torch.Tensor:
    """Center crop the last two dimensions to ``size`` (same rounding as torchvision)."""
    height, width = batch.shape[-2:]
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return batch[..., top : top + size, left : left + size]


def normalize(batch: np.ndarray | torch.Tensor, pre: Preprocess, *, crop: bool = True) -> np.ndarray | torch.Tensor:
    """uint8 ``(N, 3, H, W)`` → float32 model input: optional center crop, then (x/255 - mean) / std.

    A numpy array gives a numpy array, a torch tensor a tensor on its device; the values are the same.
    """
    if crop:
        batch = center_crop(batch, pre.image_size)
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255)
    std = np.asarray(pre.std, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255)
    if isinstance(batch, np.ndarray):
        return (batch.astype(np.float32) - mean) / std
    import torch

    return (batch.float() - torch.from_numpy(mean).to(batch.device)) / torch.from_numpy(std).to(batch.device)


def stack_uint8(squares: list[np.ndarray]) -> np.ndarray:
    """HWC uint8 arrays → one contiguous ``(N, 3, H, W)`` uint8 array (``torch.from_numpy`` makes it a tensor)."""
    return np.ascontiguousarray(np.stack(squares).transpose(0, 3, 1, 2))
