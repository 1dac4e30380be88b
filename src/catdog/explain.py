"""Grad-CAM: where in the photo the decision rests (``catdog explain`` and the web page's explain call).

Plain PyTorch hooks, no extra dependency: the target layer is the last module whose output is a
spatial feature map (for timm backbones, the last conv stage), the class score is the chosen
class's logit, and the map is ReLU(Σ_k mean(∂score/∂A_k) · A_k), upsampled to the model's view.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from catdog.data.layout import normalize_label
from catdog.errors import CatdogError
from catdog.inference.outputs import torch_model_fn
from catdog.inference.predictor import Predictor
from catdog.models.files import has_heat_maps
from catdog.models.gate import LearntNeither
from catdog.models.pretrained import ModelError
from catdog.preprocess import Preprocess, center_crop, normalize, stack_uint8, to_uint8

DISPLAY_SIZE = 448  # the overlay is upscaled to this side so that it reads well on a page
_MODELS: dict[str, tuple[nn.Module, Predictor]] = {}
_LOCK = threading.Lock()  # hooks are registered on the shared module: one Grad-CAM at a time per process


@dataclass
class Explanation:
    heat: np.ndarray  # (S, S) float in [0, 1], over the model's view
    view: np.ndarray  # (S, S, 3) uint8: the centre crop the model saw
    label: str  # the Predictor's answer (a class, "neither" or "unsure")
    explained: str  # the class whose score the heat map explains
    probabilities: dict[str, float]


def gradcam(
    module: nn.Module, batch: torch.Tensor, class_index: int | None = None, imagenet_class: int | None = None
) -> tuple[np.ndarray, int]:
    """Grad-CAM of one normalised ``(1, 3, S, S)`` input: a ``(S, S)`` map in [0, 1] and the class explained.

    ``imagenet_class``: explain that ImageNet class of the pretrained backbone the `neither` gate reads (what
    a `neither` answer says the photo looks like), on that backbone's last feature map, instead of a class
    of the model's own head.
    """
    maps: list[torch.Tensor] = []
    imagenet: list[tuple[torch.Tensor, int]] = []  # the ImageNet logits, and how many maps came before them

    def keep(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) > 1:
            maps.append(output)

    handles = [m.register_forward_hook(keep) for m in module.modules() if m is not module]
    head = _imagenet_head(module) if imagenet_class is not None else None
    if head is not None:
        handles.append(head.register_forward_hook(lambda _m, _i, output: imagenet.append((output, len(maps)))))
    try:
        with torch.enable_grad():
            out = module(batch.requires_grad_(True))  # a frozen part (a pristine gate's backbone) has maps with grads
            logits = out[0] if isinstance(out, tuple) else out
            if class_index is None:
                class_index = int(logits[0].argmax())
            if not maps:
                raise ModelError("The model has no spatial feature map, so Grad-CAM cannot explain it.")
            if imagenet:  # the backbone's last map before its ImageNet head (the model's own come after)
                (imagenet_logits, before), class_index = imagenet[0], imagenet_class
                score, activation = imagenet_logits[0, class_index], maps[before - 1]
            else:  # hooks fire when a module finishes: the last one is the last conv stage
                score, activation = logits[0, class_index], maps[-1]
            (grad,) = torch.autograd.grad(score, activation)
    finally:
        for handle in handles:
            handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=batch.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).numpy(), class_index


def _imagenet_head(module: nn.Module) -> nn.Module | None:
    """The ImageNet classifier of the pretrained backbone a gated model's `neither` gate reads, if any: the
    model's own frozen backbone's, or its pristine copy's (:func:`catdog.models.builtin.pristine_outputs`)."""
    gate, backbone = getattr(module, "gate", None), getattr(module, "backbone", None)
    if gate is None:
        return backbone.get_classifier() if hasattr(backbone, "get_classifier") else None
    return gate[-1] if isinstance(gate, nn.Sequential) else gate.get_classifier()


def _torch_model(source: Predictor | str | os.PathLike | None) -> tuple[nn.Module, Predictor]:
    """The PyTorch module behind a Predictor or a model reference, and a Predictor running it (cached)."""
    name = source.name if isinstance(source, Predictor) else str(source or "builtin")
    if name not in _MODELS:
        if not has_heat_maps(name):
            raise ModelError(
                "Grad-CAM needs the PyTorch model: give the model directory (or the built-in model), not an .onnx file."
            )
        from catdog.inference.model_cache import torch_source

        module, config = torch_source(name)[2]()
        module.eval()
        predictor = Predictor(
            model_fn=torch_model_fn(module),
            classes=list(config["classes"]),
            pre=Preprocess.from_dict(config["preprocess"]),
            temperature=float(config.get("temperature") or 1.0),
            gate_threshold=(config.get("gate") or {}).get("threshold"),
            name=name,
            info=config,
        )
        _MODELS[name] = (module, predictor)
    return _MODELS[name]


def explain(
    source: Predictor | str | os.PathLike | None, image: bytes | str | os.PathLike, *, class_name: str | None = None
) -> Explanation:
    """Grad-CAM of ``image`` (bytes or a path) for the model's answer, or for ``class_name``."""
    module, predictor = _torch_model(source)
    if class_name is not None and class_name not in predictor.classes:
        # The class as its folder was named ("Golden Retrievers", "Blümen rot") names the class it became.
        folder_named = normalize_label(class_name)
        if folder_named not in predictor.classes:
            classes = ", ".join(predictor.classes)
            raise CatdogError(f"class '{class_name}' is not one of the model's classes ({classes}).")
        class_name = folder_named
    square = to_uint8(image, predictor.pre, max_pixels=predictor.max_pixels)
    uint8 = torch.from_numpy(stack_uint8([square]))
    batch = normalize(uint8, predictor.pre)
    wanted = None if class_name is None else predictor.classes.index(class_name)
    with _LOCK:
        outputs = predictor.forward_uint8(uint8)
        answer = predictor.to_predictions(outputs, ["image"])[0]
        # A `neither` answer says what the photo looks like: the map shows where (a horse's "sorrel"), not where
        # the head, which only knows cats and dogs, would see its likelier class. Where the class is too weak to
        # name, the map is still that class's (where the backbone sees something other than a cat or dog).
        looks_like = answer.label == "neither" and class_name is None and outputs.looks_like is not None
        imagenet_class = int(outputs.looks_like[0]) if looks_like else None
        # A from-scratch net's `neither` is its own last class: that class's map.
        learnt = answer.label == "neither" and class_name is None and isinstance(module, LearntNeither)
        if learnt:
            heat, _ = gradcam(module.net, batch, len(predictor.classes))
        else:
            heat, index = gradcam(module, batch, wanted, imagenet_class)
    explained = (
        "neither" if learnt else (answer.looks_like or "no cat or dog") if looks_like else predictor.classes[index]
    )
    view = center_crop(uint8, predictor.pre.image_size)[0].permute(1, 2, 0).numpy()
    return Explanation(heat, view, answer.label, explained, answer.probabilities)


def overlay(explanation: Explanation, size: int = DISPLAY_SIZE, alpha: float = 0.45) -> Image.Image:
    """The model's view with the heat map blended on top (matplotlib's 'jet' colours)."""
    from matplotlib import colormaps

    colours = (colormaps["jet"](explanation.heat)[..., :3] * 255).astype(np.uint8)
    photo = Image.fromarray(explanation.view)
    heat = Image.fromarray(colours)
    return Image.blend(photo, heat, alpha).resize((size, size), Image.Resampling.BICUBIC)


def explain_png(
    predictor_or_model: Predictor | str | os.PathLike | None, image_bytes: bytes, *, class_name: str | None = None
) -> tuple[bytes, str]:
    """PNG bytes of the Grad-CAM overlay for an uploaded photo (used by the web service), and what it explains.

    ``predictor_or_model``: a :class:`Predictor` (its PyTorch model is loaded once and cached; an
    ONNX-only Predictor of the built-in model or a model directory works), a model directory, or
    ``None`` for the built-in model. Raises :class:`catdog.images.ImageError` for a bad image and
    :class:`ModelError` for a model Grad-CAM cannot use (an .onnx file on its own).
    """
    buffer = io.BytesIO()
    explanation = explain(predictor_or_model, image_bytes, class_name=class_name)
    overlay(explanation).save(buffer, "PNG")
    return buffer.getvalue(), explanation.explained
