"""Checkpoints: where a run is (:class:`RunState`), written atomically and read back on ``--resume``."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from catdog.errors import CatdogError
from catdog.fsutil import atomic_write, why_unwritable
from catdog.models import ModelError
from catdog.models.files import CHECKPOINT
from catdog.training.config import RESUME_KEYS, TrainConfig


@dataclass
class RunState:
    """Where a run is; everything here goes into the checkpoint."""

    epoch: int = 0
    step: int = 0  # steps done in the current epoch
    global_step: int = 0  # steps done in the run
    # The current epoch's running training figures, cleared by reset_running for the next. The sums are this
    # rank's, except that rank 0 resumes with every rank's up to the checkpoint (see checkpointer).
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    train_seconds: float = 0.0  # the steps' own time, not validation's or a checkpoint's
    last_lr: float = 0.0  # the rate the last step took (of the layers at --lr)
    best_selection: float = math.inf  # the best epoch's calibrated validation loss (what chooses it)
    best_loss: float = math.inf  # and its raw validation loss
    best_accuracy: float = 0.0
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one: --patience stops the run at that many
    best_state: dict = field(default_factory=dict)
    best_logits: torch.Tensor | None = None
    best_labels: torch.Tensor | None = None
    best_pets: torch.Tensor | None = None  # pet scores of the validation photos (gated models)
    train_size_metrics: dict = field(default_factory=dict)  # best val loss/accuracy at image_size, if re-validated
    history: list = field(default_factory=list)

    def reset_running(self) -> None:
        self.loss_sum, self.correct, self.seen, self.train_seconds = 0.0, 0, 0, 0.0


def check_out_dir(out: Path, cfg: TrainConfig, writer: bool = True) -> None:
    """Refuse an ``--out`` the run cannot use, before any work. ``writer``: this process writes it (rank 0)."""
    data = Path(cfg.data_dir).resolve()
    if out.exists() and not out.is_dir():  # found out only after an epoch's training, when the model was written
        raise CatdogError(f"--out '{out}' is a file; give a folder to write the model into.")
    if writer:
        check_writable(out)
    if out.resolve() == data or data in out.resolve().parents:
        # Its curves.png would be a photo of the next run, and the folder a class of its own.
        raise CatdogError(f"--out '{out}' is inside the data folder '{cfg.data_dir}'; write the model elsewhere.")
    if cfg.resume:
        if not (out / CHECKPOINT).exists():
            raise CatdogError(f"'{out}' holds no unfinished run to resume (no {CHECKPOINT}).")
        return
    if (out / CHECKPOINT).exists():
        raise CatdogError(f"'{out}' holds an unfinished run; pass --resume to continue it, or choose another --out.")
    if (out / "model.safetensors").exists() and not cfg.overwrite:
        raise CatdogError(f"'{out}' already holds a model; choose another --out or pass --overwrite.")


def check_writable(out: Path) -> None:
    """Refuse a folder that cannot be written (under a file, read-only, not permitted).

    It was found out after the first epoch, when the first checkpoint or metrics.jsonl was written.
    """
    why = why_unwritable(out)
    if why:
        raise CatdogError(f"--out '{out}' cannot be written: {why}; choose a folder you can write to.")


def save_checkpoint(out, cfg, state, trainable, optimizer, scheduler, scaler, ema=None) -> None:
    checkpoint = {
        "config": cfg.to_dict(),
        "state": {f.name: getattr(state, f.name) for f in fields(state) if f.name != "best_state"},
        "best_state": state.best_state,
        "model": trainable.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()},
    }
    atomic_write(out / CHECKPOINT, lambda tmp: torch.save(checkpoint, tmp))


def load_checkpoint(out, cfg, trainable, optimizer, scheduler, scaler, ema=None) -> RunState:
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
    if (saved.get("time_budget") is None) != (cfg.time_budget is None):  # the schedule's horizon: clock or epochs
        had = "with" if saved.get("time_budget") is not None else "without"
        raise CatdogError(f"The run in '{out}' was started {had} --time-budget; resume it {had} one.")
    if saved.get("time_budget") is not None and saved.get("epochs") == 10_000:
        saved = {**saved, "epochs": None}  # catdog before 2026-12-06 wrote 10,000 for "until the budget ends"
    changed = [k for k in RESUME_KEYS if saved.get(k, getattr(TrainConfig, k, None)) != getattr(cfg, k)]
    if changed:
        options = ", ".join(
            f"--{k.replace('_', '-')} {saved[k]}" if saved.get(k) is not None else f"no --{k.replace('_', '-')}"
            for k in changed
        )
        raise CatdogError(f"The run in '{out}' was started with {options}; resume it with the same options.")
    try:
        trainable.load_state_dict(checkpoint["model"])
    except RuntimeError:  # a run started by a catdog whose net had other tensors or shapes
        raise ModelError(
            f"'{out / CHECKPOINT}' holds a {cfg.model} that does not fit the one this catdog builds; "
            "finish it with the catdog that started it, or delete it to start the run over."
        ) from None
    if ema is not None:
        # A run checkpointed without --ema starts its average from the weights it resumes with.
        ema.module.load_state_dict(checkpoint.get("ema") or checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if torch.cuda.is_available() and checkpoint["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    return RunState(**checkpoint["state"], best_state=checkpoint["best_state"])
