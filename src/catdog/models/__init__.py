"""Model registry: every architecture catdog can build, and loading a model directory.

A model directory (DESIGN.md) holds ``config.json`` and ``model.safetensors``; the module is
rebuilt from ``config["architecture"]`` and ``config["classes"]`` and its weights loaded
from safetensors (never pickle).

torch, timm and safetensors are imported by the functions that need them: reading a config
(all that prediction through a cached ONNX export needs) stays light.
"""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from catdog.errors import CatdogError, ModelError
from catdog.fsutil import atomic_write, atomic_write_text, utf8_safe_json

if TYPE_CHECKING:
    from torch import nn

__all__ = ["GatedClassifier", "ModelError", "build_model", "load_model_dir", "read_config", "save_model_dir"]


def __getattr__(name: str):
    if name == "GatedClassifier":  # re-exported lazily: it needs torch
        from catdog.models.builtin import GatedClassifier

        return GatedClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _scratch_models() -> dict:
    from catdog.models.scratch import SCRATCH_MODELS

    return SCRATCH_MODELS


def build_model(
    architecture: str,
    num_classes: int,
    *,
    pretrained: bool = True,
    gate: bool = False,
    weights: dict | None = None,
    drop_path: float = 0.0,
) -> nn.Module:
    """Build ``architecture`` for ``num_classes`` classes.

    ``architecture`` is a from-scratch net (``seed-cnn``, ...) or a timm model name. With
    ``gate``, a timm backbone keeps its ImageNet head as the `neither` gate and a new linear
    head is added (:class:`GatedClassifier`); otherwise timm's classifier is replaced.
    ``pretrained=False`` builds the shapes only (weights come from a model directory); ``weights``,
    the state dict it will load, lets a from-scratch net take the shape it was saved with. ``drop_path``:
    a pretrained timm backbone's stochastic depth rate (training only; it adds no weights).
    """
    import timm
    from torch import nn

    from catdog.models.builtin import GatedClassifier
    from catdog.models.pretrained import create_pretrained

    scratch = _scratch_models()
    if architecture in scratch:
        factory = scratch[architecture]
        options = factory.options_for(weights) if weights is not None and hasattr(factory, "options_for") else {}
        return factory(num_classes, **options)
    if architecture not in timm.list_models():
        names = ", ".join(sorted(scratch)) or "seed-cnn"
        raise ModelError(
            f"Unknown model '{architecture}': use {names}, or a timm model name such as tf_efficientnet_lite0."
        )
    if gate:
        if pretrained:
            backbone = create_pretrained(architecture, drop_path=drop_path)
        else:
            backbone = timm.create_model(architecture, pretrained=False)
        return GatedClassifier(backbone, nn.Linear(backbone.num_features, num_classes))
    if pretrained:
        model = create_pretrained(architecture, drop_path=drop_path)
        model.reset_classifier(num_classes)
        return model
    return timm.create_model(architecture, pretrained=False, num_classes=num_classes)


def read_config(model_dir: str | Path) -> dict:
    """``config.json`` of a model directory, with a clear error when it is missing or damaged."""
    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    if model_dir.exists() and not model_dir.is_dir():
        raise ModelError(
            f"Model '{model_dir}' is a file, not a model directory written by 'catdog train' "
            "(an ONNX file must end in .onnx)."
        )
    if not model_dir.is_dir():
        raise ModelError(
            f"Model '{model_dir}' does not exist; give a model directory written by 'catdog train', or builtin-large."
        )
    try:
        config = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"'{model_dir}' has no config.json; is it a model directory written by 'catdog train'?"
        ) from None
    except (OSError, ValueError) as err:
        raise ModelError(f"'{config_file}' cannot be read as JSON ({err}).") from None
    check_config(config, config_file)
    return config


# The fields of config.json that catdog reads, and what each must be. An absent field takes its default (but for
# _REQUIRED); null is allowed only where NoneType is listed, as float(None) or int(None) fails where it is read.
_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "architecture": (str,),
    "classes": (list,),
    "preprocess": (dict,),
    "preprocess.image_size": (int,),
    "preprocess.crop_pct": _NUMBER,
    "preprocess.interpolation": (str,),
    "preprocess.mean": (list,),
    "preprocess.std": (list,),
    "temperature": _NUMBER,
    "gate": (dict, type(None)),
    "gate.kind": (str, type(None)),
    "gate.threshold": _NUMBER,
    "gate.taps": (list, type(None)),
    "gate.pristine_after_blocks": (int,),
    "data": (dict, type(None)),
    "data.root": (str, type(None)),
    "data.train_images": (int, type(None)),
    "data.val_images": (int, type(None)),
    "split": (dict, type(None)),
    "split.val_fraction": _NUMBER,  # evaluate --split reads it: float(None) failed; a null test_fraction is none
    "split.test_fraction": (*_NUMBER, type(None)),
    "training": (dict, type(None)),
    "training.val_fraction": _NUMBER,
}
_REQUIRED = ("architecture", "classes", "preprocess")
_TYPE_NAMES = {str: "a string", list: "a list", dict: "an object", int: "a whole number", float: "a number"}


def check_config(config: object, config_file: str | Path, remedy: str = "train the model again or fix it") -> None:
    """Raise one clear ModelError, naming the file and the field, where a (hand-edited) config is not usable.

    ``remedy`` says what to do about a wrong field (an ONNX file's metadata is not fixed by hand: export it again).
    """
    from catdog.preprocess import Preprocess

    def wrong(field: str, what: str) -> ModelError:
        return ModelError(f"'{config_file}' is damaged: '{field}' must be {what}; {remedy}.")

    if not isinstance(config, dict):
        raise ModelError(f"'{config_file}' is damaged: it must hold a JSON object; {remedy}.")
    for key in _REQUIRED:
        if key not in config:
            raise ModelError(f"'{config_file}' lacks '{key}'; the model directory is incomplete.")
    for field, types in _FIELD_TYPES.items():
        parent, _, key = field.rpartition(".")
        values = config.get(parent) if parent else config  # a parent is checked before its fields
        if not isinstance(values, dict) or key not in values:
            continue
        value = values[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = [_TYPE_NAMES[t] for t in types if t in _TYPE_NAMES and not (t is int and float in types)]
            raise wrong(field, " or ".join(names) + (" or null" if type(None) in types else ""))
    # Spelt as the Predictor spells them (catdog.data.layout.composed): 'é' in two spellings is one name twice.
    classes = [unicodedata.normalize("NFC", name) for name in config["classes"] if isinstance(name, str) and name]
    # One class cannot be told from another, and a name twice makes an answer ambiguous: catdog train never writes
    # either (it refuses a dataset of one class, and folders of one name are one class).
    if len(classes) != len(config["classes"]) or len(classes) < 2 or len(set(classes)) < len(classes):
        raise wrong("classes", "a list of two or more different class names")
    # evaluate --split finds the held-out photos again from these: a split without val_fraction stopped on a
    # KeyError, and fractions out of range on a sentence that named no file.
    split = config.get("split") or {}
    val, test = split.get("val_fraction"), split.get("test_fraction") or 0
    if split and not (val is not None and min(val, test) >= 0 and val + test < 1):
        raise wrong("split", "an object whose val_fraction and test_fraction are 0 or more and sum to less than 1")
    if not 0 <= (config.get("training") or {}).get("val_fraction", 0) < 1:
        raise wrong("training.val_fraction", "a number from 0 to less than 1")
    temperature, gate = config.get("temperature", 1.0), config.get("gate") or {}
    if not (math.isfinite(temperature) and temperature > 0):  # 0 answered "cat (nan%)"; below 0, the other class
        raise wrong("temperature", "a positive number")
    if not 0 <= gate.get("threshold", 0.5) <= 1:
        raise wrong("gate.threshold", "a number between 0 and 1")
    if not all(_is_whole(block) for block in gate.get("taps") or ()):
        raise wrong("gate.taps", "a list of block numbers")
    for key in ("mean", "std"):
        values = config["preprocess"].get(key, (0.5, 0.5, 0.5))
        if len(values) != 3 or not all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in values):
            raise wrong(f"preprocess.{key}", "three numbers, one for each of red, green and blue")
    try:
        Preprocess.from_dict(config["preprocess"])
    except CatdogError as err:  # a value out of range, in Preprocess's own words
        raise wrong("preprocess", f"valid preprocessing settings ({str(err).rstrip('.')})") from None


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_model_dir(model_dir: str | Path) -> tuple[nn.Module, dict]:
    """The trained module (eval mode) and its config from a model directory."""
    from safetensors import SafetensorError

    from catdog.models.files import read_safetensors

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    weights = model_dir / "model.safetensors"
    if not weights.exists():
        raise ModelError(f"'{model_dir}' has no model.safetensors; the training run did not finish.")
    try:
        state, _ = read_safetensors(weights)
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"'{weights}' is not a valid safetensors file ({err}).") from None
    gate = config.get("gate") or {}
    classes = len(config["classes"])
    from catdog.models.gate import NEITHER_CLASS, OPEN_SET, LearntNeither, OpenSetGate, tap_channels

    if gate.get("kind") == NEITHER_CLASS:  # a from-scratch net with `neither` as its last class
        net_state = {name.removeprefix("net."): t for name, t in state.items()}
        model = LearntNeither(build_model(config["architecture"], classes + 1, pretrained=False, weights=net_state))
    else:
        model = build_model(config["architecture"], classes, pretrained=False, gate=bool(gate), weights=state)
        if gate and not hasattr(model, "backbone"):  # a from-scratch net: no ImageNet backbone for a gate to read
            raise ModelError(
                f"'{model_dir / 'config.json'}' is damaged: architecture '{config['architecture']}' has no "
                "pretrained backbone for its 'gate' to read; train the model again or fix it."
            )
    if "pristine_after_blocks" in gate:  # a fine-tuned model's gate: its own copy of the pretrained layers
        model.add_pristine_gate(int(gate["pristine_after_blocks"]))
    if gate.get("kind") == OPEN_SET:
        taps = tuple(gate.get("taps") or ())  # blocks whose pooled output the gate reads too
        channels = tap_channels(model.backbone, taps) if taps else 0
        model.add_open_set_gate(OpenSetGate(model.backbone.num_features, taps, channels))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
        mismatch = f"{len(missing)} missing and {len(unexpected)} unexpected tensors" if missing or unexpected else ""
    except RuntimeError:  # the same names, other shapes
        mismatch = "tensors of other shapes"
    if mismatch:
        raise ModelError(f"'{weights}' does not match architecture '{config['architecture']}' ({mismatch}).")
    return model.eval(), config


def save_model_dir(model: nn.Module, config: dict, model_dir: str | Path) -> None:
    """Write ``model.safetensors`` and ``config.json`` (each atomically) into ``model_dir``.

    ``config`` needs at least ``architecture``, ``classes`` and ``preprocess``; a gated
    model also records ``gate`` (``{"threshold": ...}``, and ``"pristine_after_blocks"`` when it
    has a pristine gate) so that it is rebuilt with its gate. The blocks an open-set gate taps are
    recorded here (``gate.taps``), from the model itself.
    """
    from safetensors.torch import save_file

    missing = [key for key in ("architecture", "classes", "preprocess") if key not in config]
    if missing:
        raise ValueError(f"model config lacks {', '.join(missing)}.")
    taps = getattr(getattr(model, "open_set", None), "taps", ())
    if taps and config.get("gate"):
        config = {**config, "gate": {**config["gate"], "taps": list(taps)}}
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous().clone() for name, t in model.state_dict().items()}
    atomic_write(model_dir / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    # Its paths (the training folder, --out) as valid UTF-8, as every JSON catdog writes: fsutil.json_text.
    atomic_write_text(model_dir / "config.json", json.dumps(utf8_safe_json(config), indent=2, sort_keys=True) + "\n")
