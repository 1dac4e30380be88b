"""What a model computes for a batch (:class:`Outputs`), and a PyTorch module as a model function.

The bottom of :mod:`catdog.inference`: the ONNX Runtime backend, the export and the
:class:`~catdog.inference.predictor.Predictor` all speak in :class:`Outputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import torch


class Outputs(NamedTuple):
    """What a model computes for a batch: class logits, and for gated models the gate's evidence."""

    logits: np.ndarray  # (N, classes)
    pet_score: np.ndarray | None = None  # (N,) P(cat or dog) (the pet mass for models before the open-set gate)
    looks_like: np.ndarray | None = None  # (N,) the top ImageNet class the pretrained backbone sees, pets aside
    looks_like_score: np.ndarray | None = None  # (N,) its ImageNet probability (None from ONNX files before it)


# A `neither` answer names what the photo looks like only where the backbone gives that class at least this
# probability: below it the named class read fair for 5 of 30 photos read by hand (a piebald horse "looks like:
# plow"), from it up for 16 of 20 (docs/benchmarks.md, the `neither` gate, 2026-12-07).
LOOKS_LIKE_FLOOR = 0.3

# A model function takes a float32 NCHW batch and returns its Outputs.
ModelFn = Callable[[np.ndarray], Outputs]


def torch_model_fn(module: torch.nn.Module) -> ModelFn:
    """Wrap an eval-mode torch module (returning logits, or (logits, pet_score, looks_like, looks_like_score))."""
    import torch

    module = module.eval().to(memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> Outputs:
        with torch.inference_mode():
            out = module(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last))
        if isinstance(out, tuple):
            return Outputs(*(_numpy(o) for o in out))
        return Outputs(out.float().numpy())

    return run


def _numpy(tensor: torch.Tensor | None) -> np.ndarray | None:
    if tensor is None:
        return None
    return tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
