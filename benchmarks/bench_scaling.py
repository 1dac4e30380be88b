"""Data-parallel scaling of `catdog train` on this machine: one process against `torchrun --nproc_per_node 2`.

It measures the torchrun path's scaling on the hardware at hand. Here that is a 2-core CPU, so
both runs use the same two cores, shared as `catdog train` shares them (``train.use_cores``): one
process with two compute threads, against two gloo processes with one thread each. The figure is what
the data-parallel machinery costs or gains (gradient all-reduce, rank 0's budget questions), not what
more hardware would add. Same photos (an evenly spread subset of the dev data, from the pixel cache the
first run fills), catnet at 64 px, the same global batch (`--batch-size` is global: 32 per process with
two), the same epochs, the same precision (``--precision auto``); images/s is training throughput (all
processes together) of the last epoch, validation not included.

    python -m benchmarks scaling [--quick]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Result, catdog_cmd, history, need_dev_data, subset

COMMAND = "python -m benchmarks scaling"
OPTIONS = ["--model", "catnet", "--image-size", "64", "--batch-size", "64", "--patience", "1000"]


def _train(launcher: list[str], data: Path, out: Path, cache: Path, epochs: int) -> dict:
    args = ["train", str(data), "--out", str(out), "--cache-dir", str(cache), "--epochs", str(epochs), *OPTIONS]
    done = subprocess.run([*launcher, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(launcher)} train failed:\n{done.stderr[-2000:]}")
    last = history(out)[-1]
    return {"images_per_s": last["images_per_s"], "val_accuracy": last["val_accuracy"]}


def run(quick: bool) -> list[Result]:
    dev = need_dev_data()
    per_class, epochs = (100, 1) if quick else (1000, 3)
    one_process = catdog_cmd()
    two_processes = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "catdog"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, cache = subset(dev, root / "data", per_class), root / "cache"
        # The first run decodes into the cache before it trains; images/s counts training steps only.
        single = _train(one_process, data, root / "one", cache, epochs)
        double = _train(two_processes, data, root / "two", cache, epochs)
    ratio = double["images_per_s"] / single["images_per_s"]
    notes = (
        f"{2 * per_class} photos, catnet 64 px, global batch 64, {epochs} epochs, last epoch's training images/s; "
        f"val accuracy one {single['val_accuracy']:.3f}, two {double['val_accuracy']:.3f}"
    )
    return [
        Result("scaling", "catdog train, 1 process: training images/s", single["images_per_s"],
               "images/s", COMMAND, notes=notes),
        Result("scaling", "torchrun, 2 processes (gloo): training images/s", double["images_per_s"],
               "images/s", COMMAND, notes=notes),
        Result("scaling", "2 processes over 1, same 2 cores", round(ratio, 2), "x", COMMAND, notes=notes),
    ]  # fmt: skip
