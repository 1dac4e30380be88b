"""Training augmentations (torchvision transforms v2) on the uint8 squares of the pixel cache.

Every random choice is a pure function of a per-sample seed (derived from the run's seed,
the epoch and the sample's index), so an augmented image does not depend on the number of
DataLoader workers, on the number of torchrun processes, or on where a resumed run restarted.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from catdog.preprocess import Preprocess, center_crop

_log = logging.getLogger(__name__)


def sample_seed(*parts: int | str) -> int:
    """A 63-bit seed from any mix of numbers and strings (stable across processes and runs)."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


# The training augmentation, in both its forms: per image in DataLoader workers (CPU) and per batch on a GPU.
MIN_SCALE = 0.35  # smallest crop, as a share of the square's area
RATIO = (3 / 4, 4 / 3)  # crop aspect ratios (torchvision's default)
JITTER = 0.2  # brightness, contrast and saturation factors within 1 ± JITTER
ROTATION = 10.0  # degrees either way


def train_transform(pre: Preprocess):
    """Random resized crop to ``image_size``, flip, colour jitter, small rotation (uint8 CHW in and out)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(pre.image_size, scale=(MIN_SCALE, 1.0), ratio=RATIO, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
            v2.RandomRotation(ROTATION),
        ]
    )


def seed_uniforms(seeds: np.ndarray, count: int) -> np.ndarray:
    """``count`` uniform numbers in [0, 1) per seed, a pure function of the seed (SplitMix64).

    Vectorised, so a batch's random draws cost microseconds, and each image's draws depend on
    its own seed only, as in the per-image path.
    """
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        counters = np.arange(1, count + 1, dtype=np.uint64)
        state = np.asarray(seeds, dtype=np.uint64)[:, None] + np.uint64(0x9E3779B97F4A7C15) * counters
        z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def augment_batch(images: torch.Tensor, seeds: np.ndarray, size: int) -> torch.Tensor:
    """The training augmentation of :func:`train_transform` for a whole uint8 batch at once.

    ``images``: ``(N, 3, S, S)`` uint8 squares on any device; returns ``(N, 3, size, size)`` float32 in
    [0, 255]. Crop, flip and rotation are one affine resampling (``grid_sample``), the colour jitter
    a few broadcast operations: a handful of kernels per batch instead of dozens per image. The
    draws come from each image's seed (:func:`seed_uniforms`). Unlike torchvision's, the resampling
    is bilinear without antialiasing, and the rotated corners show the photo around the crop
    rather than black where the photo has more to show.
    """
    return batch_augmenter(size)(images, seeds)


def batch_augmenter(
    size: int, finish: Callable[[torch.Tensor], torch.Tensor] | None = None, *, fuse: bool = False
) -> Callable[[torch.Tensor, np.ndarray], torch.Tensor]:
    """``(images, seeds) → finish(augment_batch(images, seeds, size))``, optionally fused.

    ``fuse`` compiles the colour jitter and ``finish`` (``torch.compile``) into a couple of kernels: on
    a 2-core CPU their dozen batch-sized passes and temporaries cost several ms a batch in eager
    mode (docs/benchmarks.md). The resampling stays eager: compiled with it, the whole augmentation ran
    41 ms against 14.5 eager on a CPU (inductor's ``affine_grid`` alone: 10 ms against 1.6). Where
    compiling fails (inductor needs a C++ compiler on a CPU), the same functions run eagerly.
    """

    def jitter_then_finish(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        x = _colour_jitter(x, u)
        return finish(x) if finish else x

    tail = _compiled_or_eager(jitter_then_finish) if fuse else jitter_then_finish

    def run(images: torch.Tensor, seeds: np.ndarray) -> torch.Tensor:
        u = torch.from_numpy(seed_uniforms(seeds, 9)).to(images.device, torch.float32, non_blocking=True)
        return tail(_resample(images, u, size), u)

    return run


def _resample(images: torch.Tensor, u: torch.Tensor, size: int) -> torch.Tensor:
    """Random resized crop, flip and rotation as one affine ``grid_sample``: float32 in [0, 255]."""
    n = len(images)
    # Random resized crop: area share and log aspect ratio, then a centre that keeps the crop inside.
    area = MIN_SCALE + (1 - MIN_SCALE) * u[:, 0]
    log_ratio = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * u[:, 1]
    half_w = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)  # half-widths in grid units ([-1, 1])
    half_h = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
    center_x = (1 - half_w) * (2 * u[:, 2] - 1)
    center_y = (1 - half_h) * (2 * u[:, 3] - 1)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    angle = torch.deg2rad(ROTATION * (2 * u[:, 5] - 1))
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [
            torch.stack([half_w * flip * cos, half_w * flip * sin, center_x], 1),
            torch.stack([-half_h * sin, half_h * cos, center_y], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _colour_jitter(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast (towards the mean grey), saturation (towards each pixel's grey), in place."""
    # In place: on a 2-core CPU a fresh batch-sized temporary per operation cost more than the arithmetic
    # (the jitter took 9 ms for 64 images at 128 px this way, against 3.6 ms in place).
    brightness, contrast, saturation = (1 + JITTER * (2 * u[:, 6:9] - 1)).view(len(x), 3, 1, 1, 1).unbind(1)
    x = x.mul_(brightness).clamp_(0, 255)
    mean_grey = _grey(x.mean((2, 3), keepdim=True))  # the mean of the grey is the grey of the channel means
    x = x.sub_(mean_grey).mul_(contrast).add_(mean_grey).clamp_(0, 255)
    grey = _grey(x)
    return x.sub_(grey).mul_(saturation).add_(grey).clamp_(0, 255)


def _compiled_or_eager(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` through ``torch.compile``; ``fn`` itself from the first call that fails to compile."""
    # torch builds of CUDA on a machine without one log "No CUDA runtime is found" when inductor builds a CPU kernel.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    compiled: Callable[..., torch.Tensor] | None = torch.compile(fn, dynamic=False)

    def run(*args: torch.Tensor) -> torch.Tensor:
        nonlocal compiled
        if compiled is not None:
            try:
                return compiled(*args)
            except Exception as error:  # noqa: BLE001 - any failure to build: the eager path gives the same values
                compiled = None
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                _log.warning("catdog: torch.compile is unavailable (%s); augmenting eagerly.", reason)
        return fn(*args)

    return run


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of an ``(N, 3, H, W)`` batch, as ``(N, 1, H, W)`` (torchvision's grayscale weights)."""
    return (0.299 * x[:, 0:1]).add_(x[:, 1:2], alpha=0.587).add_(x[:, 2:3], alpha=0.114)


def seeded(transform: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, seed: int) -> torch.Tensor:
    """``transform(image)`` with the global RNG set to ``seed`` (and restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


def view_transform(pre: Preprocess, view: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The ``view``-th fixed view of an image for the frozen-feature cache (uint8 CHW → uint8 crop).

    View 0 is the eval view (center crop), view 1 its mirror image, later views are random
    training augmentations seeded by the image's content hash and the view number.
    """
    if view == 0:
        return lambda image, seed: center_crop(image, pre.image_size)
    if view == 1:
        return lambda image, seed: center_crop(image, pre.image_size).flip(-1)
    augment = train_transform(pre)
    return lambda image, seed: seeded(augment, image, seed)


def mix_transform(num_classes: int, mixup: float, cutmix: float) -> Callable | None:
    """Batch-level MixUp and/or CutMix (one of them per batch), or None when both are off."""
    choices = []
    if mixup > 0:
        choices.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        choices.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)
