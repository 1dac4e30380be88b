"""One rank of a real two-process gloo group under a time budget or asking for checkpoints, for tests/test_train.py.

Its own module, with light imports: ``torch.multiprocessing.spawn`` imports the module of the function it runs in
each new process, and test_train.py's imports (catdog.train, the models, the predictor) took seconds more there.
"""

from __future__ import annotations

import os
import time

import torch.distributed as dist

from catdog.training.distributed import DistContext, SharedBudget
from catdog.training.schedule import Budget, Schedule


def budget_rank(rank: int, world: int, port: int, results) -> None:
    """Step under a 2-second budget (rank 1's clock a second behind) and record what this rank saw in ``results``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        schedule = Schedule("cosine", total_steps=10**6, warmup_steps=1)
        # Rank 1's clock is a second behind: only rank 0's may decide.
        budget = Budget(time.monotonic() + 2.0 + rank, schedule)
        shared = SharedBudget(budget, DistContext(rank, world), seconds=0.2)
        fractions, started, step = [], time.monotonic(), 0
        while True:
            step += 1
            time.sleep(0.002 * (1 + rank))  # rank 1 steps slower here; a real step would wait for it
            stop = shared()
            fractions.append(schedule.time_fraction)
            if stop:
                break
        results[rank] = (step, shared.checks, time.monotonic() - started, fractions)
    finally:
        dist.destroy_process_group()


def checkpoint_rank(rank: int, world: int, port: int, results) -> None:
    """One rank of a real two-process gloo group asking, step by step, whether a checkpoint is due."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for seconds in (0.0, 0.05):
            budget = Budget(None, Schedule("cosine", total_steps=100, warmup_steps=1))  # no --time-budget
            shared = SharedBudget(budget, DistContext(rank, world), seconds=0.2, checkpoint_seconds=seconds)
            due = []
            for _ in range(40):
                time.sleep(0.005 * (1 + rank))  # rank 1's clock would be due at other steps than rank 0's
                shared()
                due.append(shared.checkpoint_due)
                if shared.checkpoint_due:
                    shared.checkpointed()
            results[rank, seconds] = due
    finally:
        dist.destroy_process_group()
