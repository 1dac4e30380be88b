"""Architectures on the same data and budget: seed-cnn, catnet, EfficientNet-Lite0 frozen and fine-tuned.

For each: validation log loss (config.json) and model size (model.safetensors) as rows of the
table (bench_train's rows hold accuracy, speed and memory of the same runs), and the
accuracy-vs-wall-clock curve from its ``metrics.jsonl``, drawn for all four in
``benchmarks/architectures.png``.

The runs are bench_train's recipes (:data:`benchmarks.bench_train.RUNS`), each a real ``catdog train``
in a subprocess with a cold cache: quick mode on 1,000 dev photos for 1-2 minutes each, full mode on
all 23,000 with bench_train's budgets. With ``CATDOG_BENCH_RUNS_DIR=DIR`` (full mode) the runs are kept
in DIR and reused, so ``python -m benchmarks train compare`` trains each recipe once.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_train import RUNS, runs_root, train_recipe
from benchmarks.common import REPO, Result, history

PLOT = REPO / "benchmarks" / "architectures.png"


def plot(curves: dict[str, list[dict]], title: str, path: Path = PLOT) -> None:
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
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def run(quick: bool) -> list[Result]:
    results: list[Result] = []
    curves: dict[str, list[dict]] = {}
    data_note = f"{'1,000' if quick else 'all 23,000'} dev photos"
    with runs_root(quick) as (data, root):
        for name, options, full_budget, quick_budget, _ in RUNS:
            run_ = train_recipe(name, options, quick_budget if quick else full_budget, data, root)
            metrics, command = run_.metrics, run_.command
            curves[name] = history(run_.out)
            size = (run_.out / "model.safetensors").stat().st_size / 2**20
            note = f"{data_note}; best epoch {metrics['best_epoch']} of {metrics['epochs_run']}"
            # Accuracy, speed and memory are bench_train's rows for the same runs; compare adds the rest.
            results += [
                Result("compare", f"{name}: val log loss", round(metrics["val_loss"], 4), "", command,
                       notes=note, train_photos=run_.train_photos),
                Result("compare", f"{name}: model size", round(size, 1), "MiB", command, notes="model.safetensors",
                       train_photos=run_.train_photos),
            ]  # fmt: skip
        budgets = [f"{n} {q if quick else f} min" for n, _, f, q, _ in RUNS]
        budgets = ", ".join(budgets[:2]) + ",\n" + ", ".join(budgets[2:])
        # Quick mode's smoke runs draw into their own folder: the plot in docs/benchmarks.md is the full runs'.
        plot(curves, f"{data_note}\nbudgets: {budgets}", root / "architectures.png" if quick else PLOT)
    return results
