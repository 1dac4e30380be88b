"""From-scratch training speed of ``catnet`` at 128x128: the catdog CPU path vs the same net without it.

Issue 6's CPU floor: training images/s with the decoded-image cache, channels_last and the
best-measuring thread settings at least 3x those of the same net without them, side by side in
one run. Both sides run the same training step, built from train.py's own pieces (model,
optimizer, loss, augmentation, sampler, loader, input conversion), on the same images, with the
same batch size and number of steps; the first steps (worker start-up, oneDNN's first-call
set-up) are warm-up and not timed.

- **catdog**: uint8 squares read from the pixel cache (``catdog.data.prepare`` + ``CachedImages``
  memory map), channels_last model and input, and the split of the cores between intra-op threads
  and DataLoader workers that ``catdog train`` makes on a CPU (``catdog.train.split_cpu``).
  The notes add the catdog settings without the cache, and other splits (:data:`THREAD_SETTINGS`).
- **baseline**: a Dataset that decodes every JPEG each time it is drawn (``catdog.preprocess.to_uint8``,
  the one decode path), contiguous NCHW, torch's default threads and catdog's default loader
  (one worker per core, as without any tuning).

Every configuration runs in its own interpreter (thread pools cannot be reset inside one), one
after the other, the baseline first and again last, so a change of machine load shows up as a
difference between the two baseline runs (reported in the notes).

    python -m benchmarks speed [--quick]
    python -m benchmarks.bench_speed --one '{"source": "cache", ...}'   # one configuration, JSON out
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, Result, need_dev_data

IMAGE_SIZE = 128
BATCH = 64
# Other splits of the 2 cores, for the notes: (intra-op threads, DataLoader workers, environment).
# OMP_WAIT_POLICY=PASSIVE stops idle OpenMP threads spinning on a core a worker needs.
THREAD_SETTINGS = [(2, 1, None), (2, 1, {"OMP_WAIT_POLICY": "PASSIVE"}), (2, 2, None)]


def subset(dev: Path, out: Path, per_class: int) -> Path:
    """The first ``per_class`` cats and dogs, hard-linked (copied where links are impossible)."""
    out.mkdir(parents=True)
    for label in ("cat", "dog"):
        for path in sorted(dev.glob(f"{label}.*.jpg"))[:per_class]:
            try:
                os.link(path, out / path.name)
            except OSError:
                shutil.copyfile(path, out / path.name)
    return out


def measure(spec: dict) -> dict:
    """Train ``catnet`` for ``warmup + steps`` steps as ``spec`` says; images/s of the timed steps."""
    import torch
    from torch import nn

    from catdog.augment import sample_seed, train_transform
    from catdog.data import CachedImages, make_loader, prepare
    from catdog.models import build_model
    from catdog.train import (
        ResumableSampler,
        TrainConfig,
        TrainImages,
        image_input,
        make_optimizer,
        preprocess_for,
        split_cpu,
    )

    workers = spec["workers"]
    if spec["threads"] == "catdog":
        workers = split_cpu(workers)  # what `catdog train` does on a CPU
    elif spec["threads"]:
        torch.set_num_threads(spec["threads"])
    cfg = TrainConfig(data_dir=spec["data"], out="-", model="catnet", image_size=IMAGE_SIZE, batch_size=BATCH)
    cfg = cfg.resolved()
    torch.manual_seed(0)
    model = build_model("catnet", 2)
    pre = preprocess_for(model, cfg)
    data = prepare(spec["data"], pre, spec["cache"])  # built by run() beforehand: here only the index is read
    indices = list(range(len(data.paths)))
    if spec["source"] == "cache":
        images = CachedImages(data, indices)
    else:
        images = DecodeEveryTime([str(p) for p in data.paths], data.labels, pre)
    train_set = TrainImages(images, train_transform(pre))
    sampler = ResumableSampler(train_set, 1, 0, cfg.seed)
    loader = make_loader(train_set, BATCH, sampler=sampler, workers=workers)
    to_input = image_input(pre, torch.device("cpu"), spec["channels_last"])
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(cfg, model)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    warmup, steps = spec["warmup"], spec["steps"]
    batches = iter(loader)
    start, seen = 0.0, 0
    for step in range(warmup + steps):
        if step == warmup:
            start, seen = time.perf_counter(), 0
        images_u8, labels, seeds = next(batches)
        torch.manual_seed(sample_seed(cfg.seed, "step", 0, step, 0))
        x = to_input(images_u8, seeds)
        loss = criterion(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
    seconds = time.perf_counter() - start
    threads = torch.get_num_threads()
    return {
        **spec,
        "images_per_s": seen / seconds,
        "seconds": seconds,
        "torch_threads": threads,
        "loader_workers": workers,
    }


class DecodeEveryTime:
    """``(uint8 CHW, label)`` by decoding the JPEG on every access: the data path without a cache."""

    def __init__(self, paths: list[str], labels: list[int], pre) -> None:
        self.paths, self.labels, self.pre = paths, labels, pre

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch

        from catdog.preprocess import to_uint8

        pixels = to_uint8(self.paths[i], self.pre).copy()  # PIL arrays are read-only
        return torch.from_numpy(pixels).permute(2, 0, 1), self.labels[i]


def _setting(r: dict) -> str:
    env = " ".join(f"{k}={v}" for k, v in (r.get("env") or {}).items())
    workers = "one per core" if r["loader_workers"] is None else r["loader_workers"]
    return f"{r['torch_threads']} threads x {workers} workers{' ' + env if env else ''}"


def _run_one(spec: dict) -> dict:
    """``measure(spec)`` in a fresh interpreter (its own thread pools and DataLoader workers)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_speed", "--one", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(spec.get("env") or {})},
    )
    if done.returncode != 0:
        raise RuntimeError(f"speed measurement {spec} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool) -> list[Result]:
    from catdog.data import prepare
    from catdog.preprocess import Preprocess

    dev = need_dev_data()
    per_class, warmup, steps = (500, 2, 8) if quick else (1000, 3, 30)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        data = subset(dev, Path(tmp) / "subset", per_class)
        cache = Path(tmp) / "cache"
        tick = time.perf_counter()
        prepare(data, Preprocess(image_size=IMAGE_SIZE, crop_pct=0.875, interpolation="bilinear"), cache)
        cache_seconds = time.perf_counter() - tick
        common = {"data": str(data), "cache": str(cache), "warmup": warmup, "steps": steps}
        baseline_spec = {**common, "source": "decode", "channels_last": False, "threads": None, "workers": None}
        catdog_spec = {**common, "source": "cache", "channels_last": True, "threads": "catdog", "workers": None}
        baseline = [_run_one(baseline_spec)]
        catdog = _run_one(catdog_spec)
        # What each part buys: the catdog settings without the cache; other thread splits.
        no_cache = _run_one({**catdog_spec, "source": "decode"})
        # Quick mode (the whole suite in under 10 minutes) leaves out the other thread splits.
        settings = [] if quick else THREAD_SETTINGS
        others = [_run_one({**catdog_spec, "threads": t, "workers": w, "env": env}) for t, w, env in settings]
        baseline.append(_run_one(baseline_spec))

    base_ips = max(r["images_per_s"] for r in baseline)  # the kinder of the two baseline runs
    ratio = catdog["images_per_s"] / base_ips
    command = "python -m benchmarks speed" + (" --quick" if quick else "")
    setup = f"catnet {IMAGE_SIZE}px, batch {BATCH}, {steps} timed steps after {warmup} warm-up, {2 * per_class} images"
    before_after = ", ".join(f"{r['images_per_s']:.1f}" for r in baseline)
    tried = ", ".join(f"{_setting(r)} {r['images_per_s']:.1f}" for r in others) or "not run in quick mode"
    return [
        Result("speed", "catnet training, catdog path (cache, channels_last, threads)",
               round(catdog["images_per_s"], 1), "images/s", command,
               notes=f"{setup}; {_setting(catdog)}; other splits: {tried}"),
        Result("speed", "catnet training, catdog path without the cache (decode every JPEG)",
               round(no_cache["images_per_s"], 1), "images/s", command, notes=f"{setup}; {_setting(no_cache)}"),
        Result("speed", "catnet training, baseline (decode every JPEG, NCHW, default threads)",
               round(base_ips, 1), "images/s", command,
               notes=f"{setup}; {_setting(baseline[0])}; runs before/after the others: {before_after}"),
        Result("speed", "catnet training speed-up, catdog path / baseline", round(ratio, 2), "x", command,
               ">= 3x", passed=ratio >= 3.0),
        Result("speed", f"pixel cache build, {2 * per_class} images", round(cache_seconds, 1), "s", command,
               notes="decode + resize once; every later run reads the memory map"),
    ]  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help="measure one configuration (JSON) and print the result as JSON")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
    else:
        for result in run(quick=True):
            print(result)
