"""Training: ``catdog train DATA_DIR --out MODEL_DIR``, in one process or many (torchrun, DDP).

:func:`train` is the whole recipe, step by step, in the style of the torchvision reference
scripts: seed, build the model, decode and cache the data, (optionally) cache frozen
backbone features, build optimizer and schedule, resume, run the epochs (checkpointing,
keeping the best weights by calibrated validation loss, stopping early or when the time budget is
spent), fit a temperature on the validation split and write the model directory. The helpers
below it are its steps; each concern they call lives in its own module of :mod:`catdog.training`.

Exact resumption: every random draw of a training step is seeded from (seed, epoch, step,
rank) and every augmentation from (seed, epoch, sample index), so a run restarted from any
checkpoint replays the same steps; checkpoints hold the model, optimizer, scheduler, scaler,
position in the epoch, running metrics and RNG states, and are written atomically.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, Subset

from catdog.augment import mix_transform
from catdog.data import NEITHER, CachedImages, Dataset, DatasetError, PreparedData, discover, make_loader, prepare
from catdog.data.check import SMALL_CLASS, small_class_note
from catdog.errors import CatdogError
from catdog.features import PooledFeatures, split_backbone
from catdog.fsutil import counted, default_cache_dir, listed
from catdog.models import build_model, save_model_dir
from catdog.models.builtin import GATE_SIZES, load_builtin_gate
from catdog.models.gate import LearntNeither
from catdog.models.scratch import SCRATCH_MODELS
from catdog.preprocess import Preprocess
from catdog.training.batches import (
    CachedBatches,
    ResumableSampler,
    TrainImages,
    cached_features,
    feature_input,
    head_columns,
    image_input,
    prepare_data,
    preprocess_for,
    use_cores,
    warm_up,
)
from catdog.training.calibration import (
    as_good_a_constant,
    calibrated_loss,
    frozen_val_pets,
    gate_config,
    learnt_neither_gate,
    pristine_val_pets,
    refit_gate,
)
from catdog.training.checkpoint import CHECKPOINT, RunState, check_out_dir, load_checkpoint, save_checkpoint
from catdog.training.config import PET_CLASSES, TrainConfig
from catdog.training.distributed import DistContext, SharedBudget, agreed, barrier, epoch_sums, setup_distributed
from catdog.training.loop import (
    StepParts,
    estimate_seconds,
    evaluate,
    final_metrics,
    forward_seconds,
    record_epoch,
    train_one_epoch,
    validate_at_size,
    validation_guess,
    validation_workers,
)
from catdog.training.precision import autocast_dtype, precision_words, resolve_precision
from catdog.training.progress import Reporter, Timeline, package_versions
from catdog.training.schedule import Budget, Schedule, make_optimizer


def train(cfg: TrainConfig, console: Console | None = None, started: float | None = None) -> dict:
    """Train as ``cfg`` says, write the model directory, return the final metrics.

    ``started``: the ``time.monotonic()`` the time budget counts from (default: now)."""
    started = time.monotonic() if started is None else started
    cfg = cfg.resolved()
    deadline = started + cfg.time_budget * 60 if cfg.time_budget else None
    ctx = setup_distributed()
    cfg = replace(cfg, precision=resolve_precision(cfg, ctx.device))  # the saved config says what ran
    threads = torch.get_num_threads()  # use_cores may change it; restored at the end
    log = Reporter(console or Console(stderr=True), enabled=ctx.is_main)
    out = Path(cfg.out)
    timeline = Timeline(started)
    timeline.mark("imported")  # the command's imports (torch, timm) are behind us
    try:
        # 1. Reproducibility and the output folder (under torchrun, checked by every rank; rank 0 says a refusal).
        agreed(ctx, lambda: check_out_dir(out, cfg, writer=ctx.is_main))  # rank 0 writes
        seed(cfg)

        # 2. The classes, then the model and its preprocessing.
        classes, has_neither = agreed(ctx, lambda: model_classes(cfg))
        gate = cfg.family() != "scratch" and set(classes) <= PET_CLASSES
        # A from-scratch cat/dog net has no ImageNet backbone to gate it: it learns `neither` as a class.
        learns_neither = cfg.family() == "scratch" and set(classes) <= PET_CLASSES and has_neither
        model, pre = build(cfg, classes, gate, log, learns_neither)
        if has_neither and not (gate or learns_neither):
            # Only a cat/dog model has a `neither` gate to fit or a class to learn: a horse/cow model's neither/
            # folder was once left out without a word, and the user waited for `neither` answers.
            log.info(
                f"the neither folder is not used: catdog's `neither` gate is for cat/dog models; this model will "
                f"answer one of {', '.join(classes)} for any photo"
            )
        refits_gate = getattr(model, "open_set", None) is not None
        if has_neither and gate and not refits_gate:
            # Only a backbone catdog ships an open-set gate for has one to refit; other backbones' folder was left
            # out without a word, as the horse/cow model's once was (above). Said before the decoding's minutes.
            log.info(
                f"the neither folder is not used: only {', '.join(GATE_SIZES)} have catdog's open-set gate to refit; "
                f"{cfg.model}'s `neither` gate is its ImageNet head's cat and dog classes, as pretrained "
                "(catdog evaluate --split val measures it on the folder's validation photos)"
            )
        timeline.mark("model_built")

        # 3. Decode every image once into the pixel cache (rank 0 first, the others then find it full),
        #    then split it: training and validation pets, `neither` photos (the gate), the test split (unused).
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        data = decode(cfg, model, pre, cache_dir, ctx, log, timeline.mark)
        timeline.mark("data_ready")
        splits, test, negatives = split(cfg, data, len(classes), log, learns_neither, refits_gate)
        note_small_classes(data, classes, log)

        # 4. What trains (the whole network, or the part after a frozen one) and what it eats. The time kept for
        #    validating at --test-image-size is known first: a frozen part's extraction stops short of it too (it
        #    once filled that time, and the run was refused only after minutes of extracting).
        test_pre = replace(pre, image_size=cfg.test_image_size) if cfg.test_image_size else pre
        kept_for_test_size = final_seconds(
            cfg=cfg, model=model, pre=pre, test_pre=test_pre, deadline=deadline, val_images=len(splits["val"]), ctx=ctx
        )
        job = what_trains(
            cfg=cfg,
            model=model,
            gate=gate,
            data=data,
            splits=splits,
            pre=pre,
            cache_dir=cache_dir,
            ctx=ctx,
            deadline=None if deadline is None else deadline - kept_for_test_size,
            log=log,
        )
        trainable, device = job.trainable, ctx.device
        # No batch larger than the data: --batch-size 100000 on 364 photos once padded every batch to its size
        # and ran out of memory without a word.
        per_rank_batch = max(1, min(cfg.batch_size // ctx.world, math.ceil(len(job.train_set) / ctx.world)))
        if cfg.batch_size % ctx.world:  # 64 over 3 processes is 21 each: the run trained 63 a step without a word
            log.info(
                f"--batch-size {cfg.batch_size} over {ctx.world} processes trains {per_rank_batch * ctx.world} photos "
                f"a step ({per_rank_batch} each); give a multiple of {ctx.world} to train {cfg.batch_size}"
            )
        sampler, train_loader, val_loader = loaders(cfg, job, ctx, per_rank_batch)
        steps_per_epoch = len(train_loader)

        # 5. Optimizer, schedule, loss, precision.
        optimizer = make_optimizer(cfg, model, trainable, fused=True)
        total_steps = cfg.epochs * steps_per_epoch if cfg.epochs is not None else None  # None: the budget's clock
        schedule = Schedule(cfg.schedule, total_steps, int(cfg.warmup_epochs * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        criterion, dtype, scaler, mix = step_parts(cfg, len(classes) + learns_neither, device)
        batch = batch_said(cfg, per_rank_batch * ctx.world, len(job.train_set))
        log.info(recipe_line(cfg, len(classes) + learns_neither, mix is not None, batch))
        forward_module = wrap(cfg, trainable, ctx)  # DDP, torch.compile
        ema = weight_average(cfg, trainable)  # None without --ema
        average = None if ema is None else (lambda step: ema.update(trainable, step=step))
        # What each training step uses besides the model and the batch (train_one_epoch's `parts`).
        parts = StepParts(criterion, optimizer, scheduler, scaler, dtype, mix, average)

        # 6. Resume: model, optimizer, scheduler, scaler, position, running metrics and RNG state.
        state = RunState()
        if cfg.resume:
            state = resume(cfg, trainable, optimizer, scheduler, scaler, steps_per_epoch, log, ema)
            if not ctx.is_main:  # rank 0's checkpoint holds every process's running sums: counted there, once
                state.loss_sum, state.correct, state.seen = 0.0, 0, 0
        # What each epoch validates and the best epoch keeps: the averaged weights, with --ema.
        validated_module, kept = (ema.module, ema.module) if ema is not None else (forward_module, trainable)

        # 7. The epochs (under a budget, leaving time for the final validation at the test size).
        processes = "1 process" if ctx.world == 1 else f"{ctx.world} processes"
        log.info(
            f"training on {device} in {precision_words(cfg.precision)} with {processes}, "
            f"{counted(steps_per_epoch, 'step')} per epoch"
            f"{views_note(len(job.train_set), len(splits['train']), cfg.feature_views)}"
            f"{left_over_note(len(job.train_set), steps_per_epoch, per_rank_batch, ctx.world)}"
        )
        validation_steps = math.ceil(len(job.val_set) / ctx.world) / per_rank_batch  # its rows, in steps' worth
        # Under --compile the first validation compiles the eval graph too (minutes on a GPU): no guess from steps.
        budget = Budget(deadline, schedule, None if cfg.compile else validation_steps)
        budget.final_seconds = kept_for_test_size
        if deadline is not None:
            val_workers = started_workers(val_loader)
            to_train = seconds_to_train(cfg, model, pre, len(splits["val"]), per_rank_batch, ctx, val_workers)
            agreed(ctx, lambda: refuse_a_spent_budget(cfg, budget, started, to_train))
        out_of_time = SharedBudget(budget, ctx, checkpoint_seconds=cfg.checkpoint_seconds)
        save = checkpointer(cfg, trainable, optimizer, scheduler, scaler, ctx, ema)  # save(state): rank 0 writes
        stop_reason = ""
        timeline.mark("training_started")
        log.info(timeline.training_starts())
        while (cfg.epochs is None or state.epoch < cfg.epochs) and not stop_reason:  # None: until the budget ends
            sampler.set_epoch(state.epoch)
            sampler.start = state.step * per_rank_batch
            model.eval()  # with a frozen part, only `trainable` trains (and nothing else sees batches)
            trainable.train()
            steps_before = state.global_step
            budget_hit = train_one_epoch(
                cfg=cfg,
                model=forward_module,
                loader=train_loader,
                to_input=job.train_input,
                parts=parts,
                state=state,
                steps_per_epoch=steps_per_epoch,
                ctx=ctx,
                log=log,
                save=save,
                out_of_time=out_of_time,
            )
            if budget_hit and state.global_step == steps_before:  # spent by the last epoch's end: nothing to validate
                stop_reason = why_stop(cfg, state, budget_hit)
                break
            tick = time.monotonic()
            val = evaluate(model=validated_module, loader=val_loader, to_input=job.eval_input, dtype=dtype, ctx=ctx)
            budget.eval_seconds = time.monotonic() - tick
            record_epoch(
                cfg=cfg,
                state=state,
                val=val,
                trainable=kept,
                steps_per_epoch=steps_per_epoch,
                ctx=ctx,
                out=out,
                log=log,
                elapsed=time.monotonic() - started,
                temperature_classes=len(classes) if learns_neither else None,
            )
            stop_reason = why_stop(cfg, state, budget_hit)
            state.epoch, state.step = state.epoch + 1, 0
            state.reset_running()
            out_of_time.write_checkpoint(lambda: save(state))
        stopped = stop_reason or epochs_done(cfg.epochs)  # the log's line and metrics["stopped"]
        log.info(f"stopped: {stopped}")
        timeline.mark("training_ended")

        # 8. The best weights (validated again at the test size), the gate, the temperature, the model directory.
        trainable.load_state_dict(state.best_state)
        validated = model.net if learns_neither else model  # a LearntNeither net: on its three classes
        final_pre = best_at_test_size(
            model=validated,
            data=data,
            val_indices=splits["val"],
            pre=pre,
            test_pre=test_pre,
            cfg=cfg,
            ctx=ctx,
            dtype=dtype,
            per_rank_batch=per_rank_batch,
            state=state,
            log=log,
        )
        gate_evidence(
            model=model,
            gate=gate,
            data=data,
            splits=splits,
            negatives=negatives,
            train_pre=pre,
            pre=final_pre,
            cfg=cfg,
            cache_dir=cache_dir,
            job=job,
            ctx=ctx,
            state=state,
            log=log,
        )
        timeline.mark("validated")
        metrics = final_metrics(state, time.monotonic() - started)
        metrics["stopped"] = stopped
        metrics["processes"] = ctx.world
        # What a step trained: --batch-size is split over the processes and capped at the data.
        metrics["batch_per_process"], metrics["batch"] = per_rank_batch, per_rank_batch * ctx.world
        if cfg.schedule == "cosine":  # what the warm-up lasted: a time budget may end it before --warmup-epochs
            warmup_steps = schedule.warmup_steps_run(state.global_step)
            metrics["warmup_epochs_run"] = round(warmup_steps / steps_per_epoch, 3)
        metrics["timeline_seconds"] = dict(timeline)
        if ctx.is_main:  # rank 0 writes
            write_model(
                cfg=cfg,
                model=model,
                classes=classes,
                pre=final_pre,
                gate=gate,
                data=data,
                splits=splits,
                test=test,
                negatives=negatives,
                state=state,
                metrics=metrics,
                log=log,
                learns_neither=learns_neither,
            )
        barrier(ctx)
        return metrics
    finally:
        torch.set_num_threads(threads)
        if ctx.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


# -- the steps of the recipe ------------------------------------------------------------------


def seed(cfg: TrainConfig) -> None:
    """Seed torch and, with ``--deterministic``, ask for deterministic kernels."""
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    # No cuDNN autotuning: on an H200 it made the first epoch of a Lite0 fine-tune take 55 s
    # instead of 27 s (every new batch shape is tried with many kernels), and the steps after
    # it ran no faster (Lite0 30 vs 32 ms, catnet 11 vs 11 ms: benchmarks/gpu_probe.py).
    torch.backends.cudnn.benchmark = False


def model_classes(cfg: TrainConfig) -> tuple[list[str], bool]:
    """The dataset's classes without `neither` (a `neither` folder is no class), and whether it has one."""
    dataset = discover(cfg.data_dir, image_files_only=True)
    classes = dataset.model_classes
    if len(classes) < 2:
        only = f" ({classes[0]})" if classes else ""
        # car/ beside other/ is two folders to the user, but other/ is a `neither` folder: say so, not just "one".
        neither = NEITHER in dataset.classes
        beside = " besides its `neither` folder (examples of what is neither, never a class)" if neither else ""
        inside = _folder_of_folders(dataset, classes[0]) if classes else None
        hint = f", or give '{inside}' to train on the folders inside it" if inside else ""
        raise DatasetError(f"'{cfg.data_dir}' has only one class{only}{beside}; training needs at least two{hint}.")
    return classes, NEITHER in dataset.classes


def _folder_of_folders(dataset: Dataset, label: str) -> Path | None:
    """The one class folder of ``label`` when its photos lie in two folders inside it or more, else None.

    A lone Cats/ of breed folders is the class cat, given from the folder above: given itself, its folders are
    the classes, which is what its owner meant to train on.
    """
    base = dataset.wrapper or dataset.root
    where = [item.path.relative_to(base).parts for item in dataset.files if item.label == label]
    tops, inner = {parts[0] for parts in where}, {parts[1] for parts in where if len(parts) > 2}
    return base / tops.pop() if len(tops) == 1 and len(inner) > 1 else None


def build(
    cfg: TrainConfig, classes: list[str], gate: bool, log: Reporter, learns_neither: bool = False
) -> tuple[nn.Module, Preprocess]:
    """The model (with its `neither` gate for cats and dogs) and its preprocessing.

    On a pretrained backbone the gate is catdog's open-set gate; a from-scratch net given a `neither`
    folder learns it as one more class (``learns_neither``: :class:`~catdog.models.gate.LearntNeither`).
    """
    model = build_model(cfg.model, len(classes) + learns_neither, pretrained=True, gate=gate, drop_path=cfg.drop_path)
    if gate and cfg.family() in ("finetune", "partial"):
        # Fine-tuning moves the features the ImageNet head reads: the gate keeps a pretrained copy.
        model.add_pristine_gate(cfg.frozen_stages() if cfg.family() == "partial" else 0)
    pre = preprocess_for(model, cfg)
    if gate and cfg.model in GATE_SIZES:
        # The pristine backbone's features are what catdog's gate for this backbone was fitted on: it applies
        # as shipped, the one fitted at the size the model will predict at.
        size = cfg.test_image_size or pre.image_size
        model.add_open_set_gate(load_builtin_gate(model.backbone.num_features, size, cfg.model))
    if cfg.model in SCRATCH_MODELS:  # materialise seed-cnn's lazy Dense layer
        # In eval mode: batch norm on one image whose map is 1x1 (catnet at 32 px) cannot take batch statistics.
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, pre.image_size, pre.image_size))
        model.train()
    names = ", ".join(classes + [NEITHER] * learns_neither)
    log.info(f"model {cfg.model} ({cfg.family()}), {len(classes) + learns_neither} classes: {names}")
    if cfg.family() == "scratch" and set(classes) <= PET_CLASSES and not learns_neither:
        log.info("no neither/ folder: this model will answer cat or dog for any photo (add one to teach it neither)")
    return (LearntNeither(model) if learns_neither else model), pre


def decode(cfg: TrainConfig, model: nn.Module, pre: Preprocess, cache_dir: Path, ctx: DistContext, log, mark):
    """The pixel cache; on one GPU, a copy of the model takes the slow first steps meanwhile (see warm_up)."""
    if ctx.device.type == "cuda" and cfg.family() in ("scratch", "finetune") and ctx.world == 1:
        with ThreadPoolExecutor(1, thread_name_prefix="catdog-decode") as background:
            decoding = background.submit(prepare_data, cfg, pre, cache_dir, ctx, log)
            warm_up(model, pre, cfg, ctx)
            mark("warmed_up")
            return decoding.result()
    return prepare_data(cfg, pre, cache_dir, ctx, log)


def split(
    cfg: TrainConfig,
    data: PreparedData,
    n_classes: int,
    log: Reporter,
    learns_neither: bool = False,
    refits_gate: bool = False,
):
    """``(train and val indices of the classes' photos, the test split held out, the neither photos)``.

    Photos of the `neither` folder (label ``n_classes``) in the training part refit the gate (where the model
    ``refits_gate``); they train and validate only a net that ``learns_neither`` as a class. The validation
    part's are fitted on by no gate, so that ``catdog evaluate --split val`` measures the gate on photos it has
    not seen; the test split's photos, pets or not, are left out of everything.
    """
    parts = data.split(cfg.val_fraction, cfg.test_fraction)
    held_for_test = set(parts.pop("test"))
    trained = n_classes + learns_neither
    splits = {name: [i for i in part if data.labels[i] < trained] for name, part in parts.items()}
    # A model with no gate to refit and no `neither` class to learn uses none: config.json counts them as unused.
    used = refits_gate or learns_neither
    negatives = [i for i in parts["train"] if data.labels[i] == n_classes] if used else []
    if not splits["train"] or not splits["val"]:
        raise DatasetError(f"'{cfg.data_dir}' has too few images to hold some out for validation; add more.")
    # The test split is named too: 12 photos with --test-fraction 0.2 read "6 training and 2 validation images".
    held = f", {len(held_for_test)} held out for the test split" if held_for_test else ""
    # The neither photos counted apart: 130 photos were told "89 training and 11 validation images", and where
    # the other 30 went (or how many of the 117 a learnt `neither` class trained on were neither) went unsaid.
    neither = {name: sum(data.labels[i] == n_classes for i in part) for name, part in parts.items()}
    of_them = f" ({neither['train']} and {neither['val']} of them neither)" if learns_neither else ""
    refit = ""
    if refits_gate and negatives:
        refit = f"; {counted(len(negatives), 'neither photo')} {'refits' if len(negatives) == 1 else 'refit'} the gate"
        refit += f" ({neither['val']} more left for evaluate --split val)" if neither["val"] else ""
    log.info(f"{len(splits['train'])} training and {len(splits['val'])} validation images{of_them}{held}{refit}")
    return splits, held_for_test, negatives


def note_small_classes(data: PreparedData, classes: list[str], log: Reporter) -> None:
    """Name each class of too few usable photos to learn from, as ``catdog data check`` notes it.

    Train said nothing of them: a stray folder of 3 photos (a French Chats/ beside Cats/) trained as a class.
    """
    usable = Counter(data.labels)
    for label, name in enumerate(classes):
        if usable[label] < SMALL_CLASS:
            log.info(small_class_note(name, usable[label]))


@dataclass
class Job:
    """What trains, on which datasets, and how a batch of them becomes the model's input."""

    trainable: nn.Module
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset
    train_input: Callable  # (images or cached rows, seeds) -> the batch the model takes (augmented, for images)
    eval_input: Callable  # the same for validation: the validation view, no augmentation
    workers: int | None  # DataLoader processes (None: one per core; 0 for cached features, in memory already)
    val_gate_rows: torch.Tensor | None = None  # frozen backbone: the validation photos' pooled features and taps


def what_trains(
    *,
    cfg: TrainConfig,
    model: nn.Module,
    gate: bool,
    data: PreparedData,
    splits: dict[str, list[int]],
    pre: Preprocess,
    cache_dir: Path,
    ctx: DistContext,
    deadline: float | None,
    log: Reporter,
) -> Job:
    """The whole network on augmented images, or the part after a frozen one on that part's cached
    output (a new head on pooled features, or the last stages and the head).

    ``deadline``: when the run's steps and validations must end (the budget's end less the time kept for
    validating at the test size); a frozen part's extraction stops short of it."""
    device, val_gate_rows = ctx.device, None
    if cfg.family() in ("frozen", "partial"):
        backbone = model.backbone if gate else model
        new_head = model.head if gate else None
        if cfg.family() == "frozen":
            # Cached with the blocks the gate taps, so the validation photos' gate scores read the same cache.
            taps = model.open_set.taps if gate and model.open_set is not None else ()
            extractor, trainable = PooledFeatures(backbone, taps), new_head or model.get_classifier()
            shape = None
        else:
            gate_copy, open_set = (model.gate, model.open_set) if gate else (None, None)
            extractor, trainable = split_backbone(backbone, cfg.frozen_stages(), new_head, gate_copy, open_set)
            extractor.requires_grad_(False)
            # On the model's device: timing the test size's validation (final_seconds) may have moved it there.
            where = next(extractor.parameters()).device
            probe = extractor[:-1].eval()(torch.zeros(1, 3, pre.image_size, pre.image_size, device=where))
            shape = tuple(probe.shape[1:])  # the cached rows are these activation maps, flattened
        train_set, val_set = cached_features(cfg, data, splits, pre, extractor, cache_dir, ctx, deadline, log)
        if cfg.family() == "frozen":
            val_gate_rows = val_set.tensors[0]
            train_set, val_set = head_columns(train_set, val_set, backbone.num_features)
        train_input = eval_input = feature_input(device, shape, cfg.channels_last)
        workers = 0  # the features are in memory already
    else:
        # The images are augmented where the step runs, a batch at a time (augment.augment_batch).
        trainable = model.net if isinstance(model, LearntNeither) else model  # the net trains on its 3 classes
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
    return Job(trainable, train_set, val_set, train_input, eval_input, workers, val_gate_rows)


def loaders(cfg: TrainConfig, job: Job, ctx: DistContext, per_rank_batch: int):
    """``(sampler, training batches, validation batches)`` of this rank."""
    train_set, val_set, device = job.train_set, job.val_set, ctx.device
    sampler = ResumableSampler(train_set, ctx.world, ctx.rank, cfg.seed)
    val_share = Subset(val_set, range(ctx.rank, len(val_set), ctx.world))
    val_batch = max(1, min(2 * per_rank_batch, math.ceil(len(val_set) / ctx.world)))
    if isinstance(train_set, TrainImages) and CachedBatches.fits(train_set, val_set, device):
        # Batches straight from the pixel cache (in GPU memory, or the CPU's memory map): no DataLoader.
        train_loader = CachedBatches(train_set.images, device, per_rank_batch, sampler)
        val_loader = CachedBatches(val_set, device, val_batch, order=list(val_share.indices))
    else:
        train_loader = make_loader(train_set, per_rank_batch, sampler=sampler, workers=job.workers)
        val_loader = make_loader(val_share, val_batch, workers=job.workers)
    return sampler, train_loader, val_loader


def started_workers(loader: Iterable) -> int:
    """The worker processes ``loader`` starts: a DataLoader's; none for batches read from the pixel cache."""
    return loader.num_workers if isinstance(loader, DataLoader) else 0


def wrap(cfg: TrainConfig, trainable: nn.Module, ctx: DistContext) -> nn.Module:
    """What the step calls: ``trainable``, under DDP with several processes, compiled with ``--compile``."""
    forward_module = trainable
    if ctx.world > 1:
        forward_module = nn.parallel.DistributedDataParallel(
            trainable, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    if cfg.compile:
        forward_module = torch.compile(forward_module)
    return forward_module


def weight_average(cfg: TrainConfig, trainable: nn.Module):
    """timm's moving average of ``trainable``'s weights (``--ema``), or None.

    Its decay warms up from 0 (1 - (1 + step)^-3/4: 0.97 after 100 steps, 0.994 after 1,000) to at most
    ``cfg.ema``, so that a run of a few thousand steps averages its recent weights rather than its first.
    """
    if not cfg.ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(trainable, decay=cfg.ema, use_warmup=True, warmup_power=3 / 4)


def resume(cfg, trainable, optimizer, scheduler, scaler, steps_per_epoch: int, log: Reporter, ema=None) -> RunState:
    """Where the checkpoint left the run: model, optimizer, scheduler, scaler, position, metrics, RNG state."""
    state = load_checkpoint(Path(cfg.out), cfg, trainable, optimizer, scheduler, scaler, ema)
    log.info(f"resumed at epoch {state.epoch + 1}, step {state.step} of {steps_per_epoch}")
    return state


def checkpointer(cfg, trainable, optimizer, scheduler, scaler, ctx: DistContext, ema=None):
    """``save(state)``: the checkpoint of the run at ``state``, written by rank 0; every rank calls it at once.

    The checkpoint's running training sums are every process's: with rank 0's alone, a resumed epoch counted
    rank 0's photos before the checkpoint once for each process."""

    def save(state: RunState) -> None:
        sums = epoch_sums(state.loss_sum, state.correct, state.seen, ctx)
        if ctx.is_main:
            of_every_rank = replace(state, **dict(zip(("loss_sum", "correct", "seen"), sums, strict=True)))
            save_checkpoint(Path(cfg.out), cfg, of_every_rank, trainable, optimizer, scheduler, scaler, ema)

    return save


# Steps a budget must leave room for: one ran at a quarter of --lr (the warm-up's first rate) and was saved.
STEPS_ROOM = 5
# A refusal rests on timed guesses that moved 2-3 times between runs on a busy machine (11 to 27 s): it refuses
# only a budget with under half the guess of the validation and steps left, and suggests twice the least budget,
# so the suggestion still passes when getting ready and the guess take twice as long the next time.
SUGGESTED_HEADROOM = 2.0


def seconds_to_train(
    cfg: TrainConfig,
    model: nn.Module,
    pre: Preprocess,
    val_images: int,
    per_rank_batch: int,
    ctx: DistContext,
    val_workers: int,
) -> float:
    """A guess of the time a budget must hold besides the final save: a validation pass and :data:`STEPS_ROOM`
    steps (a step taken as three forward passes), from the fastest of three timed forward batches. 0 for a frozen
    part's run: its steps and validation run on cached features, fractions of a second.

    ``val_workers``: the worker processes the run's validation batches start (:func:`started_workers`): a flat
    10 s for starting workers that a run with none never starts had very short budgets refused."""
    if cfg.family() in ("frozen", "partial"):
        return 0.0
    per_image = forward_seconds(model, pre, ctx.device)
    validation = validation_guess(per_image, val_images // ctx.world, val_workers)
    return validation + STEPS_ROOM * 3 * per_image * per_rank_batch


def refuse_a_spent_budget(cfg: TrainConfig, budget: Budget, started: float, to_train: float) -> None:
    """Refuse a time budget clearly too short to train: what is left must hold the final save, the validation at
    the test size and half of ``to_train`` (a guess of a validation pass and a few steps, :func:`seconds_to_train`).

    --time-budget 0.01 (0.6 s), and 0.05, once ran one step at a warm-up rate, a quarter of --lr, and saved that
    as the model 8-10 s after the start; a budget just over the save's 5 s (the one this refusal suggested) still
    trained about one step."""
    if budget.deadline is None:
        return
    now = time.monotonic()
    spent = now - started
    kept = budget.least_reserve()
    if budget.deadline - now <= kept + to_train / 2:
        # The next tenth of a minute above the headroom's: rounded to two digits, --time-budget 1 with 57 s spent
        # was told to give "more than 1 minutes".
        at_least = math.floor(SUGGESTED_HEADROOM * (spent + to_train + kept) / 6 + 1) / 10
        parts = [
            (to_train, f"for a validation pass and {STEPS_ROOM} steps"),
            (budget.final_seconds, "to validate at --test-image-size"),
            (budget.SAVE_SECONDS, "to save"),
        ]
        # A part that rounds to 0 s goes unsaid, as a frozen part's 0 did: with no workers to start, seed-cnn on 6
        # photos was said to need "about 0 s for a validation pass and 5 steps".
        needs = [f"{seconds:.0f} s {what}" for seconds, what in parts if round(seconds)]
        minutes = "1 minute" if at_least == 1 else f"{at_least:g} minutes"  # not "1 minutes"
        raise CatdogError(
            f"--time-budget {cfg.time_budget:g} leaves no time to train: getting the data and the model ready took "
            f"{spent:.1f} s, and a run needs about {listed(needs)}; give it at least {minutes}."
        )


def why_stop(cfg: TrainConfig, state: RunState, budget_hit: bool) -> str:
    """Why the epochs stop after this one ("" to go on: more epochs may follow)."""
    if budget_hit:
        return "time budget spent"
    if state.bad_epochs >= cfg.patience:
        # At temperature 1 (too few photos to fit one on) the calibrated loss is the loss: "calibrated" misled.
        calibrated = "calibrated " if any(row.get("temperature", 1.0) != 1.0 for row in state.history) else ""
        return f"no better {calibrated}validation loss for {cfg.patience} epochs"
    return ""


def step_parts(cfg: TrainConfig, n_classes: int, device: torch.device):
    """``(loss, autocast dtype, gradient scaler, mixup/cutmix or None)`` of the training step."""
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    dtype = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    mix = mix_transform(n_classes, cfg.mixup, cfg.cutmix) if cfg.family() in ("scratch", "finetune") else None
    return criterion, dtype, scaler, mix


def epochs_done(epochs: int) -> str:
    """Why a run that ran all its epochs stopped: '1 epoch done', '30 epochs done'."""
    return f"{counted(epochs, 'epoch')} done"


def batch_said(cfg: TrainConfig, batch: int, n_rows: int) -> str:
    """The ``batch`` a step trains (every process's) on ``n_rows`` training rows, as the log says it: a frozen head
    on 89 photos was logged as "batch 256" (the --batch-size asked) while each step trained all 178 of their cached
    views. They are named as the next line names them (:func:`views_note`)."""
    if batch >= cfg.batch_size or batch < n_rows:  # as asked, or split over the processes (said apart)
        return f"batch {batch}"
    rows = "cached views of the training photos" if cfg.family() in ("frozen", "partial") else "training photos"
    return f"batch {batch} (all the {rows}: --batch-size {cfg.batch_size} is more than there are)"


def recipe_line(cfg: TrainConfig, n_classes: int, mixes: bool, batch: str = "") -> str:
    """The optimiser, schedule and loss in one log line, and what the training loss shown is measured on.

    The training loss is the loss optimised: with label smoothing it cannot fall below the entropy of the smoothed
    targets, so beside the validation loss (plain cross-entropy) a model that fits well seemed to underfit.
    ``batch``: :func:`batch_said`'s words (default: ``--batch-size``).
    """
    optimiser = "Adam" if cfg.optimizer == "adam" else "AdamW"
    length = "the time budget" if cfg.time_budget else counted(cfg.epochs, "epoch")
    if cfg.schedule == "onecycle":
        schedule = f"one-cycle over {length}"
    else:
        warmup = f"{cfg.warmup_epochs:g} epoch" + ("" if cfg.warmup_epochs == 1 else "s")
        if cfg.time_budget:
            warmup += " or a twentieth of the budget, whichever ends first"
        schedule = f"cosine to 0 at the end of {length}, under a linear warm-up of {warmup}"
    lr = f"lr {cfg.lr:g}"
    if cfg.family() in ("finetune", "partial"):
        lr += f" (the head's; each earlier block {cfg.layer_decay:g} times the next one's)"
    line = (
        f"{optimiser}, {lr}, {schedule}; weight decay {cfg.weight_decay:g}, {batch or f'batch {cfg.batch_size}'}; "
        "loss: cross-entropy"
    )
    if cfg.label_smoothing:
        true, other = 1 - cfg.label_smoothing + cfg.label_smoothing / n_classes, cfg.label_smoothing / n_classes
        floor = -true * math.log(true) - (n_classes - 1) * other * math.log(other)
        line += (
            f" with label smoothing {cfg.label_smoothing:g}, which the training loss shown includes (it cannot go "
            f"below {floor:.3f} with {n_classes} classes)"
        )
    if mixes:
        line += ", on MixUp/CutMix's mixed photos and targets"
    if cfg.label_smoothing or mixes:
        line += "; the validation loss is plain cross-entropy on the true labels"
    return line


def final_seconds(
    *,
    cfg: TrainConfig,
    model: nn.Module,
    pre: Preprocess,
    test_pre: Preprocess,
    deadline: float | None,
    val_images: int,
    ctx: DistContext,
) -> float:
    """The time the budget keeps for validating again at ``--test-image-size`` (0 when there is none).

    ``pre``/``test_pre``: the training and test sizes' preprocessing; ``deadline``: the budget's end (None: no
    budget); ``val_images``: the validation photos of all ranks."""
    if test_pre == pre or deadline is None:
        return 0.0
    workers = validation_workers(cfg, ctx.device)
    return estimate_seconds(model, test_pre, val_images // ctx.world, ctx.device, workers)


def best_at_test_size(
    *,
    model: nn.Module,
    data: PreparedData,
    val_indices: list[int],
    pre: Preprocess,
    test_pre: Preprocess,
    cfg: TrainConfig,
    ctx: DistContext,
    dtype: torch.dtype | None,
    per_rank_batch: int,
    state: RunState,
    log: Reporter,
) -> Preprocess:
    """The preprocessing the model directory predicts with: ``test_pre`` after validating there again.

    ``model``: the best weights, validated on ``val_indices`` at ``test_pre``'s size; ``state`` then holds the
    figures at that size (the training size's kept as ``train_size_metrics``)."""
    if test_pre == pre:
        return pre
    at_size = validate_at_size(
        model=model,
        data=data,
        val_indices=val_indices,
        pre=test_pre,
        cfg=cfg,
        ctx=ctx,
        dtype=dtype,
        per_rank_batch=per_rank_batch,
    )
    log.info(
        f"validation at {test_pre.image_size} px: acc {at_size['val_accuracy']:.2%} "
        f"(at {pre.image_size} px: {state.best_accuracy:.2%})"
    )
    state.train_size_metrics = {"val_loss": state.best_loss, "val_accuracy": state.best_accuracy}
    state.best_loss, state.best_accuracy = at_size["val_loss"], at_size["val_accuracy"]
    state.best_logits, state.best_labels = at_size["logits"], at_size["labels"]
    state.best_pets = at_size["pets"]
    return test_pre  # the model directory predicts at the size it was validated at


def gate_evidence(
    *,
    model: nn.Module,
    gate: bool,
    data: PreparedData,
    splits: dict[str, list[int]],
    negatives: list[int],
    train_pre: Preprocess,
    pre: Preprocess,
    cfg: TrainConfig,
    cache_dir: Path,
    job: Job,
    ctx: DistContext,
    state: RunState,
    log: Reporter,
) -> None:
    """The validation photos' pet scores (``state.best_pets``), and the gate refitted on the `neither` photos.

    ``train_pre``: the preprocessing the model trained at; ``pre``: the one it predicts at (features anew if not)."""
    open_set = getattr(model, "open_set", None)
    missing = gate and (state.best_pets is None or not len(state.best_pets))
    if missing and cfg.family() == "frozen":
        state.best_pets = frozen_val_pets(model, job.val_gate_rows)  # validation ran the head alone
        missing = False
    if open_set is None or not ctx.is_main or not (negatives or missing):
        return
    # On features of the size the model predicts at (its gate was fitted there), decoded anew if need be.
    at_size = data if pre == train_pre else prepare(cfg.data_dir, pre, cache_dir, classes=data.classes)
    if negatives:
        log.info(f"refitting the `neither` gate with {len(negatives)} photos of the neither folder")
        state.best_pets = refit_gate(open_set, data, at_size, splits, negatives, pre, cache_dir, cfg.model, log.info)
    else:  # a gate that taps blocks the cached features left out: its scores from the pretrained features
        state.best_pets = pristine_val_pets(open_set, data, at_size, splits, pre, cache_dir, cfg.model, log.info)


def views_note(n_rows: int, n_photos: int, views: int) -> str:
    """What an epoch on cached views counts, for the line before the first epoch ('' for one row a photo): its
    training accuracy counted each photo and its mirror as two answers, and said nothing of it. A time budget may
    leave some photos with fewer views (the line before says which): "each" is said only where none was left out."""
    if n_rows <= n_photos:
        return ""
    kinds = "as it is and mirrored" if views == 2 else "as it is, mirrored and augmented"
    each = f" (each {kinds})" if n_rows == n_photos * views else ""
    return (
        f"; an epoch is {n_rows:,} cached views of the {counted(n_photos, 'training photo')}{each}, and "
        "its training loss, accuracy and images/s count each view"
    )


def left_over_note(n_photos: int, steps: int, batch_per_process: int, processes: int = 1) -> str:
    """What an epoch of whole batches leaves for the next ('' where it trains every photo): 92 photos in batches
    of 64 trained 64 an epoch, and its training accuracy of 42.19 % (27 of 64) read as one over 92 photos. A step's
    batch is every process's: ``--batch-size 64`` over 2 processes is 32 each, and a batch of 64."""
    batch = batch_per_process * processes
    trained = steps * batch
    if trained >= n_photos:
        return ""
    per_process = f", {batch_per_process} a process" if processes > 1 else ""
    left = n_photos - trained
    return (
        f"; an epoch trains {trained:,} of the {n_photos:,} training photos, in whole batches of {batch}{per_process} "
        f"(the other {left:,} {'waits' if left == 1 else 'wait'} for the next epoch's shuffle)"
    )


def write_model(
    *,
    cfg: TrainConfig,
    model: nn.Module,
    classes: list[str],
    pre: Preprocess,
    gate: bool,
    data: PreparedData,
    splits: dict[str, list[int]],
    test: set[int],
    negatives: list[int],
    state: RunState,
    metrics: dict,
    log: Reporter,
    learns_neither: bool = False,
) -> None:
    """Fit the temperature and write the model directory (rank 0)."""
    logits, labels = state.best_logits, state.best_labels
    if learns_neither:  # the temperature scales the cat/dog logits of the pets; the gate is the neither class
        gate_record = learnt_neither_gate(model, logits, labels, len(classes))
    elif gate:
        gate_record = gate_config(state.best_pets, model, pre.image_size, len(negatives), cfg.model)
    else:
        gate_record = None
    calibration, calibrated = calibrated_loss(logits, labels, len(classes) if learns_neither else None, classes)
    temperature = calibration.temperature
    metrics["val_loss_calibrated"] = round(calibrated, 5)
    if calibration.note:
        log.info(calibration.note)
    parts = data.split(cfg.val_fraction, cfg.test_fraction)
    config = {
        "architecture": cfg.model,
        "classes": classes,
        "preprocess": pre.to_dict(),
        "temperature": temperature,
        "calibration": calibration.record,
        "gate": gate_record,
        # The settings as run: absolute paths, so that the run can be told apart and repeated from anywhere.
        "training": cfg.to_dict()
        | {
            "data_dir": str(Path(cfg.data_dir).resolve()),
            "out": str(Path(cfg.out).resolve()),
            "cache_dir": str(Path(cfg.cache_dir or default_cache_dir()).resolve()),
        },
        # What catdog evaluate --split needs to find the held-out photos again (also in ONNX exports).
        "split": {"by": "content hash", "val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction},
        "data": {
            "root": str(Path(cfg.data_dir).resolve()),
            "fingerprint": data.fingerprint(),
            "train_images": len(splits["train"]),
            "val_images": len(splits["val"]),
            # Counted as val_images is: the photos of the classes the net learns (the pets, or with a learnt
            # `neither` class those too); the `neither` photos of each part also apart.
            "test_images": sum(data.labels[i] < len(classes) + learns_neither for i in test),
            # The training part's: the gate's refit, or the learnt class; a model with neither uses none of them.
            "neither_images": len(negatives),
            "unused_neither_images": sum(data.labels[i] == len(classes) for i in parts["train"]) - len(negatives),
            "val_neither_images": sum(data.labels[i] == len(classes) for i in parts["val"]),
            "test_neither_images": sum(data.labels[i] == len(classes) for i in test),
            "unreadable_files": len(data.unreadable),
            "unreadable": [{"path": str(Path(path).resolve()), "reason": reason} for path, reason in data.unreadable],
            "left_out": [str(Path(path).resolve()) for path in data.dataset.left_out],  # no label in the layout
        },
        "metrics": metrics,
        "versions": package_versions(),
    }
    out = Path(cfg.out)
    save_model_dir(model.cpu().to(memory_format=torch.contiguous_format), config, out)
    (out / CHECKPOINT).unlink(missing_ok=True)
    # A learnt neither class is validated over three classes (the temperature scales the pets' two).
    over = f" over {', '.join(classes)} and neither" if learns_neither else ""
    # At temperature 1 the calibrated loss is the loss itself: said again, it read as a second figure.
    second_loss = f"calibrated {calibrated:.4f}; " if temperature != 1.0 else ""
    # 11 validation photos, 7 of them dogs, read "val accuracy 63.64%" for a model that answered dog for all.
    constant = as_good_a_constant(state.best_logits, state.best_labels, classes + [NEITHER] * learns_neither)
    over += f", no better than answering {constant.commoner} for all" if constant else ""
    log.info(
        f"saved {out}: val accuracy {state.best_accuracy:.2%}{over}, val loss {state.best_loss:.4f} "
        f"({second_loss}epoch {metrics['best_epoch']}), "
        f"temperature {temperature:.3f}, {metrics['wall_seconds']:.0f} s"
    )
