"""PyTorch → ONNX: the module that is exported (:class:`ExportModule`), the export, and its parity gap.

Below both the cached export (:mod:`catdog.inference.model_cache`, what ``catdog predict`` runs) and
``catdog export`` (:mod:`catdog.export`, which checks a file on real photos before writing it).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from catdog.fsutil import atomic_write
from catdog.inference.onnx_session import INPUT, onnx_model_fn, set_metadata
from catdog.inference.outputs import softmax, torch_model_fn
from catdog.models.builtin import GatedClassifier
from catdog.models.gate import LearntNeither


class ExportModule(nn.Module):
    """What is exported: ``(logits[, pet_score[, looks_like, looks_like_score]][, features])`` from one forward pass.

    For a gated or timm model the pieces are computed exactly as ``GatedClassifier.parts``
    (and timm's ``forward``) do, with the features kept as an extra output; the parity check
    in :func:`catdog.export.export` compares the result against the module's own forward.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.gated = isinstance(module, GatedClassifier)
        self.learnt_neither = isinstance(module, LearntNeither)  # P(cat or dog), nothing the photo looks like
        backbone = module.backbone if self.gated else module
        self.has_features = all(hasattr(backbone, name) for name in ("forward_features", "forward_head"))

    def output_names(self) -> list[str]:
        names = ["logits"]
        if self.gated:
            names += ["pet_score", "looks_like", "looks_like_score"]
        elif self.learnt_neither:
            names.append("pet_score")
        if self.has_features:
            names.append("features")
        return names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.has_features:
            out = self.module(x)
            return out if isinstance(out, tuple) else (out,)
        if self.gated:
            return self.module.parts(x)
        features = self.module.forward_head(self.module.forward_features(x), pre_logits=True)
        return self.module.get_classifier()(features), features


def export_onnx(module: nn.Module, config: dict, path: str | os.PathLike) -> None:
    """Export ``module`` (dynamic batch axis, opset of the dynamo exporter) with ``config`` as metadata.

    Written atomically; the caller checks parity before or after (see :mod:`catdog.export`).
    """
    import onnx

    wrapper = ExportModule(module)
    # eval() on the very module exported: a wrapper left in train mode would silently export
    # batch-statistics BatchNorm and dropout.
    wrapper.eval()
    size = int(config["preprocess"]["image_size"])
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=[INPUT],
            output_names=wrapper.output_names(),
            dynamic_shapes={"x": {0: batch}},
            verbose=False,
        )
    proto = program.model_proto
    set_metadata(proto, config)
    atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))


def max_gap(module: nn.Module, sess, batch: np.ndarray) -> float:
    """Largest |Δprobability| (classes and pet score) between ``module`` and an ONNX session on ``batch``."""
    batch = batch.astype(np.float32)
    ref = torch_model_fn(module)(batch)
    got = onnx_model_fn(sess)(batch)
    gap = float(np.abs(softmax(ref.logits) - softmax(got.logits)).max())
    if ref.pet_score is not None and got.pet_score is not None:
        gap = max(gap, float(np.abs(ref.pet_score - got.pet_score).max()))
    return gap
