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

from catdog.errors import CatdogError
from catdog.inference.outputs import torch_model_fn
from catdog.inference.predictor import Predictor
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


def gradcam(module: nn.Module, batch: torch.Tensor, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM of one normalised ``(1, 3, S, S)`` input: a ``(S, S)`` map in [0, 1] and the class explained."""
    maps: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) > 1:
            maps.append(output)

    handles = [m.register_forward_hook(keep) for m in module.modules() if m is not module]
    try:
        with torch.enable_grad():
            out = module(batch.requires_grad_(False))
            logits = out[0] if isinstance(out, tuple) else out
            if class_index is None:
                class_index = int(logits[0].argmax())
            if not maps:
                raise ModelError("The model has no spatial feature map, so Grad-CAM cannot explain it.")
            activation = maps[-1]  # hooks fire when a module finishes: the last one is the last conv stage
            (grad,) = torch.autograd.grad(logits[0, class_index], activation)
    finally:
        for handle in handles:
            handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=batch.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).numpy(), class_index


def _torch_model(source: Predictor | str | os.PathLike | None) -> tuple[nn.Module, Predictor]:
    """The PyTorch module behind a Predictor or a model reference, and a Predictor running it (cached)."""
    name = source.name if isinstance(source, Predictor) else str(source or "builtin")
    if name not in _MODELS:
        if name.lower().endswith(".onnx"):
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
        raise CatdogError(f"class '{class_name}' is not one of the model's classes ({', '.join(predictor.classes)}).")
    square = to_uint8(image, predictor.pre, max_pixels=predictor.max_pixels)
    uint8 = torch.from_numpy(stack_uint8([square]))
    batch = normalize(uint8, predictor.pre)
    wanted = None if class_name is None else predictor.classes.index(class_name)
    with _LOCK:
        heat, index = gradcam(module, batch, wanted)
        outputs = predictor.forward_uint8(uint8)
    answer = predictor.to_predictions(outputs, ["image"])[0]
    view = center_crop(uint8, predictor.pre.image_size)[0].permute(1, 2, 0).numpy()
    return Explanation(heat, view, answer.label, predictor.classes[index], answer.probabilities)


def overlay(explanation: Explanation, size: int = DISPLAY_SIZE, alpha: float = 0.45) -> Image.Image:
    """The model's view with the heat map blended on top (matplotlib's 'jet' colours)."""
    from matplotlib import colormaps

    colours = (colormaps["jet"](explanation.heat)[..., :3] * 255).astype(np.uint8)
    photo = Image.fromarray(explanation.view)
    heat = Image.fromarray(colours)
    return Image.blend(photo, heat, alpha).resize((size, size), Image.Resampling.BICUBIC)


def explain_png(
    predictor_or_model: Predictor | str | os.PathLike | None, image_bytes: bytes, *, class_name: str | None = None
) -> bytes:
    """PNG bytes of the Grad-CAM overlay for an uploaded photo (used by the web service).

    ``predictor_or_model``: a :class:`Predictor` (its PyTorch model is loaded once and cached; an
    ONNX-only Predictor of the built-in model or a model directory works), a model directory, or
    ``None`` for the built-in model. Raises :class:`catdog.images.ImageError` for a bad image and
    :class:`ModelError` for a model Grad-CAM cannot use (an .onnx file on its own).
    """
    buffer = io.BytesIO()
    overlay(explain(predictor_or_model, image_bytes, class_name=class_name)).save(buffer, "PNG")
    return buffer.getvalue()
