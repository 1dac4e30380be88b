"""Rank 0's voice (progress bars or log lines), the training curves, and what ran where."""

from __future__ import annotations

import platform
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from rich.console import Console

from catdog.fsutil import atomic_write, shown


class Timeline(dict):
    """Seconds from ``started`` to each milestone: where a short run's time goes (kept in the metrics)."""

    def __init__(self, started: float) -> None:
        super().__init__()
        self.started = started

    def mark(self, milestone: str) -> None:
        self[milestone] = round(time.monotonic() - self.started, 1)

    def training_starts(self) -> str:
        return (
            f"training starts {self['training_started']:.1f} s after start (model built at "
            f"{self['model_built']:.1f} s, images decoded at {self['data_ready']:.1f} s)"
        )


class Reporter:
    """Rank 0's voice: a rich progress bar on a terminal, plain log lines otherwise."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.tty = console.is_terminal

    def info(self, message: str) -> None:
        if self.enabled:
            # Its names as every command prints them: a byte that is not UTF-8 as '\xe9' (stderr wrote '\udce9'), and
            # square brackets and ':dog:' as text, not rich markup or emoji ('saved models[v2]' printed 'saved models').
            line = f"[{time.strftime('%H:%M:%S')}] {shown(message)}"
            self.console.print(line, highlight=False, soft_wrap=True, emoji=False)

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


def plot_curves(history: list[dict], path: Path, kept_epoch: int | None = None) -> None:
    """Loss, accuracy and learning rate per epoch, and the epoch kept so far (written atomically)."""
    import matplotlib.pyplot as plt

    fig = curves_figure(history, kept_epoch)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def curves_figure(history: list[dict], kept_epoch: int | None = None):
    """The figure of :func:`plot_curves`: loss and accuracy, train vs validation, then the learning rate.

    The validation loss is drawn calibrated too: the epoch is kept on that one (the raw loss may be lowest
    elsewhere). The learning rate is the one each epoch's last step took (``lr`` in metrics.jsonl, one per
    epoch): beside the loss, it shows where the warm-up ended and how far the schedule had decayed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    with_lr = all("lr" in r for r in history)  # histories of a catdog before the rate was recorded have none
    fig, axes = plt.subplots(1, 3 if with_lr else 2, figsize=(15 if with_lr else 10, 4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "o-", label="validation")
        if key == "loss" and all("val_loss_calibrated" in r for r in history):
            ax.plot(epochs, [r["val_loss_calibrated"] for r in history], "o--", label="validation, calibrated")
        ax.set_title(title)
    if with_lr:
        axes[2].plot(epochs, [r["lr"] for r in history], "o-", color="tab:green", label="last step of the epoch")
        axes[2].set_title("learning rate")
        axes[2].set_ylim(bottom=0)  # the schedule decays to 0 (cosine) or near it (one-cycle): show where 0 is
    for ax in axes:
        if kept_epoch:
            ax.axvline(kept_epoch, color="grey", linestyle=":", label=f"kept: epoch {kept_epoch}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no ticks at 1.25 or 1.5
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


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
