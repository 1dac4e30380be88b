"""Architectures on the same data and budget: seed-cnn, catnet, EfficientNet-Lite0 frozen and fine-tuned.

For each: validation accuracy and log loss (config.json), training images/s (its last epoch),
peak memory of the training process, model size (model.safetensors), and the accuracy-vs-wall-clock
curve from its ``metrics.jsonl``, drawn for all four in ``benchmarks/architectures.png``.

Where the runs come from:
- ``CATDOG_COMPARE_RUNS=DIR``: model directories ``DIR/<name>`` (names of :data:`RUNS`, spaces as
  dashes), e.g. kept from bench_train's full runs; peak memory is read from ``DIR/<name>/peak_rss_mib``
  when present (a number written by whoever ran it).
- otherwise this benchmark trains them itself with ``catdog train`` in a subprocess, each with its own
  cold cache: quick mode on 1,000 dev photos for 1 minute each (scratch) and 2 minutes (Lite0),
  full mode on the whole dev set with bench_train's budgets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.bench_speed import subset
from benchmarks.common import REPO, Result, catdog_cmd, need_dev_data

PLOT = REPO / "benchmarks" / "architectures.png"
RUNS = [
    # name, catdog train options, full budget (min), quick budget (min)
    ("seed-cnn", ["--model", "seed-cnn", "--image-size", "128"], 15, 1),
    ("catnet", ["--model", "catnet", "--image-size", "128"], 15, 1),
    ("lite0 frozen", ["--model", "tf_efficientnet_lite0", "--freeze", "backbone"], 10, 2),
    ("lite0 fine-tuned", ["--model", "tf_efficientnet_lite0"], 45, 2),
]


def train_one(args: list[str], log: Path) -> float:
    """Run ``catdog train`` and return the child's own peak RSS in MiB (``os.wait4`` gives its rusage)."""
    with open(log, "w") as stderr:
        child = subprocess.Popen(catdog_cmd(*args), stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if child.returncode != 0:
        raise RuntimeError(f"catdog {' '.join(args)} failed: {log.read_text()[-2000:]}")
    return usage.ru_maxrss / 1024


def history(model_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


def plot(curves: dict[str, list[dict]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from catdog.fsutil import atomic_write

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in curves.items():
        elapsed = [row["wall_seconds"] / 60 for row in rows]
        ax.plot(elapsed, [100 * r["val_accuracy"] for r in rows], "o-", label=name)
    ax.set_xlabel("wall-clock since the command started (min)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(PLOT, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def run(quick: bool) -> list[Result]:
    given = os.environ.get("CATDOG_COMPARE_RUNS")
    results: list[Result] = []
    curves: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        if given:
            root, data_note = Path(given), f"model directories from {given}"
        else:
            dev = need_dev_data()
            data = subset(dev, Path(tmp) / "subset", 500) if quick else dev
            root = Path(tmp) / "runs"
            data_note = f"{'1,000' if quick else 'all 23,000'} dev photos"
        for name, options, full_budget, quick_budget in RUNS:
            budget = quick_budget if quick else full_budget
            out = root / name.replace(" ", "-")
            command = f"catdog train DEV --out MODEL {' '.join(options)} --time-budget {budget}"
            if given:
                rss_file = out / "peak_rss_mib"
                rss = float(rss_file.read_text()) if rss_file.exists() else float("nan")
                command = f"model directory {out}"
            else:
                cache = Path(tmp) / "cache" / out.name
                args = ["train", str(data), "--out", str(out), *options, "--time-budget", str(budget)]
                rss = train_one([*args, "--cache-dir", str(cache)], Path(tmp) / "train.log")
                shutil.rmtree(cache, ignore_errors=True)
            metrics = json.loads((out / "config.json").read_text())["metrics"]
            curves[name] = history(out)
            size = (out / "model.safetensors").stat().st_size / 2**20
            note = f"{data_note}; best epoch {metrics['best_epoch']} of {metrics['epochs_run']}"
            results += [
                Result("compare", f"{name}: val accuracy", round(100 * metrics["val_accuracy"], 2), "%", command,
                       notes=note),
                Result("compare", f"{name}: val log loss", round(metrics["val_loss"], 4), "", command),
                Result("compare", f"{name}: training images/s", metrics["train_images_per_s"], "images/s", command,
                       notes="last epoch; frozen: head on cached features"),
                Result("compare", f"{name}: peak RSS of training", round(rss), "MiB", command),
                Result("compare", f"{name}: model size", round(size, 1), "MiB", command, notes="model.safetensors"),
            ]  # fmt: skip
    budgets = ", ".join(f"{n} {q if quick else f} min" for n, _, f, q in RUNS)
    plot(curves, f"{data_note}\nbudgets: {budgets}")
    return results
