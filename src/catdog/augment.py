"""Training augmentations (torchvision transforms v2) on the uint8 squares of the pixel cache.

Every random choice is a pure function of a per-sample seed (derived from the run's seed,
the epoch and the sample's index), so an augmented image does not depend on the number of
DataLoader workers, on the number of torchrun processes, or on where a resumed run restarted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torchvision.transforms import v2

from catdog.preprocess import Preprocess, center_crop


def sample_seed(*parts: int | str) -> int:
    """A 63-bit seed from any mix of numbers and strings (stable across processes and runs)."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def train_transform(pre: Preprocess, *, min_scale: float = 0.35, jitter: float = 0.2, rotation: float = 10.0):
    """Random resized crop to ``image_size``, flip, colour jitter, small rotation (uint8 CHW in and out)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(pre.image_size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
            v2.RandomRotation(rotation),
        ]
    )


def seeded(transform: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, seed: int) -> torch.Tensor:
    """``transform(image)`` with the global RNG set to ``seed`` (and restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


def augment_batch(
    images: torch.Tensor, seeds: list[int], transform: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Augment each image of a uint8 batch with its own seed, on the batch's device (the GPU path).

    transforms v2 applied to a whole batch would draw one set of parameters for all images,
    so the images are transformed one by one (the pixel work still runs on the device).
    """
    return torch.stack([seeded(transform, image, seed) for image, seed in zip(images, seeds)])


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
