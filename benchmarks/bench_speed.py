"""From-scratch training speed of ``catnet`` at 128x128: the catdog CPU path vs the same net without it.

The CPU floor: training images/s with the decoded-image cache and the layout, precision
and thread work at least 3x those of the same net without them, side by side in one run. Both
sides run the same net, loss, optimizer family, sampler, batch size and number of steps on the
same images; the first steps (oneDNN's first-call set-up, worker start-up) are warm-up and not
timed.

- **catdog**: what ``catdog train`` does on a CPU: batches gathered from the memory-mapped pixel
  cache in the training process (``train.CachedBatches``), augmented a batch at a time
  (``augment.augment_batch``: crop, flip and rotation in one ``grid_sample``), channels_last model
  and input, the precision ``--precision auto`` resolves to (``train.resolve_precision``: bf16
  autocast on a CPU with AMX, else fp32), fused AdamW, and every core to the step
  (``train.use_cores``).
- **baseline**: the textbook PyTorch loop: a Dataset that decodes every JPEG each time it is drawn
  (``catdog.preprocess.to_uint8``, the one decode path) and augments it with torchvision's
  transforms (``augment.train_transform``, the same augmentations) in DataLoader workers (one per
  core), contiguous NCHW, fp32, torch's default threads, the for-each AdamW.

The notes add what each part buys: the catdog path in fp32, and the baseline reading the cache;
and the ceiling: the catdog step alone, fed one batch already in memory (no data path at all).
One kernel is timed on its own: training-mode batch norm of a channels-last bf16 batch with 24
channels against 32, the reason catnet's stem is 32 wide (PyTorch's CPU kernel handles 16 channels at
a time; at 24 it was the costliest layer of the step).

Every configuration runs in its own interpreter (thread pools cannot be reset inside one), one
after the other: the baseline first and again last, the catdog path second and again second to
last. Each side counts its better run, and both runs are in the notes, so a change of machine load
shows up as a difference between them.

    python -m benchmarks speed [--quick]
    python -m benchmarks.bench_speed --one '{"path": "catdog", ...}'   # one configuration, JSON out
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, Result, need_dev_data, subset

IMAGE_SIZE = 128
BATCH = 64


def measure(spec: dict) -> dict:
    """Train ``catnet`` for ``warmup + steps`` steps as ``spec`` says; images/s of the timed steps."""
    import torch
    from torch import nn

    from catdog.augment import sample_seed, train_transform
    from catdog.data import CachedImages, make_loader, prepare
    from catdog.models import build_model
    from catdog.train import (
        CachedBatches,
        ResumableSampler,
        TrainConfig,
        TrainImages,
        autocast,
        autocast_dtype,
        image_input,
        make_optimizer,
        preprocess_for,
        use_cores,
    )

    catdog = spec["path"] == "catdog"
    cfg = TrainConfig(data_dir=spec["data"], out="-", model="catnet", image_size=IMAGE_SIZE, batch_size=BATCH)
    cfg = cfg.resolved()
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model("catnet", 2)
    pre = preprocess_for(model, cfg)
    data = prepare(spec["data"], pre, spec["cache"])  # built by run() beforehand: here only the index is read
    indices = list(range(len(data.paths)))
    images = CachedImages(data, indices)
    sampler = ResumableSampler(TrainImages(images), 1, 0, cfg.seed)
    if catdog:
        use_cores()
        loader = CachedBatches(images, cpu, BATCH, sampler)
        to_input = image_input(pre, cpu, channels_last=True, augment=True)
        model = model.to(memory_format=torch.channels_last)
        dtype = autocast_dtype(TrainConfig(**{**cfg.to_dict(), "precision": spec["precision"]}), cpu)
    else:
        source = images if spec.get("source") == "cache" else DecodeEveryTime(data, indices, pre)
        loader = make_loader(Augmented(source, train_transform(pre)), BATCH, sampler=sampler)  # a worker per core
        to_input = image_input(pre, cpu, channels_last=False)
        dtype = None
    model.train()
    optimizer = make_optimizer(cfg, model, fused=catdog)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    warmup, steps = spec["warmup"], spec["steps"]
    bare = spec.get("bare", False)  # the step alone: the first batch, prepared once, fed to every step
    batches = iter(loader)
    start, seen = 0.0, 0
    for step in range(warmup + steps):
        if step == warmup:
            start, seen = time.perf_counter(), 0
        if step == 0 or not bare:
            images_u8, labels, seeds = next(batches)
            torch.manual_seed(sample_seed(cfg.seed, "step", 0, step, 0))
            x = to_input(images_u8, seeds)
        with autocast(cpu, dtype):
            loss = criterion(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
    seconds = time.perf_counter() - start
    return {
        **spec,
        "images_per_s": seen / seconds,
        "seconds": seconds,
        "torch_threads": torch.get_num_threads(),
        "loader_workers": 0 if catdog else loader.num_workers,
        "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
    }


class DecodeEveryTime:
    """``(uint8 CHW, label)`` by decoding the JPEG on every access: the data path without a cache."""

    def __init__(self, data, indices: list[int], pre) -> None:
        self.paths = [str(data.paths[i]) for i in indices]
        self.labels = [data.labels[i] for i in indices]
        self.pre = pre

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch

        from catdog.preprocess import to_uint8

        pixels = to_uint8(self.paths[i], self.pre).copy()  # PIL arrays are read-only
        return torch.from_numpy(pixels).permute(2, 0, 1), self.labels[i]


class Augmented:
    """``(augmented uint8 CHW, label, seed)`` for each ``(index, seed)`` of the sampler: per image, in a worker."""

    def __init__(self, images, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        from catdog.augment import seeded

        index, seed = key
        image, label = self.images[index]
        return seeded(self.transform, image, seed), label, seed


def batch_norm_ms(channels: int, side: int = 64, repeats: int = 20) -> float:
    """ms for one training-mode batch norm, forward and backward, of a ``(64, channels, side, side)`` bf16
    channels-last batch (catnet's first stem layer at 128 px): why catnet's widths are multiples of 16."""
    import torch
    from torch import nn

    from catdog.train import use_cores

    use_cores()
    norm = nn.BatchNorm2d(channels)
    x = torch.randn(BATCH, channels, side, side, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad = torch.randn_like(x)
    for _ in range(3):
        norm(x).backward(grad)
    start = time.perf_counter()
    for _ in range(repeats):
        norm(x).backward(grad)
    return (time.perf_counter() - start) / repeats * 1e3


def _runs(side: list[dict]) -> str:
    return ", ".join(f"{r['images_per_s']:.1f}" for r in side)


def _setting(r: dict) -> str:
    return f"{r['torch_threads']} threads, {r['loader_workers']} workers, {r['precision']}"


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
    warmup, steps = (3, 10) if quick else (3, 30)
    per_class = (warmup + steps + 1) * BATCH // 2  # one epoch holds every step: no second pass over the files
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        data = subset(dev, Path(tmp) / "subset", per_class)
        cache = Path(tmp) / "cache"
        tick = time.perf_counter()
        prepare(data, Preprocess(image_size=IMAGE_SIZE, crop_pct=0.875, interpolation="bilinear"), cache)
        cache_seconds = time.perf_counter() - tick
        common = {"data": str(data), "cache": str(cache), "warmup": warmup, "steps": steps}
        baseline_spec = {**common, "path": "baseline", "source": "decode"}
        catdog_spec = {**common, "path": "catdog", "precision": "auto"}
        baseline = [_run_one(baseline_spec)]
        catdog = [_run_one(catdog_spec)]
        # What each part buys: the catdog path in fp32 (without bf16), the baseline reading the cache.
        catdog_fp32 = _run_one({**catdog_spec, "precision": "fp32"})
        # The ceiling of any data path: the same step fed one batch already in memory.
        step_alone = _run_one({**catdog_spec, "bare": True})
        cached_baseline = _run_one({**baseline_spec, "source": "cache"})
        catdog.append(_run_one(catdog_spec))
        baseline.append(_run_one(baseline_spec))
    norm_ms = {channels: batch_norm_ms(channels) for channels in (24, 32)}

    # Each side: the better of its two runs (runs of one configuration differ by up to ~5 % on this machine).
    base_ips = max(r["images_per_s"] for r in baseline)
    catdog_ips = max(r["images_per_s"] for r in catdog)
    ratio = catdog_ips / base_ips
    command = "python -m benchmarks speed" + (" --quick" if quick else "")
    setup = f"catnet {IMAGE_SIZE}px, batch {BATCH}, {steps} timed steps after {warmup} warm-up, {2 * per_class} images"
    return [
        Result("speed", "catnet training, catdog path (cache, batched augmentation, channels_last, precision auto)",
               round(catdog_ips, 1), "images/s", command,
               notes=f"{setup}; {_setting(catdog[0])}; the better of two runs: {_runs(catdog)}"),
        Result("speed", "catnet training, catdog path in fp32", round(catdog_fp32["images_per_s"], 1), "images/s",
               command, notes=f"{setup}; {_setting(catdog_fp32)}"),
        Result("speed", "catnet training, baseline reading the pixel cache", round(cached_baseline["images_per_s"], 1),
               "images/s", command, notes=f"{setup}; {_setting(cached_baseline)}"),
        Result("speed", "catnet training, baseline (decode every JPEG, per-image transforms, NCHW, fp32)",
               round(base_ips, 1), "images/s", command,
               notes=f"{setup}; {_setting(baseline[0])}; the better of two runs, first and last: {_runs(baseline)}"),
        Result("speed", "catnet training speed-up, catdog path / baseline", round(ratio, 2), "x", command,
               ">= 3x", passed=ratio >= 3.0),
        Result("speed", "catnet training step alone (one batch in memory, catdog settings)",
               round(step_alone["images_per_s"], 1), "images/s", command,
               notes=f"{setup}; {_setting(step_alone)}; {step_alone['images_per_s'] / base_ips:.2f}x the baseline: "
                     "the most any data path could give"),
        Result("speed", "batch norm forward + backward, 64x24x64x64 bf16 channels_last", round(norm_ms[24], 2), "ms",
               command, notes=f"{norm_ms[24] / 24 / (norm_ms[32] / 32):.1f}x the time per element of 32 channels "
                              f"({norm_ms[32]:.2f} ms): why catnet's stem is 32 wide, not 24"),
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
