"""GPU floors: time from raw JPEG files to a model validated at the target accuracy, on one NVIDIA GPU.

Each run is the real ``catdog train`` in a subprocess with a cold cache (every JPEG decoded in
the run), timed from process start to exit (bench_train.train_recipe). The time floor is measured:
process start to the first validation at the target (bench_train.time_to_accuracy); the wall-clock,
which the budget sets, is a figure beside it.
- fine-tuning EfficientNet-Lite0 (the whole network): >= 99.0 % on the test split, and 99.0 % on validation
  reached in <= 60 s;
- catnet from scratch: >= 95.0 % on the test split, and 95.0 % on validation reached in <= 5 minutes.
Every run holds out the test split of bench_train (``--test-fraction 0.1``), which no choice sees: the recipe,
the best epoch and the temperature are chosen on validation, so the accuracy floors are checked on the test split.
On the GPU the pixel cache lives in GPU memory and is augmented there a batch at a time (see
``train.CachedBatches`` and ``augment.augment_batch``), in bf16 autocast, channels_last, with
a fused AdamW and no host-device synchronisation inside the step loop.

Without a CUDA GPU there is nothing to measure: the benchmark says so and records nothing.
``CATDOG_GPU_DATA`` points at the data to train on (default: the dev data); a lent GPU machine
of this project can take only 64 MiB, so it trains on the compact copy of benchmarks/gpu_pack.py
(docs/benchmarks.md says which photos). ``CATDOG_BENCH_GPU_RUNS="a,b"`` runs those recipes instead of the floors'.
``CATDOG_BENCH_GPU_TRAIN_ONLY=1`` trains and stops there; with ``CATDOG_BENCH_RUNS_DIR`` holding runs trained
so by this code (brought back by benchmarks/gpu_models.py), the figures are made without a GPU: the
rows name the machine that trained, and their notes the one that evaluated. A name of ``SOUPS`` trains
its members and averages them with ``catdog soup`` where the figures are made.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from benchmarks.bench_train import (
    Run,
    kept_record,
    run_dir,
    test_accuracy,
    time_to_accuracy_result,
    train_recipe,
)
from benchmarks.common import Result, catdog_cmd, need_dev_data, nonpet_pictures, turned_away

LITE0 = "--model tf_efficientnet_lite0 --patience 1000"
FINE_TUNE = f"{LITE0} --batch-size 128 --lr 1e-3 --layer-decay 0.85"  # the floor's recipe
LITE1 = FINE_TUNE.replace("lite0", "lite1")
LITE2 = FINE_TUNE.replace("lite0", "lite2")
RUNS = [
    # name, catdog train options, budget (min), accuracy floor (%), time floor (s: process start to that accuracy)
    ("gpu fine-tune lite0", FINE_TUNE, 0.85, 99.0, 60),
    (
        "gpu catnet 160px",
        "--model catnet --image-size 160 --batch-size 256 --lr 4e-3 --cutmix 1.0 --patience 100000",
        4.75,
        95.0,
        300,
    ),
    # Not run unless named: the fine-tune's neighbours (benchmarks/gpu_explore.py tries them side by
    # side), a longer budget, and quick checks that the GPU path runs at all (seconds of training).
    # The first side-by-side trial (2026-11-26, around layer decay 0.7) found 0.85 best; the recipe then
    # scored 99.02, 98.93 and 98.84 % with seeds 0, 1 and 2, on the floor rather than above it. These
    # neighbours of it try what should lift its mean: validating at a larger side (FixRes: 22 errors at
    # 224 px became 20 at 288 for the 45-minute CPU fine-tune), training smaller and testing at 224
    # (more epochs in the budget), a flatter layer decay and a higher rate; the two seeds measure the spread.
    ("gpu fine-tune lite0 seed 1", f"{FINE_TUNE} --seed 1", 0.85, 99.0, 60),
    ("gpu fine-tune lite0 seed 2", f"{FINE_TUNE} --seed 2", 0.85, 99.0, 60),
    ("gpu fine-tune lite0 test 256", f"{FINE_TUNE} --test-image-size 256", 0.85, 99.0, 60),
    ("gpu fine-tune lite0 test 288", f"{FINE_TUNE} --test-image-size 288", 0.85, 99.0, 60),
    ("gpu fine-tune lite0 train 192 test 224", f"{FINE_TUNE} --image-size 192 --test-image-size 224", 0.85, 99.0, 60),
    ("gpu fine-tune lite0 layer decay 0.9", f"{LITE0} --batch-size 128 --lr 1e-3 --layer-decay 0.9", 0.85, 99.0, 60),
    ("gpu fine-tune lite0 lr 2e-3", f"{LITE0} --batch-size 128 --lr 2e-3 --layer-decay 0.85", 0.85, 99.0, 60),
    # The family's default layer decay, for the comparison in docs/benchmarks.md.
    ("gpu fine-tune lite0 layer decay 0.7", f"{LITE0} --batch-size 128 --lr 1e-3 --layer-decay 0.7", 0.85, 99.0, 60),
    ("gpu fine-tune lite0 1.5 min", FINE_TUNE, 1.5, None, None),
    # The larger shipped backbones fine-tuned whole with Lite0's recipe, each at its own size and validated
    # again 1.25x larger (FixRes), within the 5 minutes the accuracy issue allows one GPU for 99.5 %.
    ("gpu fine-tune lite1", f"{LITE1} --test-image-size 300", 2.0, 99.5, 300),
    ("gpu fine-tune lite2", f"{LITE2} --test-image-size 324", 2.5, 99.5, 300),
    ("gpu fine-tune lite2 seed 1", f"{LITE2} --test-image-size 324 --seed 1", 2.5, 99.5, 300),  # its spread
    # Lite2 over 4.25 of the 5 minutes, against its overfitting (99.8 % training accuracy by epoch 13, the lowest
    # validation loss at epochs 3-7): stochastic depth, and a moving average of the weights validated and kept;
    # the second also with CutMix.
    ("gpu fine-tune lite2 ema", f"{LITE2} --test-image-size 324 --ema 0.999 --drop-path 0.2", 4.25, 99.5, 300),
    (
        "gpu fine-tune lite2 ema cutmix",
        f"{LITE2} --test-image-size 324 --ema 0.999 --drop-path 0.2 --cutmix 1.0",
        4.25,
        99.5,
        300,
    ),
    ("gpu smoke lite0", "--model tf_efficientnet_lite0 --batch-size 128", 0.4, None, None),
    ("gpu smoke catnet", "--model catnet --batch-size 256", 0.3, None, None),
]  # fmt: skip
# Runs of one recipe averaged by `catdog soup` (after training, on the machine that makes the figures):
# name -> the runs above it averages. Naming a soup trains its members.
SOUPS = {"gpu soup lite2": ("gpu fine-tune lite2", "gpu fine-tune lite2 seed 1")}
# The two recipes with floors (the docstring's), the fine-tune with two more seeds: its spread is part of the figure.
DEFAULT_RUNS = ("gpu fine-tune lite0", "gpu fine-tune lite0 seed 1", "gpu fine-tune lite0 seed 2", "gpu catnet 160px")


def run(quick: bool) -> list[Result]:
    import torch

    chosen = [n.strip() for n in os.environ.get("CATDOG_BENCH_GPU_RUNS", "").split(",") if n.strip()]
    chosen = chosen or list(DEFAULT_RUNS)
    soups = [name for name in chosen if name in SOUPS]
    chosen += [member for name in soups for member in SOUPS[name] if member not in chosen]
    kept = os.environ.get("CATDOG_BENCH_RUNS_DIR")
    train_only = os.environ.get("CATDOG_BENCH_GPU_TRAIN_ONLY") == "1"
    if not torch.cuda.is_available() and not train_only and not (kept and trained(Path(kept), chosen)):
        print("no CUDA GPU here: the GPU benchmark has nothing to measure (its rows in docs/benchmarks.md stay)")
        return []
    data = Path(os.environ.get("CATDOG_GPU_DATA") or need_dev_data())
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        root = Path(kept) if kept else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        runs = []
        for name, options, budget, floor, time_floor in RUNS:
            if name not in chosen:
                continue
            try:
                runs.append((train_recipe(name, options.split(), budget, data, root), floor, time_floor))
            except RuntimeError as err:  # one failed recipe must not cost the others' figures
                print(err)
        if train_only:  # the figures are made later from the kept runs, maybe on another machine
            return []
        for run_, floor, time_floor in runs:  # the GPU's time on training first, then the checks on CPU
            results += _results(run_, data, floor, time_floor)
        for name in soups:
            members = [r for r, _, _ in runs if r.name in SOUPS[name]]
            if len(members) == len(SOUPS[name]):
                results += _soup_results(name, members, data, root)
    return results


def _soup_results(name: str, members: list, data: Path, root: Path) -> list[Result]:
    """``catdog soup`` of kept runs: its validation and test accuracy, and the members' GPU time in all."""
    out = run_dir(root, name)
    command = f"catdog soup {' '.join(m.out.name for m in members)} --data DEV --out SOUP"
    args = ["soup", *(str(m.out) for m in members), "--data", str(data), "--out", str(out), "--overwrite", "--json"]
    done = subprocess.run(catdog_cmd(*args), capture_output=True, text=True)
    if done.returncode != 0:
        print(f"catdog {' '.join(args)} failed: {done.stderr[-2000:]}")
        return []
    soup = json.loads(done.stdout)
    run_ = Run(name, out, command, round(sum(m.wall_seconds for m in members), 1), 0.0, members[0].machine)
    test_acc, test_note = test_accuracy(run_, data)
    wall = " + ".join(f"{m.wall_seconds:.1f}" for m in members)
    members_val = ", ".join(f"{100 * a:.2f}" for a in soup["members_val_accuracy"])
    results = [
        Result("gpu", f"{name}: test accuracy", round(test_acc, 2), "%", command, ">= 99.5 %",
               passed=test_acc >= 99.5, notes=f"{test_note}; the members: {', '.join(m.name for m in members)}"),
        Result("gpu", f"{name}: val accuracy", round(100 * soup["val_accuracy"], 2), "%", command,
               notes=f"without the gate; the members {members_val} %, measured the same way"),
        Result("gpu", f"{name}: members' wall-clock", run_.wall_seconds, "s", command,
               notes=f"{wall} s: each member's process start to exit on the GPU"),
    ]  # fmt: skip
    for result in results:  # the members trained there; the soup and its figures are made here
        result.notes = f"{result.notes}; averaged and evaluated on {result.machine}"
        result.machine = run_.machine or result.machine
    return results


def trained(root: Path, names: list[str]) -> bool:
    """Whether every named run is kept in ``root``, trained by this code (on a GPU machine, say)."""
    return all(kept_record(run_dir(root, name)) for name in names if name not in SOUPS)


def _results(run_, data: Path, floor: float | None, time_floor: float | None) -> list[Result]:
    results = _figures(run_, data, floor, time_floor)
    for result in results:
        result.train_photos = run_.train_photos
        if run_.machine and run_.machine != result.machine:  # trained there, its model evaluated here
            result.notes = f"{result.notes}; evaluated on {result.machine}".lstrip("; ")
            result.machine = run_.machine
    return results


def _figures(run_, data: Path, floor: float | None, time_floor: float | None) -> list[Result]:
    metrics, config, command = run_.metrics, run_.config, run_.command
    acc = 100 * metrics["val_accuracy"]
    test_acc, test_note = test_accuracy(run_, data)
    split = config["data"]
    notes = f"{split['train_images']} training / {split['val_images']} validation photos; cold cache"
    startup = run_.wall_seconds - metrics["wall_seconds"]  # process start to the budget's clock, and the save
    results = [
        Result("gpu", f"{run_.name}: test accuracy", round(test_acc, 2), "%", command,
               f">= {floor} %" if floor else "", passed=(test_acc >= floor) if floor else None, notes=test_note),
        Result("gpu", f"{run_.name}: val accuracy", round(acc, 2), "%", command,
               notes=f"{notes}; the split that chose the recipe, the best epoch and the temperature"),
        # The run stops at its budget: its wall-clock is a figure; the floor is the time to the accuracy below.
        Result("gpu", f"{run_.name}: wall-clock", run_.wall_seconds, "s", command,
               notes="process start to exit: imports, decoding every JPEG, training, validation, saving; "
                     f"seconds on the budget's clock ({startup:.1f} s after process start): "
                     f"{metrics.get('timeline_seconds')}"),
        Result("gpu", f"{run_.name}: training images/s", metrics["train_images_per_s"], "images/s", command,
               notes=f"over the run's {metrics['epochs_run']} epochs"),
    ]  # fmt: skip
    if floor and time_floor:
        results.append(time_to_accuracy_result("gpu", run_, floor, time_floor, "s"))
    if config["gate"] and "smoke" not in run_.name:
        pictures = nonpet_pictures()
        try:
            neither = turned_away(run_.out, pictures)
        except Exception as err:  # noqa: BLE001 - a figure less, not the training figures lost
            print(f"non-pet check failed: {err}")
            return results
        results.append(
            Result("gpu", f"{run_.name}: non-pet pictures answered neither", len(neither), "pictures", command,
                   notes=f"of {len(pictures)}")
        )  # fmt: skip
    return results
