"""Several processes (``torchrun``): the process group, barriers, and one time budget for all ranks."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from catdog.errors import CatdogError
from catdog.training.schedule import Budget

T = TypeVar("T")


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


def agreed(ctx: DistContext, check: Callable[[], T]) -> T:
    """``check()`` on every rank; if it refuses on any, every rank raises the refusal and rank 0 says it.

    Each rank reads the data folder and ``--out`` itself, and on several machines one may not see what the
    others do (a folder missing from its filesystem). That rank alone stopped, with a sentence on its own
    machine, and rank 0 stopped in its next collective with a network error; so the ranks compare their
    answers, and rank 0's sentence names the first rank that refused, and its host, when it is not rank 0.
    """
    if ctx.world == 1:
        return check()
    result, refusal = None, None
    try:
        result = check()
    except CatdogError as err:
        refusal = err
    answers: list[tuple[str | None, str] | None] = [None] * ctx.world
    dist.all_gather_object(answers, (None if refusal is None else str(refusal), socket.gethostname()))
    refused = [(rank, why, host) for rank, (why, host) in enumerate(answers) if why is not None]
    if not refused:
        return result  # type: ignore[return-value]
    rank, why, host = refused[0]
    if rank == ctx.rank:  # its own: rank 0 says it, and on another machine its first process, after its rank
        raise refusal
    raise CatdogError(why if rank == 0 else f"On {host} (rank {rank} of {ctx.world}): {why}")


class SharedBudget:
    """Rank 0's budget decision, schedule clock and checkpoint time on every rank, asked about once a second.

    Called once per training step. One process asks its :class:`Budget` every step (host clocks only).
    With several, each question is a broadcast the host must wait for, which would drain a GPU's queue
    at every step; so rank 0 answers with its decision, its schedule's time fraction (every rank then
    steps the same learning rate: each rank's own clock would let their weights drift apart) and how
    many steps to go before the next question: about ``seconds`` worth at the pace since the last one, and no
    more than reach the end of the budget's steps, so that the run stops at the step the budget says.

    A checkpoint is due after ``checkpoint_seconds`` of rank 0's clock, at the same step on every rank: its
    training figures are every rank's running sums added up, which needs every rank at once. Each rank's own
    clock would have them save at different steps. ``checkpoint_seconds`` 0 is every step, on every rank.
    """

    MAX_STEPS_BETWEEN = 1000

    def __init__(
        self, budget: Budget, ctx: DistContext, seconds: float = 1.0, checkpoint_seconds: float = math.inf
    ) -> None:
        self.budget, self.ctx, self.seconds = budget, ctx, seconds
        self.calls = 0
        self.next_check = 1
        self.checked_at: float | None = None
        self.checked_call = 0
        self.checks = 0
        self.checkpoint_seconds = checkpoint_seconds
        self.checkpointed_at = time.monotonic()
        self.checkpoint_due = False  # after the step just asked about: the same answer on every rank

    def write_checkpoint(self, save: Callable[[], None]) -> float:
        """Write a checkpoint with ``save()`` and return its seconds: the next is due ``checkpoint_seconds`` after
        it ends, and the budget keeps as long for the write before the step it precedes."""
        writing = time.monotonic()
        save()
        self.checkpointed_at = time.monotonic()
        self.budget.checkpoint_write_seconds = self.checkpointed_at - writing
        return self.budget.checkpoint_write_seconds

    def step_ended(self) -> float:
        """``time.monotonic()`` at the end of the step just run, as the budget reads it: on a GPU, once the step's
        work is done, wherever the budget will read this step's time (every step with one process; with several,
        the steps that end at a question and the ones before them, whose end is such a step's start).

        A GPU runs a step's work after the host has queued it: read at once, the clock told when the queueing ended.
        Just after a wait for the device (a fold of the running sums, a checkpoint) nothing is queued ahead, so the
        fastest step, which the budget plans with, was the time to queue one, and a run could stop a step late."""
        asks = self.budget.deadline is not None and (self.ctx.world == 1 or self.calls + 2 >= self.next_check)
        if asks and self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        return time.monotonic()

    def __call__(self, step_seconds: float = 0.0, validation_next: bool = False) -> bool:
        """:meth:`Budget.out_of_time` of rank 0, called after each step before ``scheduler.step()``."""
        now = time.monotonic()
        self.checkpoint_due = now - self.checkpointed_at >= self.checkpoint_seconds
        # No checkpoint is written mid-epoch after an epoch's last step: its end writes one after the validation.
        checkpoint_next = self.checkpoint_due and not validation_next
        if self.ctx.world == 1:
            return self.budget.out_of_time(step_seconds, validation_next, checkpoint_next)
        self.calls += 1
        if self.calls < self.next_check:
            # Otherwise decided only where rank 0 tells every rank; a checkpoint every step needs no telling.
            self.checkpoint_due = self.checkpoint_seconds == 0
            return False
        spent = self.budget.out_of_time(step_seconds, validation_next, checkpoint_next)
        every = 1
        if self.checked_at is not None:
            pace = (now - self.checked_at) / (self.calls - self.checked_call)
            # No later than the step the budget ends at: asked a second apart, the run went on for up to a second
            # past it, at the rate set for the step after the question.
            ahead = min(self.seconds, self.budget.seconds_left())
            every = max(1, min(self.MAX_STEPS_BETWEEN, int(ahead / max(pace, 1e-9))))
        fraction = self.budget.schedule.time_fraction
        message = torch.tensor(
            [float(spent), fraction, float(every), float(self.checkpoint_due)],
            dtype=torch.float64,
            device=self.ctx.comm_device,
        )
        dist.broadcast(message, 0)
        spent, fraction, every, due = message.tolist()
        self.budget.schedule.time_fraction = fraction
        self.checkpoint_due = bool(due)
        self.next_check, self.checked_at, self.checked_call = self.calls + int(every), now, self.calls
        self.checks += 1
        return bool(spent)

    def aim_at_next_step(self) -> bool:
        """Rank 0's :meth:`Budget.aim_at_next_step` on every rank (every rank calls it at once)."""
        spent = self.budget.aim_at_next_step()
        if self.ctx.world > 1 and self.budget.deadline is not None:
            message = torch.tensor(
                [self.budget.schedule.time_fraction, float(spent)], dtype=torch.float64, device=self.ctx.comm_device
            )
            dist.broadcast(message, 0)
            self.budget.schedule.time_fraction, spent = message.tolist()
            # The next question was spaced by the time left before the epoch's end, which it knew nothing of: the
            # steps after an end that took a second ran up to a second past the budget's steps. Asked at once.
            self.next_check = self.calls + 1
        return bool(spent)


def epoch_sums(loss_sum: float, correct: int, seen: int, ctx: DistContext) -> tuple[float, int, int]:
    """The running training sums of every rank added up (the same on every rank; all ranks must call it)."""
    if ctx.world == 1:
        return loss_sum, correct, seen
    sums = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=ctx.comm_device)
    dist.all_reduce(sums)
    total_loss, total_correct, total_seen = sums.tolist()
    return total_loss, round(total_correct), round(total_seen)
