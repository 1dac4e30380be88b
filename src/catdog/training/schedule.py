"""The optimizer, the learning-rate schedule and the time budget."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from catdog.training.config import TrainConfig


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

    SAVE_SECONDS = 5.0  # kept after the last validation pass, for the final save

    def __init__(self, deadline: float | None, schedule: Schedule, validation_steps: float | None = None) -> None:
        """``validation_steps``: the validation pass's photos over a training step's (per process), to guess its
        time before it is first timed; None: not known (a tenth of the time is kept for it instead)."""
        self.deadline = deadline
        self.schedule = schedule
        self.started = time.monotonic()
        # The share of the schedule a resumed run had done (restored with the scheduler's state: LambdaLR keeps a
        # callable's attributes). This budget spends the rest: read from 0, the rate went back near its peak.
        self.done_before = schedule.time_fraction
        self.validation_steps = validation_steps
        self.calls = 0
        self.fastest_step = math.inf  # seconds, of the steps after the first (which also sets up kernels)
        self.eval_seconds = 0.0  # the last validation pass's, once one has run
        self.checkpoint_write_seconds = 0.0  # the last checkpoint's write, once one has been written
        self.final_seconds = 0.0  # kept for the work after the last epoch (validation at the test size)

    def validation_seconds(self) -> float | None:
        """The last validation pass's time or, before the first, a guess; None while there is nothing to go on.

        The guess is the time of training on as many photos as it validates (the fastest step's per photo): a
        forward pass alone costs about a third of that. A tenth of the budget, guessed before, was 2 s of a 30-s
        run, less than the 5 s kept after it: such runs ran past their deadline (32-36 s of 30), or the first
        validation stopped them at once with the rate still up (2.9e-4 of 1e-3).
        """
        if self.eval_seconds:
            return self.eval_seconds
        if self.validation_steps is None or math.isinf(self.fastest_step):
            return None
        return self.validation_steps * self.fastest_step

    def out_of_time(
        self, step_seconds: float = 0.0, validation_next: bool = False, checkpoint_next: bool = False
    ) -> bool:
        """True when the budget is spent: the next step would end past the time kept for the end. Called after
        each step, before ``scheduler.step()`` sets the next step's rate: it also sets the schedule's clock to the
        time that next step will end at.

        ``step_seconds``: how long the step just done took, a checkpoint's write before it left out;
        ``validation_next``: the epoch has ended, so a validation pass (as long as the last one) comes before the
        next step; ``checkpoint_next``: a checkpoint (as long as the last one) is written before the next step.
        """
        if self.deadline is None:
            return False
        self.calls += 1
        if self.calls > 1:  # under torchrun asked about once a second: the step just before each question
            self.fastest_step = min(self.fastest_step, step_seconds)
        validation = self.validation_seconds()
        # The next step is guessed as long as the fastest: the step just done may have been slowed by a checkpoint's
        # write (an epoch's first step, by its loader starting; any, by a busy machine), and taken as the guess it
        # stopped the run up to its length early. After the first step alone (it also sets up kernels): no guess.
        next_step = self.fastest_step if math.isfinite(self.fastest_step) else 0.0
        next_step_ends = time.monotonic() + next_step + ((validation or 0.0) if validation_next else 0.0)
        # Its write is counted here, not in the steps' times: a write every step (--checkpoint-seconds 0) made the
        # fastest step, and the first validation's guess from it, as long as a step and a write.
        next_step_ends += self.checkpoint_write_seconds if checkpoint_next else 0.0
        # The rate set after this check is the one the next step takes, so the schedule reads the time that step
        # will end at. Read at the check before, as it was, a budget run's last step took the rate of one or two
        # steps earlier (2 % of --lr).
        self.aim(next_step_ends)
        # A step ending past the time kept would take the schedule's end, a rate of 0, and train nothing: the
        # budget stopped one step later, and every run's last step (with torchrun up to a second of them) ran at 0.
        return next_step_ends > self.steps_end()

    def steps_end(self) -> float:
        """When the steps must have ended: the deadline less the time kept for the validation and the final save."""
        return self.deadline - self.reserve()

    def seconds_left(self) -> float:
        """Seconds until the steps must have ended (infinite without a budget)."""
        return math.inf if self.deadline is None else self.steps_end() - time.monotonic()

    def reserve(self) -> float:
        """Seconds kept at the end for the validation pass that follows the last steps and the final save."""
        validation = self.validation_seconds()
        # Until then (one step, or no validation size given), a tenth of the time is kept for the validation.
        if validation is None:
            return 0.1 * (self.deadline - self.started) + self.final_seconds
        return 1.25 * validation + self.least_reserve()

    def least_reserve(self) -> float:
        """The least :meth:`reserve` keeps once the validation is timed or guessed, however short it is: seconds
        for the final save, and for validating again at the test size."""
        return self.SAVE_SECONDS + self.final_seconds

    def aim(self, step_ends: float) -> None:
        """Set the schedule's clock to the share of the budget spent when a step ends at ``step_ends``."""
        # Divided by at least 1 s, as it once was, steps of under a second in all never reached the cosine's end:
        # 0.45 s of them stopped at 45 % of it, a rate of 58 % of --lr.
        span = self.steps_end() - self.started
        spent = (step_ends - self.started) / span if span > 0 else 1.0
        self.schedule.time_fraction = self.done_before + (1.0 - self.done_before) * spent

    def aim_at_next_step(self) -> bool:
        """Aim the schedule at the end of a step starting now, as long as the fastest so far (after an epoch's end,
        whose length the last check could only guess); nothing without a budget or a timed step.

        True when that step would end past the steps' end: the epoch's end took longer than guessed, and the step
        would take the schedule's end, a rate of 0."""
        if self.deadline is None or not math.isfinite(self.fastest_step):
            return False
        step_ends = time.monotonic() + self.fastest_step
        self.aim(step_ends)
        return step_ends > self.steps_end()


class Schedule:
    """Learning-rate factor per step: linear warm-up then cosine decay, or one-cycle.

    Written out rather than torch's OneCycleLR/CosineAnnealingLR because under a time budget
    the horizon is time, not a step count: the progress is the larger of the step fraction
    and ``time_fraction`` (set by :meth:`Budget.out_of_time`: the share of the budget spent when the
    step the rate is for will end). ``total_steps`` None: the time alone (a budget without ``--epochs``).
    """

    def __init__(self, kind: str, total_steps: int | None, warmup_steps: int) -> None:
        self.kind = kind
        self.total_steps = None if total_steps is None else max(1, total_steps)
        self.warmup_steps = max(1, warmup_steps)
        self.warms_up = warmup_steps > 0  # --warmup-epochs 0 (or under a step's worth): the first step at full rate
        self.time_fraction = 0.0
        self.warmup_ended_at: int | None = None  # the first step at the warm-up's full factor (a budget may hasten it)

    def __call__(self, step: int) -> float:
        by_steps = step / self.total_steps if self.total_steps else 0.0
        progress = min(1.0, max(by_steps, self.time_fraction))
        if self.kind == "onecycle":  # cosine up from 1/25 over the first 25%, then cosine down to ~0
            if progress < 0.25:
                return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * progress / 0.25)) / 2
            return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * (progress - 0.25) / 0.75)) / 2
        # Under a time budget, warm-up ends after warmup_steps or a twentieth of the budget, whichever
        # comes first: a budget of about an epoch must not be spent mostly warming up.
        warmup = min(1.0, max((step + 1) / self.warmup_steps, 20 * self.time_fraction))
        if warmup == 1.0 and self.warmup_ended_at is None:
            self.warmup_ended_at = step
        return warmup * (1 + math.cos(math.pi * progress)) / 2

    def warmup_steps_run(self, steps_run: int) -> int:
        """How many of a run's ``steps_run`` steps the warm-up lasted: to the first at its full factor, which a time
        budget may bring before ``warmup_steps`` (all of them when the run ended first)."""
        if not self.warms_up:  # none was asked: 1 step, the first at full rate, was once counted as a warm-up
            return 0
        return steps_run if self.warmup_ended_at is None else min(self.warmup_ended_at + 1, steps_run)
