"""The old home of the Predictor, kept so that scripts importing ``catdog.predict`` keep working.

The code is in :mod:`catdog.inference.predictor` and :mod:`catdog.inference.outputs`; catdog's own
modules import from there (an import-linter contract in ``pyproject.toml`` keeps it so).
"""

from catdog.inference.outputs import ModelFn, Outputs, torch_model_fn
from catdog.inference.predictor import (
    DEFAULT_NEITHER_THRESHOLD,
    NEITHER,
    PET_CLASSES,
    Prediction,
    Predictor,
    expand_inputs,
    imagenet_classes,
)

__all__ = [
    "DEFAULT_NEITHER_THRESHOLD",
    "NEITHER",
    "PET_CLASSES",
    "ModelFn",
    "Outputs",
    "Prediction",
    "Predictor",
    "expand_inputs",
    "imagenet_classes",
    "torch_model_fn",
]
