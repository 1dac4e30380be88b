"""The settings of a training run (:class:`TrainConfig`) and the defaults that depend on what is trained."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from catdog.errors import CatdogError
from catdog.models.scratch import SCRATCH_MODELS

PET_CLASSES = {"cat", "dog"}


@dataclass
class TrainConfig:
    """Every option of a training run and its default; saved as ``config.json["training"]``.

    ``None`` means "the default of this kind of run" (see :data:`FAMILY_DEFAULTS`), resolved by
    :meth:`resolved` before training, so the saved config always holds the values used. One stays: under a
    time budget without ``--epochs``, ``epochs`` is None, "as many as the budget allows" (the model's
    ``metrics.epochs_run`` says how many that was).
    """

    data_dir: str
    out: str
    model: str = "catnet"  # seed-cnn, catnet, or a timm model name
    freeze: str = "none"  # "none": every layer trains; "backbone": a new head on cached features;
    # "stages:N": the stem and first N stages frozen, the rest fine-tunes on their cached output
    epochs: int | None = None  # None: the family default; under a time budget, as many as it allows (stays None)
    time_budget: float | None = None  # minutes for everything: decoding, features, training, final evaluation
    batch_size: int | None = None  # global batch (split over torchrun processes)
    lr: float | None = None  # peak learning rate (of the last layers when fine-tuning)
    optimizer: str | None = None  # adamw or adam
    weight_decay: float | None = None
    layer_decay: float | None = None  # fine-tuning: each earlier block's learning rate is this times the next one's
    schedule: str = "cosine"  # cosine (linear warm-up, cosine decay) or onecycle
    warmup_epochs: float = 1.0
    label_smoothing: float | None = None
    mixup: float = 0.0  # MixUp alpha; 0 turns it off
    cutmix: float = 0.0  # CutMix alpha; 0 turns it off
    # Validate, keep and ship an exponential moving average of the weights, with this decay per step at most
    # (it warms up from 0: timm's ModelEmaV3); 0 turns it off.
    ema: float = 0.0
    drop_path: float = 0.0  # stochastic depth of a fine-tuned timm backbone (timm's drop_path_rate)
    image_size: int | None = None  # network input side; None: 128 from scratch, the backbone's own otherwise
    # Validate the final weights, and predict, at this side instead (FixRes: a net trained on random
    # crops sees objects larger than a centre crop of the same side shows them). None: image_size.
    test_image_size: int | None = None
    feature_views: int = 2  # frozen part: views cached per training image (1: as is; 2: + mirror; more: augmented)
    val_fraction: float = 0.1
    # Held out by content hash and never looked at (no epoch, temperature or gate choice sees it), for
    # a final figure: catdog evaluate MODEL DATA_DIR --split test.
    test_fraction: float = 0.0
    patience: int | None = None  # early stopping: epochs without a better validation loss
    seed: int = 0
    deterministic: bool = False
    precision: str = "auto"  # auto: bf16 where it measured faster (resolve_precision), else fp32; fp32, bf16, fp16
    channels_last: bool = True
    compile: bool = False
    workers: int | None = None  # DataLoader processes decoding photos (--test-image-size; a GPU too small for
    # the pixel cache); None: one per core on a GPU, one on a CPU. Training images need none (CachedBatches)
    cache_dir: str | None = None  # decoded images and features; None: $CATDOG_CACHE_DIR or ~/.cache/catdog
    checkpoint_seconds: float = 60.0  # also at every epoch end; 0: after every step
    resume: bool = False
    overwrite: bool = False

    def family(self) -> str:
        if self.model in SCRATCH_MODELS:
            return "scratch"
        if self.freeze == "none":
            return "finetune"
        return "frozen" if self.freeze == "backbone" else "partial"

    def frozen_stages(self) -> int:
        """N of ``--freeze stages:N``."""
        return int(self.freeze.split(":", 1)[1])

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` replaced by the default of this family; validates the choices."""
        kind, _, count = self.freeze.partition(":")
        if self.freeze not in ("none", "backbone") and not (kind == "stages" and count.isdigit() and int(count) > 0):
            raise CatdogError(f"--freeze must be 'none', 'backbone' or 'stages:N' (N >= 1), not '{self.freeze}'.")
        if self.freeze != "none" and self.model in SCRATCH_MODELS:
            raise CatdogError(
                f"--freeze {self.freeze} needs a pretrained backbone; '{self.model}' trains from scratch."
            )
        held_out = self.val_fraction + self.test_fraction
        if not 0 < self.val_fraction < 1 or not 0 <= self.test_fraction < 1 or held_out >= 1:
            raise CatdogError("--val-fraction and --test-fraction must leave some images to train on.")
        if self.lr is not None and self.lr <= 0:
            raise CatdogError(f"--lr must be above 0 (such as 1e-3), not {self.lr:g}: at 0 nothing learns.")
        if self.time_budget is not None and self.time_budget <= 0:
            raise CatdogError("--time-budget must be a positive number of minutes.")
        smallest = getattr(SCRATCH_MODELS.get(self.model), "MIN_SIZE", 8)
        if self.image_size is not None and self.image_size < smallest:
            raise CatdogError(f"--image-size must be at least {smallest} for {self.model}, not {self.image_size}.")
        if self.test_image_size is not None and self.test_image_size < smallest:
            raise CatdogError(
                f"--test-image-size must be at least {smallest} for {self.model}, not {self.test_image_size}."
            )
        if self.test_image_size is not None and self.model == "seed-cnn":
            raise CatdogError("seed-cnn's dense layer fixes its input side: it cannot take --test-image-size.")
        if not 0 <= self.ema < 1:
            raise CatdogError(f"--ema must be a decay in [0, 1), such as 0.999, not {self.ema}.")
        if self.drop_path and self.family() not in ("finetune", "partial"):
            raise CatdogError("--drop-path needs a fine-tuned timm backbone (--freeze none or stages:N).")
        defaults = {**FAMILY_DEFAULTS[self.family()], **MODEL_DEFAULTS.get(self.model, {})}
        if self.time_budget is not None:
            # The budget decides. It was the placeholder 10,000, which config.json then showed as if asked for.
            del defaults["epochs"]
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in defaults.items():
            if values.get(key) is None:
                values[key] = value
        for name, allowed in (
            ("optimizer", ("adamw", "adam")),
            ("schedule", ("cosine", "onecycle")),
            ("precision", ("auto", "fp32", "bf16", "fp16")),
        ):
            if values[name] not in allowed:
                raise CatdogError(f"--{name} must be one of {', '.join(allowed)}, not '{values[name]}'.")
        return TrainConfig(**values)

    def to_dict(self) -> dict:
        return asdict(self)


# The defaults that depend on what is trained: from scratch, fine-tuning (all of it, or the stages
# after a frozen part), or a head on frozen features.
_COMMON = {"optimizer": "adamw", "label_smoothing": 0.1}


FAMILY_DEFAULTS = {
    "scratch": {**_COMMON, "epochs": 30, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05, "image_size": 128,
                "patience": 8},
    "finetune": {**_COMMON, "epochs": 10, "batch_size": 32, "lr": 5e-4, "weight_decay": 0.02, "patience": 4,
                 "layer_decay": 0.7},
    "partial": {**_COMMON, "epochs": 10, "batch_size": 64, "lr": 5e-4, "weight_decay": 0.02, "patience": 4,
                "layer_decay": 0.8},
    "frozen": {**_COMMON, "epochs": 40, "batch_size": 256, "lr": 1e-3, "weight_decay": 1e-3, "patience": 8},
}  # fmt: skip


# Per-model exceptions. seed-cnn is the classic Keras baseline: plain Adam at its default rate,
# plain categorical cross-entropy, no weight decay (its dropout is its regulariser).
MODEL_DEFAULTS = {
    "seed-cnn": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "label_smoothing": 0.0},
}


# Settings that must not change when a run is resumed (the rest, like the budget, may): the schedule's length
# comes back with the checkpoint (more --epochs ran at a rate of 0), the optimiser's groups with its state (a
# new --weight-decay could not load), and the loss would change half-way. A budget may change, not come or go.
RESUME_KEYS = (
    "data_dir", "model", "freeze", "batch_size", "lr", "optimizer", "schedule", "image_size", "seed",
    "val_fraction", "test_fraction", "epochs", "warmup_epochs", "weight_decay", "layer_decay", "label_smoothing",
    "mixup", "cutmix", "drop_path",
)  # fmt: skip
