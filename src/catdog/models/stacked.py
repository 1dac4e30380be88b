"""Several pretrained backbones read one photo; their pooled features side by side (``builtin-large``).

:class:`StackedBackbones` offers the part of timm's interface that :class:`catdog.models.builtin.GatedClassifier`
and the ONNX export use (``forward_features``, ``forward_head``, ``get_classifier``, ``num_features``), so a
linear head and the open-set gate sit on it as on one backbone, and ``predict``, ``serve``, ``export`` and
``explain`` need nothing of their own for it.

The photo comes in at the largest backbone's size and is resized (bilinear) to each smaller backbone's
own: one preprocessing, one ONNX input.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class StackedClassifier(nn.Module):
    """Concatenated pooled features → the mean of the backbones' ImageNet logits (what the gate reads)."""

    def __init__(self, classifiers: list[nn.Module], widths: list[int]) -> None:
        super().__init__()
        self.classifiers = nn.ModuleList(classifiers)
        self.widths = list(widths)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        parts = features.split(self.widths, dim=1)
        return torch.stack([head(part) for head, part in zip(self.classifiers, parts)]).mean(dim=0)


class StackedBackbones(nn.Module):
    """Pretrained backbones, each at its own input size, as one backbone of ``sum(num_features)`` features."""

    def __init__(self, backbones: list[nn.Module], sizes: list[int]) -> None:
        super().__init__()
        self.backbones = nn.ModuleList(backbones)
        self.sizes = list(sizes)
        self.num_features = sum(b.num_features for b in backbones)
        self.classifier = StackedClassifier(
            [b.get_classifier() for b in backbones], [b.num_features for b in backbones]
        )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for backbone, size in zip(self.backbones, self.sizes):
            view = (
                x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            )
            maps.append(backbone.forward_features(view))
        return maps

    def forward_head(self, maps: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        features = torch.cat([b.forward_head(m, pre_logits=True) for b, m in zip(self.backbones, maps)], dim=1)
        return features if pre_logits else self.classifier(features)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
