"""Training: ``catdog train DATA_DIR --out MODEL_DIR``, in one process or many (torchrun, DDP).

:func:`train` is the whole recipe, step by step, in the style of the torchvision reference
scripts: seed, build the model, decode and cache the data, (optionally) cache frozen
backbone features, build optimizer and schedule, resume, run the epochs (checkpointing,
keeping the best weights by calibrated validation loss, stopping early or when the time budget is
spent), fit a temperature on the validation split and write the model directory.

Exact resumption: every random draw of a training step is seeded from (seed, epoch, step,
rank) and every augmentation from (seed, epoch, sample index), so a run restarted from any
checkpoint replays the same steps; checkpoints hold the model, optimizer, scheduler, scaler,
position in the epoch, running metrics and RNG states, and are written atomically.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from torch import nn
from torch.utils.data import DistributedSampler, Subset, TensorDataset

from catdog.augment import batch_augmenter, mix_transform, sample_seed
from catdog.data import NEITHER, CachedImages, DatasetError, PreparedData, discover, make_loader, prepare
from catdog.errors import CatdogError
from catdog.features import (
    FeatureStore,
    PooledFeatures,
    cache_key,
    extract,
    onnx_feature_fn,
    split_backbone,
    torch_feature_fn,
)
from catdog.fsutil import atomic_write, atomic_write_text, default_cache_dir
from catdog.models import ModelError, build_model, save_model_dir
from catdog.models.files import BUILTIN_BACKBONE
from catdog.models.gate import OPEN_SET, PET_MASS_THRESHOLD, TARGET_PETS_TURNED_AWAY, fit_weights, operating_bias
from catdog.models.scratch import SCRATCH_MODELS
from catdog.preprocess import Preprocess, normalize, to_uint8

PET_CLASSES = {"cat", "dog"}
CHECKPOINT = "checkpoint.pt"
PADDING = -100  # the label of rows that fill up a last evaluation batch (not images of the split)


@dataclass
class TrainConfig:
    """Every option of a training run and its default; saved as ``config.json["training"]``.

    ``None`` means "the default of this kind of run" (see :data:`FAMILY_DEFAULTS`), resolved by
    :meth:`resolved` before training, so the saved config always holds the values used.
    """

    data_dir: str
    out: str
    model: str = "catnet"  # seed-cnn, catnet, or a timm model name
    freeze: str = "none"  # "none": every layer trains; "backbone": a new head on cached features;
    # "stages:N": the stem and first N stages frozen, the rest fine-tunes on their cached output
    epochs: int | None = None  # None: the family default, or as many as the time budget allows
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
    image_size: int | None = None  # network input side; None: 128 from scratch, the backbone's own otherwise
    # Validate the final weights, and predict, at this side instead (FixRes: a net trained on random
    # crops sees objects larger than a centre crop of the same side shows them). None: image_size.
    test_image_size: int | None = None
    feature_views: int = 2  # frozen part: views cached per training image (1: as is; 2: + mirror; more: augmented)
    val_fraction: float = 0.1
    # Held out by content hash and never looked at (no epoch, temperature or gate choice sees it), for
    # a final figure: catdog evaluate MODEL DIR --split test.
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
    checkpoint_seconds: float = 60.0  # also at every epoch end; 0 checkpoints after every step
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
        defaults = {**FAMILY_DEFAULTS[self.family()], **MODEL_DEFAULTS.get(self.model, {})}
        if self.time_budget is not None:
            defaults["epochs"] = 10_000  # the budget decides
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

# Settings that must not change when a run is resumed (the rest, like the budget, may).
RESUME_KEYS = (
    "data_dir", "model", "freeze", "batch_size", "lr", "optimizer", "schedule", "image_size", "seed",
    "val_fraction", "test_fraction",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, console: Console | None = None, started: float | None = None) -> dict:
    """Train as ``cfg`` says and write the model directory; returns the final metrics.

    ``started``: the ``time.monotonic()`` the time budget counts from (default: now).
    """
    started = time.monotonic() if started is None else started
    cfg = cfg.resolved()
    deadline = started + cfg.time_budget * 60 if cfg.time_budget else None
    ctx = setup_distributed()
    cfg = replace(cfg, precision=resolve_precision(cfg, ctx.device))  # the saved config says what ran
    threads = torch.get_num_threads()  # use_cores may change it; restored at the end
    log = Reporter(console or Console(stderr=True), enabled=ctx.is_main)
    out = Path(cfg.out)
    # Seconds from ``started`` to each milestone: where a short run's time goes (kept in the metrics).
    timeline: dict[str, float] = {}

    def mark(milestone: str) -> None:
        timeline[milestone] = round(time.monotonic() - started, 1)

    mark("imported")  # the command's imports (torch, timm) are behind us
    try:
        # 1. Reproducibility and the output folder.
        check_out_dir(out, cfg)
        torch.manual_seed(cfg.seed)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        # No cuDNN autotuning: on an H200 it made the first epoch of a Lite0 fine-tune take 55 s
        # instead of 27 s (every new batch shape is tried with many kernels), and the steps after
        # it ran no faster (Lite0 30 vs 32 ms, catnet 11 vs 11 ms: benchmarks/gpu_probe.py).
        torch.backends.cudnn.benchmark = False

        # 2. The classes, then the model and its preprocessing.
        classes = discover(cfg.data_dir, image_files_only=True).model_classes  # a `neither` folder is no class
        if len(classes) < 2:
            only = f" ({classes[0]})" if classes else ""
            raise DatasetError(f"'{cfg.data_dir}' has only one class{only}; training needs at least two.")
        gate = cfg.family() != "scratch" and set(classes) <= PET_CLASSES
        model = build_model(cfg.model, len(classes), pretrained=True, gate=gate)
        if gate and cfg.family() in ("finetune", "partial"):
            # Fine-tuning moves the features the ImageNet head reads: the gate keeps a pretrained copy.
            model.add_pristine_gate(cfg.frozen_stages() if cfg.family() == "partial" else 0)
        pre = preprocess_for(model, cfg)
        if gate and cfg.model == BUILTIN_BACKBONE:
            from catdog.models.builtin import load_builtin_gate

            # The pristine backbone's features are the built-in model's: its open-set gate applies as
            # shipped, the one fitted at the size the model will predict at.
            size = cfg.test_image_size or pre.image_size
            model.add_open_set_gate(load_builtin_gate(model.backbone.num_features, size))
        if cfg.model in SCRATCH_MODELS:
            model(torch.zeros(1, 3, pre.image_size, pre.image_size))  # materialise seed-cnn's lazy Dense layer
        log.info(f"model {cfg.model} ({cfg.family()}), {len(classes)} classes: {', '.join(classes)}")
        mark("model_built")

        # 3. Decode every image once into the pixel cache (rank 0 first, the others then find it full).
        #    On one GPU, a copy of the model takes the slow first steps meanwhile (see warm_up).
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        if ctx.device.type == "cuda" and cfg.family() in ("scratch", "finetune") and ctx.world == 1:
            with ThreadPoolExecutor(1, thread_name_prefix="catdog-decode") as background:
                decoding = background.submit(prepare_data, cfg, pre, cache_dir, ctx, log)
                warm_up(model, pre, cfg, ctx)
                mark("warmed_up")
                data = decoding.result()
        else:
            data = prepare_data(cfg, pre, cache_dir, ctx, log)
        mark("data_ready")
        # Photos of the `neither` folder (label len(classes)) never train the classes: they refit the gate.
        # The test split's photos, pets or not, are left out of everything.
        parts = data.split(cfg.val_fraction, cfg.test_fraction)
        held_for_test = set(parts.pop("test"))
        splits = {name: [i for i in part if data.labels[i] < len(classes)] for name, part in parts.items()}
        negatives = [i for i, y in enumerate(data.labels) if y == len(classes) and i not in held_for_test]
        if not splits["train"] or not splits["val"]:
            raise DatasetError(f"'{cfg.data_dir}' has too few images to hold some out for validation; add more.")
        log.info(f"{len(splits['train'])} training and {len(splits['val'])} validation images")

        # 4. What trains: the whole network on augmented images, or the part after a frozen one on
        #    that part's cached output (a new head on pooled features, or the last stages and the head).
        device = ctx.device
        if cfg.family() in ("frozen", "partial"):
            backbone = model.backbone if gate else model
            new_head = model.head if gate else None
            if cfg.family() == "frozen":
                extractor, trainable = PooledFeatures(backbone), new_head or model.get_classifier()
                shape = None
            else:
                gate_copy, open_set = (model.gate, model.open_set) if gate else (None, None)
                extractor, trainable = split_backbone(backbone, cfg.frozen_stages(), new_head, gate_copy, open_set)
                extractor.requires_grad_(False)
                probe = extractor[:-1].eval()(torch.zeros(1, 3, pre.image_size, pre.image_size))
                shape = tuple(probe.shape[1:])  # the cached rows are these activation maps, flattened
            train_set, val_set = cached_features(cfg, data, splits, pre, extractor, cache_dir, ctx, deadline, log)
            train_input = eval_input = feature_input(device, shape, cfg.channels_last)
            workers = 0  # the features are in memory already
        else:
            # The images are augmented where the step runs, a batch at a time (augment.augment_batch).
            trainable = model
            train_set = TrainImages(CachedImages(data, splits["train"]))
            val_set = CachedImages(data, splits["val"])
            train_input = image_input(pre, device, cfg.channels_last, augment=True)
            eval_input = image_input(pre, device, cfg.channels_last, eval_view=True)
            workers = cfg.workers
            if device.type == "cpu":
                use_cores()  # no workers beside the step: every core of this process computes
        if cfg.family() in ("finetune", "partial") and gate:
            model.backbone.get_classifier().requires_grad_(False)  # the ImageNet head stays the `neither` gate
        trainable.to(device)
        if cfg.channels_last and cfg.family() != "frozen":
            trainable.to(memory_format=torch.channels_last)

        per_rank_batch = max(1, cfg.batch_size // ctx.world)
        sampler = ResumableSampler(train_set, ctx.world, ctx.rank, cfg.seed)
        val_share = Subset(val_set, range(ctx.rank, len(val_set), ctx.world))
        if isinstance(train_set, TrainImages) and CachedBatches.fits(train_set, val_set, device):
            # Batches straight from the pixel cache (in GPU memory, or the CPU's memory map): no DataLoader.
            train_loader = CachedBatches(train_set.images, device, per_rank_batch, sampler)
            val_loader = CachedBatches(val_set, device, 2 * per_rank_batch, order=list(val_share.indices))
        else:
            train_loader = make_loader(train_set, per_rank_batch, sampler=sampler, workers=workers)
            val_loader = make_loader(val_share, 2 * per_rank_batch, workers=workers)
        steps_per_epoch = len(train_loader)

        # 5. Optimizer, schedule, loss, precision.
        optimizer = make_optimizer(cfg, model, trainable, fused=True)
        schedule = Schedule(cfg.schedule, cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        dtype = autocast_dtype(cfg, device)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        mix = mix_transform(len(classes), cfg.mixup, cfg.cutmix) if cfg.family() in ("scratch", "finetune") else None
        forward_module = trainable
        if ctx.world > 1:
            forward_module = nn.parallel.DistributedDataParallel(
                trainable, device_ids=[device.index] if device.type == "cuda" else None
            )
        if cfg.compile:
            forward_module = torch.compile(forward_module)

        # 6. Resume: model, optimizer, scheduler, scaler, position, running metrics and RNG state.
        state = RunState()
        if cfg.resume:
            state = load_checkpoint(out, cfg, trainable, optimizer, scheduler, scaler)
            log.info(f"resumed at epoch {state.epoch + 1}, step {state.step} of {steps_per_epoch}")

        # 7. The epochs (under a budget, leaving time for the final validation at the test size).
        log.info(f"training on {device} with {ctx.world} process(es), {steps_per_epoch} steps per epoch")
        budget = Budget(deadline, schedule)
        out_of_time = SharedBudget(budget, ctx)
        test_pre = replace(pre, image_size=cfg.test_image_size) if cfg.test_image_size else pre
        if test_pre != pre and deadline is not None:
            budget.final_seconds = estimate_seconds(
                model, test_pre, len(splits["val"]) // ctx.world, device, validation_workers(cfg, device)
            )

        def save(st: RunState) -> None:
            if ctx.is_main:
                save_checkpoint(out, cfg, st, trainable, optimizer, scheduler, scaler)

        stop_reason = ""
        mark("training_started")
        log.info(
            f"training starts {timeline['training_started']:.1f} s after start (model built at "
            f"{timeline['model_built']:.1f} s, images decoded at {timeline['data_ready']:.1f} s)"
        )
        while state.epoch < cfg.epochs and not stop_reason:
            sampler.set_epoch(state.epoch)
            sampler.start = state.step * per_rank_batch
            model.eval()  # with a frozen part, only `trainable` trains (and nothing else sees batches)
            trainable.train()
            budget_hit = train_one_epoch(
                cfg, forward_module, train_loader, train_input, criterion, optimizer, scheduler, scaler, dtype, mix,
                state, steps_per_epoch, ctx, log, save, out_of_time,
            )  # fmt: skip
            tick = time.monotonic()
            val = evaluate(forward_module, val_loader, eval_input, dtype, ctx)
            budget.eval_seconds = time.monotonic() - tick
            elapsed = time.monotonic() - started
            record_epoch(cfg, state, val, trainable, budget_hit, steps_per_epoch, ctx, out, log, elapsed)
            if budget_hit:
                stop_reason = "time budget spent"
            elif state.bad_epochs >= cfg.patience:
                stop_reason = f"no better validation loss for {cfg.patience} epochs"
            state.epoch, state.step = state.epoch + 1, 0
            state.reset_running()
            save(state)
        log.info(f"stopped: {stop_reason or f'{cfg.epochs} epochs done'}")
        mark("training_ended")

        # 8. The best weights (validated again at the test size), a calibrated temperature, and the
        #    model directory (rank 0 writes).
        trainable.load_state_dict(state.best_state)
        train_pre = pre  # what the pixel cache holds; the model may predict at another size (test_pre)
        if test_pre != pre:
            at_size = validate_at_size(model, data, splits["val"], test_pre, cfg, ctx, dtype, per_rank_batch)
            log.info(
                f"validation at {test_pre.image_size} px: acc {at_size['val_accuracy']:.2%} "
                f"(at {pre.image_size} px: {state.best_accuracy:.2%})"
            )
            state.train_size_metrics = {"val_loss": state.best_loss, "val_accuracy": state.best_accuracy}
            state.best_loss, state.best_accuracy = at_size["val_loss"], at_size["val_accuracy"]
            state.best_logits, state.best_labels = at_size["logits"], at_size["labels"]
            state.best_pets = at_size["pets"]
            pre = test_pre  # the model directory predicts at the size it was validated at
        if gate and cfg.family() == "frozen" and (state.best_pets is None or not len(state.best_pets)):
            state.best_pets = frozen_val_pets(model, val_set)  # validation ran the head alone, on cached features
        if negatives and getattr(model, "open_set", None) is not None and ctx.is_main:
            log.info(f"refitting the `neither` gate with {len(negatives)} photos of the neither folder")
            # On features of the size the model predicts at (its gate was fitted there), decoded anew if need be.
            at_size = data if pre == train_pre else prepare(cfg.data_dir, pre, cache_dir, classes=data.classes)
            state.best_pets = refit_gate(model.open_set, data, at_size, splits, negatives, pre, cache_dir)
        mark("validated")
        metrics = final_metrics(state, time.monotonic() - started)
        metrics["timeline_seconds"] = timeline
        if ctx.is_main:
            temperature = fit_temperature(state.best_logits, state.best_labels)
            metrics["val_loss_calibrated"] = round(calibrated_nll(state.best_logits, state.best_labels, temperature), 5)
            config = {
                "architecture": cfg.model,
                "classes": classes,
                "preprocess": pre.to_dict(),
                "temperature": temperature,
                "gate": gate_config(state.best_pets, model, pre.image_size, len(negatives)) if gate else None,
                "training": cfg.to_dict(),
                # What catdog evaluate --split needs to find the held-out photos again (also in ONNX exports).
                "split": {"by": "content hash", "val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction},
                "data": {
                    "root": str(Path(cfg.data_dir).resolve()),
                    "fingerprint": data.fingerprint(),
                    "train_images": len(splits["train"]),
                    "val_images": len(splits["val"]),
                    "test_images": len(held_for_test),
                    "neither_images": len(negatives),
                    "unreadable_files": len(data.unreadable),
                    "unreadable": [{"path": str(path), "reason": reason} for path, reason in data.unreadable],
                },
                "metrics": metrics,
                "versions": package_versions(),
            }
            save_model_dir(model.cpu().to(memory_format=torch.contiguous_format), config, out)
            (out / CHECKPOINT).unlink(missing_ok=True)
            log.info(
                f"saved {out}: val accuracy {metrics['val_accuracy']:.2%}, val loss {metrics['val_loss']:.4f} "
                f"(epoch {metrics['best_epoch']}), temperature {temperature:.3f}, {metrics['wall_seconds']:.0f} s"
            )
        barrier(ctx)
        return metrics
    finally:
        torch.set_num_threads(threads)
        if ctx.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train_one_epoch(
    cfg, model, loader, to_input, criterion, optimizer, scheduler, scaler, dtype, mix,
    state, steps_per_epoch, ctx, log, save, out_of_time,
) -> bool:  # fmt: skip
    """One pass over this rank's share of the training set; returns True when the time budget ran out.

    The running loss and accuracy add up on the device and reach the host about once a second:
    reading them every step would make the CPU wait for the GPU at every step.
    """
    last_save = folded_at = time.monotonic()
    running = None  # (loss sum, correct) on the device since the last fold

    def fold() -> bool:
        """Add the running sums into ``state`` (waiting for the device); True if there were any."""
        nonlocal running, folded_at
        folded_at = time.monotonic()
        if running is None:
            return False
        loss_sum, correct = running.tolist()
        state.loss_sum, state.correct, running = state.loss_sum + loss_sum, state.correct + int(correct), None
        return True

    def final_fold() -> None:
        """The fold that ends a stretch of steps, its wait for the device counted as training time."""
        tick = time.monotonic()
        fold()
        state.train_seconds += time.monotonic() - tick

    def stats() -> dict:
        return {
            "loss": state.loss_sum / max(state.seen, 1),
            "acc": state.correct / max(state.seen, 1),
            "ips": ctx.world * state.seen / max(state.train_seconds, 1e-9),
        }

    with log.progress(f"epoch {state.epoch + 1}", steps_per_epoch, state.step) as bar:
        for images, labels, seeds in loader:
            tick = time.monotonic()
            # Every random draw of this step (dropout, mixup) comes from this seed: resumable, exactly.
            torch.manual_seed(sample_seed(cfg.seed, "step", state.epoch, state.step, ctx.rank))
            x = to_input(images, seeds)
            y = labels.to(x.device, non_blocking=True)
            target = y
            if mix is not None:
                x, target = mix(x, y)
            with autocast(x.device, dtype):
                logits = logits_of(model(x))
                loss = criterion(logits, target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            state.last_lr = scheduler.get_last_lr()[0]
            state.step += 1
            state.global_step += 1
            step_sums = torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double()])
            running = step_sums if running is None else running + step_sums
            state.seen += len(y)
            folded = time.monotonic() - folded_at >= 1.0 and fold()
            state.train_seconds += time.monotonic() - tick  # the fold's wait for the device included
            bar.update(**(stats() if folded else {}))
            if out_of_time():
                final_fold()
                return True
            if time.monotonic() - last_save >= cfg.checkpoint_seconds and state.step < steps_per_epoch:
                fold()
                save(state)
                last_save = time.monotonic()
        final_fold()
    return False


@torch.no_grad()  # not inference_mode: the logits later fit the temperature with autograd
def evaluate(model, loader, to_input, dtype, ctx) -> dict:
    """Loss and accuracy over the whole validation split (each rank does its share, then sum)."""
    model.eval()
    all_logits, all_labels, all_pets = [], [], []
    for images, labels in loader:
        x = to_input(images, None)
        with autocast(x.device, dtype):
            out = model(x)
        all_logits.append(logits_of(out).float())  # kept on the device until the end: no sync per batch
        if isinstance(out, tuple):  # a gated model's pet score, to check the gate after fine-tuning
            all_pets.append(out[1].float())
        all_labels.append(labels)
    logits = torch.cat(all_logits).cpu() if all_logits else torch.zeros(0, 1)
    labels = torch.cat(all_labels).cpu() if all_labels else torch.zeros(0, dtype=torch.long)
    pets = torch.cat(all_pets).cpu() if all_pets else torch.zeros(0)
    real = labels != PADDING  # rows that only fill up a last batch (CachedBatches)
    logits, labels, pets = logits[real], labels[real], pets[real] if len(pets) else pets
    sums = torch.tensor(
        [F.cross_entropy(logits, labels, reduction="sum").item() if len(labels) else 0.0,
         (logits.argmax(1) == labels).sum().item(), len(labels)],
        dtype=torch.float64,
    )  # fmt: skip
    if ctx.world > 1:
        sums = sums.to(ctx.comm_device)
        dist.all_reduce(sums)
        sums = sums.cpu()
        gathered = [None] * ctx.world
        dist.all_gather_object(gathered, (logits.numpy(), labels.numpy(), pets.numpy()))
        logits = torch.from_numpy(np.concatenate([g[0] for g in gathered]))
        labels = torch.from_numpy(np.concatenate([g[1] for g in gathered]))
        pets = torch.from_numpy(np.concatenate([g[2] for g in gathered]))
    loss_sum, correct, n = sums.tolist()
    return {"val_loss": loss_sum / n, "val_accuracy": correct / n, "logits": logits, "labels": labels, "pets": pets}


def record_epoch(cfg, state, val, trainable, partial, steps_per_epoch, ctx, out, log, elapsed: float = 0.0) -> None:
    """Append the epoch to the history, keep the best weights, write metrics.jsonl and curves.png."""
    seen = state.seen or 1
    # The model is deployed with a temperature fitted on these logits, so the epoch is chosen by the loss
    # it will have then. The raw loss also counts the under-confidence that label smoothing trains in and
    # the temperature takes out: it kept a 45-minute fine-tune's first epoch (98.70 % at 224 px) over
    # later ones up to 99.02 %, on raw losses 0.5-1.1 % apart.
    calibrated = calibrated_nll(val["logits"], val["labels"], fit_temperature(val["logits"], val["labels"]))
    row = {
        "epoch": state.epoch + 1,
        "steps": state.step,
        "partial": partial or state.step < steps_per_epoch,
        "train_loss": round(state.loss_sum / seen, 5),
        "train_accuracy": round(state.correct / seen, 5),
        "val_loss": round(val["val_loss"], 5),
        "val_loss_calibrated": round(calibrated, 5),
        "val_accuracy": round(val["val_accuracy"], 5),
        "lr": round(state.last_lr, 8),
        "images_per_s": round(ctx.world * state.seen / max(state.train_seconds, 1e-9), 2),
        "wall_seconds": round(elapsed, 1),  # since the command started (a resumed run: since its restart)
    }
    if calibrated < state.best_selection:
        state.best_selection, state.best_epoch, state.bad_epochs = calibrated, state.epoch + 1, 0
        state.best_loss = val["val_loss"]
        state.best_accuracy = val["val_accuracy"]
        state.best_state = {k: v.detach().cpu().clone() for k, v in trainable.state_dict().items()}
        state.best_logits, state.best_labels, state.best_pets = val["logits"], val["labels"], val["pets"]
    else:
        state.bad_epochs += 1
    state.history.append(row)
    log.info(
        f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.2%} | "
        f"val loss {row['val_loss']:.4f} (calibrated {calibrated:.4f}) acc {row['val_accuracy']:.2%} | "
        f"{row['images_per_s']:.1f} images/s"
    )
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state.history))
        plot_curves(state.history, out / "curves.png")


def final_metrics(state: RunState, wall_seconds: float) -> dict:
    metrics = {
        "val_loss": round(state.best_loss, 5),
        "val_accuracy": round(state.best_accuracy, 5),
        "best_epoch": state.best_epoch,
        "epochs_run": len(state.history),
        "train_images_per_s": state.history[-1]["images_per_s"] if state.history else 0.0,
        "wall_seconds": round(wall_seconds, 1),
        "peak_rss_mib": peak_rss_mib(),
    }
    if state.train_size_metrics:  # validated again at --test-image-size: the training size's figures too
        metrics.update({f"{k}_at_train_size": round(v, 5) for k, v in state.train_size_metrics.items()})
    return metrics


class DecodedImages(torch.utils.data.Dataset):
    """``(uint8 CHW square, label)`` decoded from the files with ``pre`` (no cache: one pass at another size)."""

    def __init__(self, data: PreparedData, indices: list[int], pre: Preprocess) -> None:
        self.paths = [data.paths[i] for i in indices]
        self.labels = [data.labels[i] for i in indices]
        self.pre = pre

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        square = to_uint8(self.paths[index], self.pre)
        return torch.from_numpy(np.ascontiguousarray(square.transpose(2, 0, 1))), self.labels[index]


def validate_at_size(model, data, val_indices, pre, cfg, ctx, dtype, per_rank_batch) -> dict:
    """The whole model (frozen part included) over the validation photos, decoded at ``pre``'s size."""
    model.to(ctx.device)
    images = DecodedImages(data, val_indices, pre)
    share = Subset(images, range(ctx.rank, len(images), ctx.world))
    loader = make_loader(share, per_rank_batch, workers=validation_workers(cfg, ctx.device))
    to_input = image_input(pre, ctx.device, cfg.channels_last, eval_view=True)
    return evaluate(model, loader, to_input, dtype, ctx)


def validation_workers(cfg: TrainConfig, device: torch.device) -> int:
    """DataLoader processes that decode for :func:`validate_at_size` (a GPU waits for them; a CPU computes)."""
    if cfg.workers is not None:
        return cfg.workers
    return min(8, len(os.sched_getaffinity(0))) if device.type == "cuda" else 1


def estimate_seconds(model: nn.Module, pre: Preprocess, images: int, device: torch.device, workers: int = 1) -> float:
    """A generous guess of :func:`validate_at_size`'s time: one timed batch of 8, plus decoding in ``workers``."""
    x = torch.zeros(8, 3, pre.image_size, pre.image_size, device=device)
    model.to(device).eval()
    with torch.no_grad():
        model(x)  # the first call of a shape sets up its kernels: not what each batch costs
        tick = time.monotonic()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        per_image = (time.monotonic() - tick) / 8
    return 1.3 * images * (per_image + 0.01 / max(1, workers)) + 10.0 / max(1, workers) ** 0.5


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def preprocess_for(model: nn.Module, cfg: TrainConfig) -> Preprocess:
    """Scratch nets: ``image_size`` at crop 0.875; timm backbones: their pretrained settings."""
    if cfg.model in SCRATCH_MODELS:
        return Preprocess(image_size=cfg.image_size, crop_pct=0.875, interpolation="bilinear")
    from catdog.models.pretrained import pretrained_preprocess

    pre = pretrained_preprocess(model.backbone if hasattr(model, "backbone") else model)
    return replace(pre, image_size=cfg.image_size) if cfg.image_size else pre


def prepare_data(cfg: TrainConfig, pre: Preprocess, cache_dir: Path, ctx, log) -> PreparedData:
    """Hash and decode every image (rank 0 first); unreadable files are skipped and counted."""
    data = None
    dataset = discover(cfg.data_dir, image_files_only=True)
    # The model's classes first, so that their labels are the model's outputs; `neither` photos come last.
    order = dataset.model_classes + [NEITHER] * (NEITHER in dataset.classes)
    if ctx.is_main:
        n_files = len(dataset.files)
        with log.progress("decoding images", n_files) as bar:
            data = prepare(cfg.data_dir, pre, cache_dir, classes=order, progress=lambda n: bar.update(advance=n))
    barrier(ctx)
    if data is None:
        data = prepare(cfg.data_dir, pre, cache_dir, classes=order)
    total = len(data.paths) + len(data.unreadable)
    if not data.paths:
        raise DatasetError(f"None of the {total} image files in '{cfg.data_dir}' can be decoded.")
    if data.unreadable:
        log.info(f"skipped {len(data.unreadable)} of {total} files that cannot be used, e.g. {data.unreadable[0][1]}")
    present = sorted({data.classes[y] for y in data.labels} - {NEITHER})
    if len(present) < 2:
        raise DatasetError(f"Only class '{present[0]}' has usable images in '{cfg.data_dir}'; training needs two.")
    return data


class TrainImages(torch.utils.data.Dataset):
    """Training images ``(uint8 CHW, label, seed)``: each with the augmentation seed the sampler gives it."""

    def __init__(self, images: CachedImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        image, label = self.images[index]
        return image, label, seed


class CachedBatches:
    """Batches of cached uint8 squares, straight from the pixel cache: the image path's DataLoader.

    On a GPU the split's squares are copied into its memory once; on a CPU each batch is gathered
    from the cache's memory map (64 squares at 128 px: about 4 MB, a millisecond), in the process
    that trains, so no worker process competes with the step for the cores. Training batches
    follow ``sampler`` (whole batches: the few images of a last partial one wait for the next
    epoch's shuffle) and carry each image's augmentation seed; evaluation batches follow ``order``.
    """

    def __init__(self, images: CachedImages, device: torch.device, batch_size: int, sampler=None, *, order=None):
        self.rows = np.asarray(images.rows, dtype=np.int64)
        self.on_gpu = device.type == "cuda"
        if self.on_gpu:
            self.pixels = torch.from_numpy(np.ascontiguousarray(images.pixels()[self.rows])).to(device)
        else:
            self.pixels = images.pixels()  # the memory map: (rows, side, side, 3)
        self.labels = torch.tensor(images.labels, device=device)
        self.batch_size, self.sampler = batch_size, sampler
        self.order = list(range(len(self.rows))) if order is None else order

    @staticmethod
    def fits(train: TrainImages, val: CachedImages, device: torch.device) -> bool:
        """On a GPU: whether both splits take under half of its free memory (the rest is for training)."""
        if device.type != "cuda":
            return True  # a memory map: the page cache holds what fits, the disk the rest
        size = (len(train) + len(val)) * val.side * val.side * 3
        return size < 0.5 * torch.cuda.mem_get_info(device)[0]

    def __len__(self) -> int:
        if self.sampler is None:
            return math.ceil(len(self.order) / self.batch_size)
        return self._training_images(len(self.sampler)) // self.batch_size or 1

    def _training_images(self, available: int) -> int:
        """Whole batches only: a last, smaller batch is one more shape for cuDNN to plan (seconds, once)."""
        whole = available - available % self.batch_size
        return whole or available

    def _squares(self, index: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` uint8, NHWC in memory: the channels_last layout the convolutions read."""
        if self.on_gpu:
            return self.pixels[index].permute(0, 3, 1, 2)
        return torch.from_numpy(self.pixels[self.rows[index.numpy()]]).permute(0, 3, 1, 2)

    def __iter__(self):
        device = self.labels.device
        if self.sampler is None:
            order = torch.tensor(self.order, dtype=torch.long, device=device)
            labels = self.labels[order]
            short = -len(order) % self.batch_size
            if short:
                # The last batch is filled up to the others' size with rows labelled PADDING (evaluate
                # drops them): one batch shape for cuDNN to plan, not two (seconds, the first time on a GPU).
                order = torch.cat([order, order[-1:].expand(short)])
                labels = torch.cat([labels, labels.new_full((short,), PADDING)])
            for start in range(0, len(order), self.batch_size):
                batch = slice(start, start + self.batch_size)
                yield self._squares(order[batch]), labels[batch]
            return
        pairs = list(self.sampler)[: self._training_images(len(self.sampler))]
        order = torch.tensor([i for i, _ in pairs], dtype=torch.long, device=device)
        seeds = np.array([s for _, s in pairs], dtype=np.uint64)
        for start in range(0, len(pairs), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self._squares(index), self.labels[index], seeds[start : start + self.batch_size]


class TrainFeatures(torch.utils.data.Dataset):
    """Cached feature vectors ``(features, label, seed)`` for the frozen-backbone head."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        return self.features[index], self.labels[index], seed


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch) that can start mid-epoch and gives each sample a seed.

    It yields ``(index, seed)``; the seed depends on (run seed, epoch, index) only, so the
    augmentation of a sample is the same with any number of workers or processes.
    """

    def __init__(self, dataset, world: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.start = 0  # samples of this rank already consumed in the current epoch

    def __iter__(self):
        indices = list(super().__iter__())[self.start :]
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


def use_cores() -> None:
    """Give every core of this process's share of the machine to the training step's threads.

    The image path needs no DataLoader workers on a CPU (CachedBatches, augment_batch), and
    torchrun starts each process with one thread (OMP_NUM_THREADS=1), so a rank takes its
    share of the cores here. Workers beside the step cost more than they give: on 2 cores,
    2 threads + 2 workers trained catnet at 12-25 images/s when the machine was busy.
    """
    cores = len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, cores))


def warm_up(model: nn.Module, pre: Preprocess, cfg: TrainConfig, ctx) -> None:
    """One training and one evaluation step of a copy of the model on random pixels (GPU, this thread).

    A GPU's first steps at each batch shape build cuDNN's execution plans and load their kernels:
    the first epoch of a Lite0 fine-tune on an H200 took 27 s instead of 5. Plans depend on shapes,
    not weights, so a copy can build them while the CPUs decode the photos. PyTorch keeps them per
    thread (the forward pass's in this one, the backward pass's in autograd's device thread), so
    this must run in the thread that trains. A failure is left for the real first step to report.
    """
    device, batch = ctx.device, max(1, cfg.batch_size // ctx.world)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    with suppress(Exception):
        twin = copy.deepcopy(model).to(device, memory_format=memory_format).train()
        x = torch.randn(2 * batch, 3, pre.image_size, pre.image_size, device=device)
        x = x.contiguous(memory_format=memory_format)
        with autocast(device, autocast_dtype(cfg, device)):
            logits_of(twin(x[:batch])).float().sum().backward()
            with torch.no_grad():
                twin.eval()(x)  # the evaluation batches are twice as large
        torch.cuda.synchronize(device)


def image_input(pre: Preprocess, device, channels_last: bool, *, augment: bool = False, eval_view: bool = False):
    """uint8 batch → normalised float input on ``device`` (augmented there first: see augment_batch)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def finish(images: torch.Tensor) -> torch.Tensor:
        return normalize(images, pre, crop=eval_view).contiguous(memory_format=memory_format)

    # On a CPU the colour jitter, normalisation and layout change are compiled into one pass (see
    # batch_augmenter); on a GPU they are a few fast kernels either way.
    augmenter = batch_augmenter(pre.image_size, finish, fuse=torch.device(device).type == "cpu") if augment else None

    def run(images: torch.Tensor, seeds) -> torch.Tensor:
        images = images.to(device, non_blocking=True)
        if augmenter:
            return augmenter(images, np.asarray(seeds, dtype=np.uint64))
        return finish(images)

    return run


def feature_input(device, shape: tuple[int, ...] | None, channels_last: bool):
    """Cached rows → float32 input on ``device``: vectors as they are, activation maps reshaped to ``shape``."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def run(rows: torch.Tensor, seeds) -> torch.Tensor:
        x = rows.to(device, non_blocking=True).float()
        return x if shape is None else x.view(len(x), *shape).contiguous(memory_format=memory_format)

    return run


def cached_features(cfg, data, splits, pre, extractor, cache_dir, ctx, deadline, log):
    """The frozen part's output for val (view 0) and train (``feature_views`` views), from the disk cache.

    Missing features are computed by rank 0 (ONNX Runtime on CPU, PyTorch on a GPU), val
    first, then the training images in hash order (a random-like order), one view after the
    other; under a time budget extraction stops with enough time left to train the head.
    """
    key = cache_key(cfg.model, pre, cfg.freeze)
    # Activation maps are large (about 15,000 values per image): half precision halves cache and memory.
    store = FeatureStore(cache_dir, key, np.float32 if cfg.family() == "frozen" else np.float16)
    by_hash = sorted(splits["train"], key=lambda i: data.hashes[i])
    val_jobs = [(i, 0) for i in splits["val"]]
    train_jobs = [(i, v) for v in range(max(1, cfg.feature_views)) for i in by_hash]
    if ctx.is_main:
        stop = None if deadline is None else deadline - max(30.0, 0.1 * cfg.time_budget * 60)
        if ctx.device.type == "cuda":
            feature_fn = torch_feature_fn(extractor, ctx.device)
        else:
            log.info("exporting the frozen part to ONNX Runtime (cached for later runs)")
            feature_fn = onnx_feature_fn(extractor, cache_dir / "onnx" / f"{key}.onnx", pre.image_size)
        jobs = val_jobs + train_jobs
        with log.progress("frozen-part features", len(jobs)) as bar:
            extract(data, jobs, pre, store, feature_fn, deadline=stop, progress=lambda n: bar.update(advance=n))
    barrier(ctx)
    store.reload()
    if any(f"{data.hashes[i]}:0" not in store.rows for i, _ in val_jobs):
        raise CatdogError("The time budget ran out before the validation features were computed; raise --time-budget.")
    done = [(i, v) for i, v in train_jobs if f"{data.hashes[i]}:{v}" in store.rows]
    if not done:
        raise CatdogError("The time budget ran out before any training features were computed; raise --time-budget.")
    if len(done) < len(train_jobs):
        log.info(f"time budget: training on {len(done)} of {len(train_jobs)} feature vectors")

    def tensors(jobs):
        feats = torch.from_numpy(store.read([f"{data.hashes[i]}:{v}" for i, v in jobs]))
        return feats, torch.tensor([data.labels[i] for i, _ in jobs])

    return TrainFeatures(*tensors(sorted(done))), TensorDataset(*tensors(val_jobs))


# --------------------------------------------------------------------------------------------
# Optimisation
# --------------------------------------------------------------------------------------------


def make_optimizer(
    cfg: TrainConfig, model: nn.Module, trainable: nn.Module | None = None, *, fused: bool = False
) -> torch.optim.Optimizer:
    """AdamW/Adam; no weight decay on biases and norms; lower rates for earlier layers when fine-tuning.

    ``trainable``: the part of ``model`` that trains, when not all of it (a head, or the stages after a frozen part).
    ``fused``: one kernel for the whole update (on a GPU or a CPU; a benchmark baseline leaves it off).
    """
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    trainable = model if trainable is None else trainable
    if cfg.family() in ("finetune", "partial"):
        # Parameters that do not require grad (a frozen part, the gate) are left out of the groups.
        backbone = getattr(model, "backbone", model)
        groups = param_groups_layer_decay(backbone, cfg.weight_decay, layer_decay=cfg.layer_decay)
        if backbone is not model:  # the GatedClassifier's new head learns at the full rate
            groups += [dict(g, lr_scale=1.0) for g in param_groups_weight_decay(model.head, cfg.weight_decay)]
    else:
        groups = param_groups_weight_decay(trainable, cfg.weight_decay)
    for group in groups:
        group["lr"] = cfg.lr * group.pop("lr_scale", 1.0)
    groups = [g for g in groups if g["params"]]
    optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(groups, lr=cfg.lr, fused=fused or None)


class Budget:
    """Is the time budget spent? Leaves time for one more validation pass and the final save.

    It also tells the schedule how far the run is in time, so the learning rate decays to
    its end when the budget does.
    """

    def __init__(self, deadline: float | None, schedule: Schedule) -> None:
        self.deadline = deadline
        self.schedule = schedule
        self.started = time.monotonic()
        self.eval_seconds = 0.0
        self.final_seconds = 0.0  # kept for the work after the last epoch (validation at the test size)

    def out_of_time(self) -> bool:
        if self.deadline is None:
            return False
        now = time.monotonic()
        # Before the first validation pass, guess it costs a tenth of the time left.
        reserve = 1.25 * self.eval_seconds + 5.0 if self.eval_seconds else 0.1 * (self.deadline - self.started)
        reserve += self.final_seconds
        self.schedule.time_fraction = (now - self.started) / max(1.0, self.deadline - reserve - self.started)
        return now + reserve > self.deadline


class Schedule:
    """Learning-rate factor per step: linear warm-up then cosine decay, or one-cycle.

    Written out rather than torch's OneCycleLR/CosineAnnealingLR because under a time budget
    the horizon is time, not a step count: the progress is the larger of the step fraction
    and ``time_fraction`` (set by the training loop).
    """

    def __init__(self, kind: str, total_steps: int, warmup_steps: int) -> None:
        self.kind = kind
        self.total_steps = max(1, total_steps)
        self.warmup_steps = max(1, warmup_steps)
        self.time_fraction = 0.0

    def __call__(self, step: int) -> float:
        progress = min(1.0, max(step / self.total_steps, self.time_fraction))
        if self.kind == "onecycle":  # cosine up from 1/25 over the first 25%, then cosine down to ~0
            if progress < 0.25:
                return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * progress / 0.25)) / 2
            return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * (progress - 0.25) / 0.75)) / 2
        # Under a time budget, warm-up ends after warmup_steps or a twentieth of the budget, whichever
        # comes first: a budget of about an epoch must not be spent mostly warming up.
        warmup = min(1.0, max((step + 1) / self.warmup_steps, 20 * self.time_fraction))
        return warmup * (1 + math.cos(math.pi * progress)) / 2


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    """``--precision auto``: bf16 autocast where it measured faster than fp32, else fp32.

    On GPUs, bf16. On a CPU with AMX (Intel Xeon since Sapphire Rapids), oneDNN runs bf16
    convolutions on its matrix unit, and training from scratch took half the time on 2 cores
    (catnet at 128 px: 338 against 167 images/s; seed-cnn 292 against 153), while fine-tuning
    EfficientNet-Lite0, whose depthwise convolutions and norms are bound by memory, gained nothing
    (19.3 against 19.8). On CPUs without it (AVX2 AMD EPYC), bf16 was about 10x slower than fp32.
    """
    if cfg.precision != "auto":
        return cfg.precision
    if device.type == "cuda":
        return "bf16"
    return "bf16" if cfg.family() == "scratch" and cpu_has_amx() else "fp32"


def cpu_has_amx() -> bool:
    """Whether this CPU has Intel's AMX tile unit (torch asks cpuinfo; the function is private, hence the guard)."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The low-precision dtype of autocast, or None for plain fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision(cfg, device))


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision when a low-precision dtype is chosen, plain fp32 otherwise."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def logits_of(output) -> torch.Tensor:
    """A GatedClassifier returns (logits, pet_score); training needs the logits."""
    return output[0] if isinstance(output, tuple) else output


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising the validation NLL of ``softmax(logits / T)`` (LBFGS on log T)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits.float() / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp().clamp(0.05, 20.0))
    return round(temperature, 5)


def calibrated_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(F.cross_entropy(logits.float() / temperature, labels))


def gate_config(val_pets: torch.Tensor | None, model: nn.Module, image_size: int, refitted_on: int = 0) -> dict:
    """The `neither` gate of a trained cat/dog model, its operating point set on the validation pets.

    A fine-tuned model's gate reads a pristine copy of the pretrained layers (``pristine_after_blocks``
    records where it starts), so it sees what the pretrained backbone sees: fine-tuned features made
    real pets score low (the 45-minute Lite0 run called 65 of 200 dev pets `neither`) and non-pets
    through. With the built-in backbone the gate is catdog's open-set gate (:mod:`catdog.models.gate`):
    its bias moves so that at most 0.5 % of the validation photos (all cats and dogs) score below 0.5.
    Other timm backbones keep the ImageNet pet mass, with the built-in threshold lowered, if needed, to
    0.9 x the validation photos' 1st percentile.
    """
    gate: dict = {}
    if getattr(model, "gate", None) is not None:
        gate["pristine_after_blocks"] = model.shared_blocks
    open_set = getattr(model, "open_set", None)
    if open_set is not None:
        gate.update(builtin_gate_record(image_size), threshold=0.5, kind=OPEN_SET)
        if refitted_on:
            gate["refitted_on"] = f"{refitted_on} photos of the data's neither folder (and their mirrors)"
        if val_pets is not None and len(val_pets):
            logits = torch.logit(val_pets.double().clamp(1e-12, 1 - 1e-12)) - float(open_set.bias)
            open_set.bias.fill_(operating_bias(logits, open_set.bias.new_zeros(())))
            gate["val_pets_turned_away"] = round(float((logits + float(open_set.bias) < 0).double().mean()), 5)
            gate["val_pets"] = len(val_pets)
            gate["operating_point"] = (
                f"P(cat or dog) = 0.5 where {gate['val_pets_turned_away']:.2%} of this model's {len(val_pets)} "
                f"validation photos score below (target {TARGET_PETS_TURNED_AWAY:.1%})"
            )
        return gate
    threshold = PET_MASS_THRESHOLD
    gate.update(threshold=threshold, kind="pet-mass")
    if val_pets is None or not len(val_pets):
        return gate
    # 0.9: a margin for the small numeric gap between the path validation measured (cached float16
    # activations for --freeze stages:N) and the exported model that later predicts.
    percentile = 0.9 * float(torch.quantile(val_pets.double(), 0.01, interpolation="lower"))
    gate.update(threshold=min(threshold, percentile), builtin_threshold=threshold)
    gate["val_pets_turned_away"] = round(float((val_pets < gate["threshold"]).double().mean()), 5)
    return gate


GATE_REFIT_PETS = 5000  # training pets the gate is refitted on (their features take ~30 s on 2 cores)
GATE_REFIT_L2 = 1e-3  # pull towards the shipped gate: the user's few hundred negatives adjust it, not replace it


def refit_gate(
    open_set, data: PreparedData, at_size: PreparedData, splits: dict, negatives: list[int], pre: Preprocess, cache_dir
) -> torch.Tensor:
    """Refit the open-set gate on the training pets and the `neither` folder's photos (and their mirrors).

    ``data``'s indices (``splits``, ``negatives``) name the photos; ``at_size`` holds them decoded for
    ``pre``, the size the model predicts at. Returns the refitted gate's ``P(cat or dog)`` for the
    validation photos, which then set its operating point.
    """
    from catdog.features import pretrained_gate_inputs

    pets = sorted(splits["train"], key=lambda i: data.hashes[i])[:GATE_REFIT_PETS]  # a random-like subset
    index = {path: i for i, path in enumerate(at_size.paths)}

    def inputs(jobs):
        jobs = [(index[data.paths[i]], view) for i, view in jobs]
        return pretrained_gate_inputs(at_size, jobs, pre, cache_dir, BUILTIN_BACKBONE)

    x_pets, x_others = inputs([(i, 0) for i in pets]), inputs([(i, v) for i in negatives for v in (0, 1)])
    x = torch.cat([x_pets, x_others])
    y = torch.cat([torch.ones(len(x_pets)), torch.zeros(len(x_others))])
    weight, bias = fit_weights(x, y, prior=open_set, l2=GATE_REFIT_L2)
    open_set.weight.copy_(weight)
    open_set.bias.fill_(float(bias))
    with torch.no_grad():
        return torch.sigmoid(inputs([(i, 0) for i in splits["val"]]) @ open_set.weight + open_set.bias)


def frozen_val_pets(model: nn.Module, val_set: TensorDataset) -> torch.Tensor:
    """The gate's ``P(cat or dog)`` for the validation photos, from their cached pooled features."""
    features = val_set.tensors[0].float().to(model.head.weight.device)
    with torch.no_grad():
        pets, _ = model.judge(features, model.backbone.get_classifier()(features))
    return pets.cpu()


def builtin_gate_record(image_size: int) -> dict:
    """What the shipped open-set gate for ``image_size`` says of itself (score, fitted on what), for config.json."""
    from catdog.models.builtin import gate_size
    from catdog.models.files import builtin_config

    shipped = builtin_config()["gate"]  # both records ship with catdog: a missing one is a ModelError there
    fitted_on = {k: v for k, v in (shipped.get("fitted_on") or {}).items() if k != "operating_point"}
    return {"score": shipped.get("score"), "fitted_on": fitted_on, "fitted_at_px": gate_size(image_size)}


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """Where a run is; everything here goes into the checkpoint."""

    epoch: int = 0
    step: int = 0  # steps done in the current epoch
    global_step: int = 0
    loss_sum: float = 0.0  # running training metrics of the current epoch (this rank)
    correct: int = 0
    seen: int = 0
    train_seconds: float = 0.0
    last_lr: float = 0.0
    best_selection: float = math.inf  # the best epoch's calibrated validation loss (what chooses it)
    best_loss: float = math.inf  # and its raw validation loss
    best_accuracy: float = 0.0
    best_epoch: int = 0
    bad_epochs: int = 0
    best_state: dict = field(default_factory=dict)
    best_logits: torch.Tensor | None = None
    best_labels: torch.Tensor | None = None
    best_pets: torch.Tensor | None = None  # pet scores of the validation photos (gated models)
    train_size_metrics: dict = field(default_factory=dict)  # best val loss/accuracy at image_size, if re-validated
    history: list = field(default_factory=list)

    def reset_running(self) -> None:
        self.loss_sum, self.correct, self.seen, self.train_seconds = 0.0, 0, 0, 0.0


def check_out_dir(out: Path, cfg: TrainConfig) -> None:
    if cfg.resume:
        if not (out / CHECKPOINT).exists():
            raise CatdogError(f"'{out}' holds no unfinished run to resume (no {CHECKPOINT}).")
        return
    if (out / CHECKPOINT).exists():
        raise CatdogError(f"'{out}' holds an unfinished run; pass --resume to continue it, or choose another --out.")
    if (out / "model.safetensors").exists() and not cfg.overwrite:
        raise CatdogError(f"'{out}' already holds a model; choose another --out or pass --overwrite.")


def save_checkpoint(out, cfg, state, trainable, optimizer, scheduler, scaler) -> None:
    checkpoint = {
        "config": cfg.to_dict(),
        "state": {f.name: getattr(state, f.name) for f in fields(state) if f.name != "best_state"},
        "best_state": state.best_state,
        "model": trainable.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()},
    }
    atomic_write(out / CHECKPOINT, lambda tmp: torch.save(checkpoint, tmp))


def load_checkpoint(out, cfg, trainable, optimizer, scheduler, scaler) -> RunState:
    try:
        # weights_only refuses any pickle that would build other objects (or run code); a damaged or
        # foreign file lands here too. Either way: one sentence, never torch's multi-line advice.
        checkpoint = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ModelError(
            f"'{out / CHECKPOINT}' is not a checkpoint catdog can load safely ({type(err).__name__}); "
            "delete it to start the run over."
        ) from None
    if not isinstance(checkpoint, dict) or "config" not in checkpoint:
        raise ModelError(f"'{out / CHECKPOINT}' is not a catdog checkpoint; delete it to start the run over.")
    saved = checkpoint["config"]
    changed = [k for k in RESUME_KEYS if saved.get(k, getattr(TrainConfig, k, None)) != getattr(cfg, k)]
    if changed:
        options = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)}" for k in changed)
        raise CatdogError(f"The run in '{out}' was started with {options}; resume it with the same options.")
    try:
        trainable.load_state_dict(checkpoint["model"])
    except RuntimeError:  # a run started by a catdog whose net had other tensors or shapes
        raise ModelError(
            f"'{out / CHECKPOINT}' holds a {cfg.model} that does not fit the one this catdog builds; "
            "finish it with the catdog that started it, or delete it to start the run over."
        ) from None
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if torch.cuda.is_available() and checkpoint["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    return RunState(**checkpoint["state"], best_state=checkpoint["best_state"])


# --------------------------------------------------------------------------------------------
# Processes, logging, plots
# --------------------------------------------------------------------------------------------


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    comm_device: torch.device = torch.device("cpu")  # where collective tensors live (NCCL needs the GPU)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistContext:
    """Join the torchrun process group when there is one: NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
        return DistContext(dist.get_rank(), world, device, device)
    return DistContext(0, 1, device, device)


def barrier(ctx: DistContext) -> None:
    if ctx.world > 1:
        dist.barrier()


class SharedBudget:
    """Rank 0's budget decision and schedule clock on every rank, asked about once a second.

    Called once per training step. One process asks its :class:`Budget` every step (host clocks only).
    With several, each question is a broadcast the host must wait for, which would drain a GPU's queue
    at every step; so rank 0 answers with its decision, its schedule's time fraction (every rank then
    steps the same learning rate: each rank's own clock would let their weights drift apart) and how
    many steps to go before the next question: about ``seconds`` worth at the pace since the last one.
    The budget is then seen spent up to ``seconds`` late, well within its reserve (5 s at least).
    """

    MAX_STEPS_BETWEEN = 1000

    def __init__(self, budget: Budget, ctx: DistContext, seconds: float = 1.0) -> None:
        self.budget, self.ctx, self.seconds = budget, ctx, seconds
        self.calls = 0
        self.next_check = 1
        self.checked_at: float | None = None
        self.checked_call = 0
        self.checks = 0

    def __call__(self) -> bool:
        if self.ctx.world == 1:
            return self.budget.out_of_time()
        self.calls += 1
        if self.calls < self.next_check:
            return False
        now = time.monotonic()
        spent = self.budget.out_of_time()
        every = 1
        if self.checked_at is not None:
            pace = (now - self.checked_at) / (self.calls - self.checked_call)
            every = max(1, min(self.MAX_STEPS_BETWEEN, int(self.seconds / max(pace, 1e-9))))
        fraction = self.budget.schedule.time_fraction
        message = torch.tensor([float(spent), fraction, float(every)], dtype=torch.float64, device=self.ctx.comm_device)
        dist.broadcast(message, 0)
        spent, fraction, every = message.tolist()
        self.budget.schedule.time_fraction = fraction
        self.next_check, self.checked_at, self.checked_call = self.calls + int(every), now, self.calls
        self.checks += 1
        return bool(spent)


class Reporter:
    """Rank 0's voice: a rich progress bar on a terminal, plain log lines otherwise."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.tty = console.is_terminal

    def info(self, message: str) -> None:
        if self.enabled:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {message}", highlight=False, soft_wrap=True)

    @contextmanager
    def progress(self, description: str, total: int, completed: int = 0):
        if not self.enabled:
            yield _Quiet()
        elif self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
            columns += [TextColumn("{task.fields[stats]}"), TimeRemainingColumn()]
            with Progress(*columns, console=self.console, transient=True) as bar:
                task = bar.add_task(description, total=total, completed=completed, stats="")
                yield _RichTask(bar, task)
        else:
            yield _LogLines(self, description, total, completed)


class _Quiet:
    def update(self, advance: int = 1, **stats) -> None:
        pass


class _RichTask:
    def __init__(self, bar, task) -> None:
        self.bar, self.task = bar, task

    def update(self, advance: int = 1, **stats) -> None:
        fields = {"stats": _format_stats(stats)} if stats else {}  # no stats: keep the last ones shown
        self.bar.update(self.task, advance=advance, **fields)


class _LogLines:
    """A line every 30 seconds (and none for short tasks)."""

    def __init__(self, reporter: Reporter, description: str, total: int, completed: int) -> None:
        self.reporter, self.description, self.total, self.done = reporter, description, total, completed
        self.last = time.monotonic()
        self.stats: dict = {}

    def update(self, advance: int = 1, **stats) -> None:
        self.done += advance
        self.stats = stats or self.stats  # no stats: keep the last ones
        if time.monotonic() - self.last >= 30:
            self.last = time.monotonic()
            self.reporter.info(f"{self.description}: {self.done}/{self.total} {_format_stats(self.stats)}")


def _format_stats(stats: dict) -> str:
    parts = []
    if "loss" in stats:
        parts.append(f"loss {stats['loss']:.4f}")
    if "acc" in stats:
        parts.append(f"acc {stats['acc']:.1%}")
    if "ips" in stats:
        parts.append(f"{stats['ips']:.1f} img/s")
    return " ".join(parts)


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def peak_rss_mib() -> int | None:
    """This process's peak resident memory in MiB (Linux's VmHWM; None where /proc is absent).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that over from the parent through fork and
    exec, so a run started by a large process reported the parent's peak as its own.
    """
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return None


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("catdog", "torch", "torchvision", "timm", "numpy", "onnxruntime", "safetensors"):
        with suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: catdog train DATA_DIR --out MODEL_DIR")
