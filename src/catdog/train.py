"""The old home of training, kept so that scripts importing ``catdog.train`` keep working.

The code is in the :mod:`catdog.training` package, one module per concern; catdog's own modules
import from there (an import-linter contract in ``pyproject.toml`` keeps it so).
"""

import torch

from catdog.training.batches import (
    PADDING,
    CachedBatches,
    ResumableSampler,
    TrainFeatures,
    TrainImages,
    cached_features,
    feature_input,
    image_input,
    prepare_data,
    preprocess_for,
    use_cores,
    warm_up,
)
from catdog.training.calibration import (
    GATE_REFIT_L2,
    GATE_REFIT_PETS,
    builtin_gate_record,
    calibrate,
    calibrated_nll,
    frozen_val_pets,
    gate_config,
    refit_gate,
)
from catdog.training.checkpoint import CHECKPOINT, RunState, check_out_dir, load_checkpoint, save_checkpoint
from catdog.training.config import FAMILY_DEFAULTS, MODEL_DEFAULTS, PET_CLASSES, RESUME_KEYS, TrainConfig
from catdog.training.distributed import DistContext, SharedBudget, barrier, setup_distributed
from catdog.training.loop import (
    DecodedImages,
    estimate_seconds,
    evaluate,
    final_metrics,
    record_epoch,
    train_one_epoch,
    validate_at_size,
    validation_workers,
)
from catdog.training.precision import autocast, autocast_dtype, cpu_has_amx, logits_of, resolve_precision
from catdog.training.progress import Reporter, package_versions, peak_rss_mib, plot_curves
from catdog.training.recipe import train
from catdog.training.schedule import Budget, Schedule, make_optimizer


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature a model is deployed at, as :func:`catdog.training.calibration.calibrate` decides it (1.0 on
    too few validation photos). This name once imported the bare fit (now ``calibration.nll_temperature``), which
    fitted 20.0 on a 6-photo split; it is kept for scripts, the one function of this name."""
    return calibrate(logits, labels).temperature


__all__ = [
    "Budget",
    "CHECKPOINT",
    "CachedBatches",
    "DecodedImages",
    "DistContext",
    "FAMILY_DEFAULTS",
    "GATE_REFIT_L2",
    "GATE_REFIT_PETS",
    "MODEL_DEFAULTS",
    "PADDING",
    "PET_CLASSES",
    "RESUME_KEYS",
    "Reporter",
    "ResumableSampler",
    "RunState",
    "Schedule",
    "SharedBudget",
    "TrainConfig",
    "TrainFeatures",
    "TrainImages",
    "autocast",
    "autocast_dtype",
    "barrier",
    "builtin_gate_record",
    "cached_features",
    "calibrate",
    "calibrated_nll",
    "check_out_dir",
    "cpu_has_amx",
    "estimate_seconds",
    "evaluate",
    "feature_input",
    "final_metrics",
    "fit_temperature",
    "frozen_val_pets",
    "gate_config",
    "image_input",
    "load_checkpoint",
    "logits_of",
    "make_optimizer",
    "package_versions",
    "peak_rss_mib",
    "plot_curves",
    "prepare_data",
    "preprocess_for",
    "record_epoch",
    "refit_gate",
    "resolve_precision",
    "save_checkpoint",
    "setup_distributed",
    "train",
    "train_one_epoch",
    "use_cores",
    "validate_at_size",
    "validation_workers",
    "warm_up",
]
