"""One epoch of training, validation, and what is recorded after each epoch."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from catdog.augment import sample_seed
from catdog.data import PreparedData, make_loader
from catdog.errors import CatdogError
from catdog.fsutil import atomic_write_text
from catdog.preprocess import Preprocess, to_uint8
from catdog.training.batches import PADDING, image_input
from catdog.training.calibration import calibrated_loss
from catdog.training.checkpoint import RunState
from catdog.training.config import TrainConfig
from catdog.training.distributed import DistContext, SharedBudget, epoch_sums
from catdog.training.precision import autocast, logits_of
from catdog.training.progress import Reporter, peak_rss_mib, plot_curves


@dataclass
class StepParts:
    """What a training step uses besides the model and the batch: the loss, the optimizer and its learning-rate
    schedule, mixed precision, MixUp/CutMix and the moving average of the weights (see :func:`train_one_epoch`)."""

    criterion: nn.Module  # the loss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler  # sets each step's learning rate
    scaler: torch.amp.GradScaler  # scales a float16 loss so that small gradients do not round to 0 (else off)
    dtype: torch.dtype | None  # what autocast computes in (None: float32)
    mix: Callable | None = None  # MixUp/CutMix: (images, labels) -> (mixed images, mixed targets)
    average: Callable[[int], None] | None = None  # --ema: updates the moving average after the given global step


def train_one_epoch(
    *,
    cfg: TrainConfig,
    model: nn.Module,
    loader: Iterable,
    to_input: Callable,
    parts: StepParts,
    state: RunState,
    steps_per_epoch: int,
    ctx: DistContext,
    log: Reporter,
    save: Callable[[RunState], None],
    out_of_time: SharedBudget,
) -> bool:
    """One pass over this rank's share of the training set; returns True when the time budget ran out (before any
    step, when the last epoch's end spent it).

    ``to_input``: (images, seeds) -> the batch the model takes, on its device (augmented there, for images).
    ``save(state)`` writes a checkpoint, when ``out_of_time.checkpoint_due`` (every ``cfg.checkpoint_seconds``).
    ``out_of_time(step_seconds, validation_next)`` asks the time budget, and whether a checkpoint is due.

    The running loss and accuracy add up on the device and reach the host about once a second:
    reading them every step would make the CPU wait for the GPU at every step.
    """
    folded_at = last_step_ended = time.monotonic()
    running = None  # (loss sum, correct) on the device since the last fold
    # A resumed epoch's count holds every rank's photos up to the checkpoint (on rank 0); the steps from here on
    # count this rank's alone. Scaled by the ranks as a whole, the bar showed up to twice the rate that ran.
    counted_for_every_rank = state.seen
    # Under --time-budget this step's rate was set before the last epoch's end (validation, curves.png, the
    # checkpoint), on a guess of how long that would take: 0.6 s guessed, 2.5 s taken, a 10-s budget was spent by
    # the next step at 26 % of --lr. The clock is read again now that the epoch's end is over.
    if out_of_time.aim_at_next_step():
        return True  # no step: the epoch's end spent the budget (a step now would run at a rate of 0)
    restate_rates(parts.scheduler)

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
            "ips": (counted_for_every_rank + ctx.world * (state.seen - counted_for_every_rank))
            / max(state.train_seconds, 1e-9),
        }

    with log.progress(f"epoch {state.epoch + 1}", steps_per_epoch, state.step) as bar:
        for images, labels, seeds in loader:
            tick = time.monotonic()
            # Every random draw of this step (dropout, mixup) comes from this seed: resumable, exactly.
            torch.manual_seed(sample_seed(cfg.seed, "step", state.epoch, state.step, ctx.rank))
            x = to_input(images, seeds)
            y = labels.to(x.device, non_blocking=True)
            target = y
            if parts.mix is not None:
                x, target = parts.mix(x, y)
            with autocast(x.device, parts.dtype):
                logits = logits_of(model(x))
                loss = parts.criterion(logits, target)
            parts.optimizer.zero_grad(set_to_none=True)
            parts.scaler.scale(loss).backward()
            parts.scaler.step(parts.optimizer)
            parts.scaler.update()
            # The rate this step took, of the layers at --lr: with --layer-decay the first group is the earliest
            # block's, far below it, and after scheduler.step() the rate is the next step's (0 after the last).
            state.last_lr = max(group["lr"] for group in parts.optimizer.param_groups)
            # The time budget's clock is read before the scheduler sets the next step's rate, which under
            # --time-budget follows the time that step will end at.
            step_ended = out_of_time.step_ended()
            budget_spent = out_of_time(step_ended - last_step_ended, validation_next=state.step + 1 == steps_per_epoch)
            last_step_ended = step_ended
            parts.scheduler.step()
            if parts.average is not None:
                parts.average(state.global_step + 1)

            state.step += 1
            state.global_step += 1
            # The loss is the step's (against the mixed targets under MixUp/CutMix), the accuracy against each
            # photo's own label: under mixing, a rough figure of how training goes.
            step_sums = torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double()])
            running = step_sums if running is None else running + step_sums
            state.seen += len(y)
            folded = time.monotonic() - folded_at >= 1.0 and fold()
            state.train_seconds += time.monotonic() - tick  # the fold's wait for the device included
            bar.update(**(stats() if folded else {}))
            if budget_spent:
                final_fold()
                return True
            if out_of_time.checkpoint_due and state.step < steps_per_epoch:
                fold()
                # The budget counts the write apart from the next step's time.
                last_step_ended += out_of_time.write_checkpoint(lambda: save(state))
        final_fold()
    return False


def restate_rates(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set each parameter group's rate to the schedule's for the step the scheduler is at, as ``scheduler.step()``
    sets it (the schedule's clock may have moved since)."""
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)


@torch.no_grad()  # not inference_mode: the logits later fit the temperature with autograd
def evaluate(
    *, model: nn.Module, loader: Iterable, to_input: Callable, dtype: torch.dtype | None, ctx: DistContext
) -> dict:
    """Loss and accuracy over the whole validation split (each rank does its share, then sum).

    ``to_input``: (images, None) -> the batch the model takes, on its device (the validation view: no augmentation).
    ``dtype``: what autocast computes in (None: float32). Returns ``val_loss`` and ``val_accuracy``, and the
    ``logits``, ``labels`` and gate ``pets`` scores of every photo (of every rank), on the CPU.
    """
    model.eval()
    all_logits, all_labels, all_pets = [], [], []
    for images, labels in loader:
        x = to_input(images, None)
        with autocast(x.device, dtype):
            out = model(x)
        all_logits.append(logits_of(out).float())  # kept on the device until the end: no sync per batch
        if isinstance(out, tuple) and out[1] is not None:  # a gated model's pet score, to check the gate
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


def record_epoch(
    *,
    cfg: TrainConfig,
    state: RunState,
    val: dict,
    trainable: nn.Module,
    steps_per_epoch: int,
    ctx: DistContext,
    out: Path,
    log: Reporter,
    elapsed: float = 0.0,
    temperature_classes: int | None = None,
) -> None:
    """Append the epoch to the history, keep the best weights, write metrics.jsonl and curves.png.

    ``val``: what :func:`evaluate` returned; ``trainable``: the weights the best epoch keeps (the averaged ones,
    with --ema); ``elapsed``: seconds since the command started, for the history. ``temperature_classes``: a net
    that learnt `neither` after that many classes has its temperature fitted on the pets alone, as the saved
    model's is (:func:`~catdog.training.calibration.calibrated_loss`); None: on every photo.
    """
    # The training figures of every process, as the validation ones are (a resumed epoch's: rank 0 holds the sums
    # of every process up to the checkpoint, the others their own since).
    loss_sum, correct, seen = epoch_sums(state.loss_sum, state.correct, state.seen, ctx)
    seen = seen or 1
    if not (math.isfinite(loss_sum) and math.isfinite(val["val_loss"])):  # the same on every process (reduced)
        # Fitting a temperature to inf/nan logits failed with an overflow that said nothing of why.
        raise CatdogError(
            f"Training diverged in epoch {state.epoch + 1}: the loss is no longer a finite number; "
            f"lower --lr (it was {cfg.lr:g})."
        )
    # The model is deployed with a temperature fitted on these logits, so the epoch is chosen by the loss
    # it will have then. The raw loss also counts the under-confidence that label smoothing trains in and
    # the temperature takes out: it kept a 45-minute fine-tune's first epoch (98.70 % at 224 px) over
    # later ones up to 99.02 %, on raw losses 0.5-1.1 % apart.
    # As the saved model's (write_model): with a learnt `neither` class, its temperature fitted on every photo made
    # the epoch lines' figures not those the saved model then recorded.
    calibration, calibrated = calibrated_loss(val["logits"], val["labels"], temperature_classes)
    temperature = calibration.temperature
    row = {
        "epoch": state.epoch + 1,
        "steps": state.step,
        # Cut short by the time budget: not every step ran (a budget spent at the last step left none out).
        "partial": state.step < steps_per_epoch,
        "train_loss": round(loss_sum / seen, 5),
        "train_accuracy": round(correct / seen, 5),
        "val_loss": round(val["val_loss"], 5),
        "val_loss_calibrated": round(calibrated, 5),
        "temperature": temperature,
        "val_accuracy": round(val["val_accuracy"], 5),
        "lr": float(f"{state.last_lr:.6g}"),  # six significant digits: a decayed rate is 1e-6 or less
        "images_per_s": round(seen / max(state.train_seconds, 1e-9), 2),
        "images_seen": seen,
        "train_seconds": round(state.train_seconds, 6),  # the steps' time alone: a frozen head's is milliseconds
        "wall_seconds": round(elapsed, 1),  # since the command started (a resumed run: since its restart)
    }
    # Ties broken by the raw loss, or the first of tied epochs would be kept whatever followed. (A split the
    # model separates perfectly once tied every epoch at 0; nll_temperature no longer sharpens there.)
    tied = abs(calibrated - state.best_selection) <= 1e-6
    if calibrated < state.best_selection - 1e-6 or (tied and val["val_loss"] < state.best_loss):
        state.best_selection, state.best_epoch, state.bad_epochs = calibrated, state.epoch + 1, 0
        state.best_loss = val["val_loss"]
        state.best_accuracy = val["val_accuracy"]
        state.best_state = {k: v.detach().cpu().clone() for k, v in trainable.state_dict().items()}
        state.best_logits, state.best_labels, state.best_pets = val["logits"], val["labels"], val["pets"]
    else:
        state.bad_epochs += 1
    state.history.append(row)
    # Shown from the exact figures: the row's, rounded to 5 digits first, showed 24 of 57 right (42.105...%) as 42.10%.
    log.info(
        f"epoch {row['epoch']}: train loss {loss_sum / seen:.4f} acc {correct / seen:.2%} | "
        f"val loss {val['val_loss']:.4f}{f' (calibrated {calibrated:.4f})' if temperature != 1.0 else ''} "
        f"acc {val['val_accuracy']:.2%} | "
        f"{run_rate(state.history):,.1f} images/s over the run"
    )
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state.history))
        plot_curves(state.history, out / "curves.png", state.best_epoch)


def run_rate(history: list[dict]) -> float:
    """Training images a second over the epochs so far. An epoch's own rate is what the epoch lines once said: a
    frozen head's epoch is one step of milliseconds on cached features, and its rate swung from 700 to 75,000
    images/s between lines. Epochs recorded before ``train_seconds`` was (a resumed run's) are left out."""
    timed = [row for row in history if "train_seconds" in row]
    seconds = sum(row["train_seconds"] for row in timed)
    return sum(row["images_seen"] for row in timed) / seconds if seconds > 0 else 0.0


def final_metrics(state: RunState, wall_seconds: float) -> dict:
    metrics = {
        "val_loss": round(state.best_loss, 5),
        "val_accuracy": round(state.best_accuracy, 5),
        "best_epoch": state.best_epoch,
        "epochs_run": len(state.history),
        # The rate over the run, as the log's epoch lines give it: the last epoch's own was recorded, and a frozen
        # head's epoch of one step of milliseconds made it swing from 700 to 75,000 images/s.
        "train_images_per_s": round(run_rate(state.history), 2),
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


def validate_at_size(
    *,
    model: nn.Module,
    data: PreparedData,
    val_indices: list[int],
    pre: Preprocess,
    cfg: TrainConfig,
    ctx: DistContext,
    dtype: torch.dtype | None,
    per_rank_batch: int,
) -> dict:
    """The whole model (frozen part included) over the validation photos, decoded at ``pre``'s size.

    ``dtype``: what autocast computes in (None: float32). Returns what :func:`evaluate` returns.
    """
    model.to(ctx.device)
    images = DecodedImages(data, val_indices, pre)
    share = Subset(images, range(ctx.rank, len(images), ctx.world))
    loader = make_loader(share, per_rank_batch, workers=validation_workers(cfg, ctx.device))
    to_input = image_input(pre, ctx.device, cfg.channels_last, eval_view=True)
    return evaluate(model=model, loader=loader, to_input=to_input, dtype=dtype, ctx=ctx)


def validation_workers(cfg: TrainConfig, device: torch.device) -> int:
    """DataLoader processes that decode for :func:`validate_at_size` (a GPU waits for them; a CPU computes)."""
    if cfg.workers is not None:
        return cfg.workers
    return min(8, len(os.sched_getaffinity(0))) if device.type == "cuda" else 1


def forward_seconds(model: nn.Module, pre: Preprocess, device: torch.device) -> float:
    """Seconds of ``model``'s forward pass an image at ``pre``'s size: the fastest of three timed batches of 8.

    The fastest, as one batch on a busy machine was once slowed 2-3 times by the others' work, and the guess of a
    time budget's least (:func:`catdog.training.recipe.seconds_to_train`) went from 11 to 27 s between runs."""
    x = torch.zeros(8, 3, pre.image_size, pre.image_size, device=device)
    model.to(device).eval()
    timed = []
    with torch.no_grad():
        model(x)  # the first call of a shape sets up its kernels: not what each batch costs
        for _ in range(3):
            tick = time.monotonic()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timed.append(time.monotonic() - tick)
    return min(timed) / 8


def estimate_seconds(model: nn.Module, pre: Preprocess, images: int, device: torch.device, workers: int = 1) -> float:
    """A generous guess of :func:`validate_at_size`'s time: the forward pass timed (:func:`forward_seconds`, the
    fastest of three batches of 8), plus decoding in ``workers``."""
    return validation_guess(forward_seconds(model, pre, device), images, workers)


def validation_guess(per_image: float, images: int, workers: int = 1) -> float:
    """:func:`estimate_seconds` from a forward pass's ``per_image`` seconds, already timed: the images, decoded in
    ``workers`` processes (0: in this one), and the workers' start, which a run without them never waits for."""
    starting = 10.0 / workers**0.5 if workers else 0.0
    return 1.3 * images * (per_image + 0.01 / max(1, workers)) + starting
