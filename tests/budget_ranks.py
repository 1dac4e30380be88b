"""One rank of a real two-process gloo group under a time budget, asking for checkpoints or resuming an epoch, for
tests/test_train.py.

Its own module, with light imports: ``torch.multiprocessing.spawn`` imports the module of the function it runs in
each new process, and test_train.py's imports (catdog.train, the models, the predictor) took seconds more there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from catdog.training.distributed import DistContext, SharedBudget
from catdog.training.schedule import Budget, Schedule


class SlowLayer(torch.nn.Linear):
    """A layer whose forward pass takes ``seconds``, as a network's step does: long beside a busy machine's hiccups."""

    def __init__(self, in_features: int, out_features: int, seconds: float = 0.2) -> None:
        super().__init__(in_features, out_features)
        self.seconds = seconds
        self.forward_started = 0.0  # time.monotonic() as the last forward pass began

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_started = time.monotonic()
        time.sleep(self.seconds)
        return super().forward(x)


def budget_rank(rank: int, world: int, port: int, results, runs: dict) -> None:
    """Step under each of ``runs``' budgets in turn, recording what this rank saw in ``results[name, rank]``.

    ``runs``: name -> (the budget's seconds, each rank's step in seconds, how often rank 0's budget is asked, and
    when an epoch ends and how long its end takes, in seconds, or None). Rank 1's clock is a second behind: only
    rank 0's may decide."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name, (budget_seconds, step_seconds, ask_seconds, epoch_end) in runs.items():
            schedule = Schedule("cosine", total_steps=10**6, warmup_steps=1)
            budget = Budget(time.monotonic() + budget_seconds + rank, schedule)
            shared = SharedBudget(budget, DistContext(rank, world), seconds=ask_seconds)
            fractions, started, step = [], time.monotonic(), 0
            step_ended = started
            while True:
                step += 1
                time.sleep(step_seconds[rank])  # a real step would wait for the slower rank
                step_started, step_ended = step_ended, time.monotonic()
                stop = shared(step_ended - step_started)
                fractions.append(schedule.time_fraction)  # the next step's: the last one is not run
                if stop:
                    break
                if epoch_end is not None and step_ended - started >= epoch_end[0]:  # as train_one_epoch starts
                    time.sleep(epoch_end[1])  # the validation, curves.png, the checkpoint
                    epoch_end, step_ended = None, time.monotonic()
                    if shared.aim_at_next_step():
                        break
            steps_end = budget.deadline - budget.reserve() - started
            # As the next epoch starts: rank 0's budget is spent (rank 1's own clock, a second behind, is not).
            spent_at_next_epoch = shared.aim_at_next_step()
            results[name, rank] = (step, shared.checks, step_ended - started, fractions, steps_end, spent_at_next_epoch)
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
                    shared.write_checkpoint(lambda: None)
            results[rank, seconds] = due
    finally:
        dist.destroy_process_group()


def resumed_epoch_rank(rank: int, world: int, port: int, out: Path, results) -> None:
    """Train 20 steps of a 45-step epoch, checkpoint, resume and train the rest with rank 0's progress bar on; record
    what the bar showed last and the epoch's line of metrics.jsonl."""
    import io
    import json

    from rich.console import Console

    from catdog.training.checkpoint import RunState, load_checkpoint, save_checkpoint
    from catdog.training.config import TrainConfig
    from catdog.training.distributed import epoch_sums
    from catdog.training.loop import StepParts, record_epoch, train_one_epoch
    from catdog.training.progress import Reporter

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ctx, cfg, steps = DistContext(rank, world), TrainConfig(data_dir="d", out=str(out)), 45
        torch.manual_seed(rank)
        batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)), None) for _ in range(steps)]

        def epoch(state: RunState, loader: list, log: Reporter) -> tuple:
            model = SlowLayer(4, 2, seconds=0.05)  # 160 photos/s over the two ranks
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, Schedule("cosine", steps, warmup_steps=1))
            scaler = torch.amp.GradScaler("cpu", enabled=False)
            if state is None:  # resumed: the checkpoint rank 0 wrote
                state = load_checkpoint(out, cfg, model, optimizer, scheduler, scaler)
                if rank != 0:  # as catdog.training.recipe.train resumes: rank 0's checkpoint holds every rank's sums
                    state.loss_sum, state.correct, state.seen = 0.0, 0, 0
            parts = StepParts(torch.nn.CrossEntropyLoss(), optimizer, scheduler, scaler, None)
            out_of_time = SharedBudget(Budget(None, Schedule("cosine", steps, 1)), ctx)
            train_one_epoch(
                cfg=cfg, model=model, loader=loader, to_input=lambda images, seeds: images, parts=parts, state=state,
                steps_per_epoch=steps, ctx=ctx, log=log, save=lambda state: None, out_of_time=out_of_time,
            )  # fmt: skip
            return state, (model, optimizer, scheduler, scaler)

        quiet = Reporter(Console(file=io.StringIO()), enabled=False)
        state, trained = epoch(RunState(), batches[:20], quiet)
        sums = epoch_sums(state.loss_sum, state.correct, state.seen, ctx)  # as catdog.training.recipe.checkpointer
        if rank == 0:
            state.loss_sum, state.correct, state.seen = sums
            save_checkpoint(out, cfg, state, *trained)
        dist.barrier()

        shown = io.StringIO()
        bar = Reporter(Console(file=shown, force_terminal=True, width=200), enabled=rank == 0)
        state, (model, *_) = epoch(None, batches[20:], bar)
        labels = torch.tensor([0, 1])
        val = {"val_loss": 0.5, "val_accuracy": 1.0, "logits": torch.eye(2), "labels": labels, "pets": torch.ones(2)}
        record_epoch(cfg=cfg, state=state, val=val, trainable=model, steps_per_epoch=steps, ctx=ctx, out=out, log=bar)
        if rank == 0:
            results[rank] = (shown.getvalue(), json.loads((out / "metrics.jsonl").read_text().splitlines()[-1]))
    finally:
        dist.destroy_process_group()
