"""Where a from-scratch training step of ``catnet`` at 128x128 spends its time on this CPU.

Runs a few dozen training steps of the path ``catdog train`` takes on a CPU in one process under
``torch.profiler``, each phase labelled: decode (the JPEG path the pixel cache removes:
``catdog.preprocess.to_uint8`` for the batch's files, measured for comparison), cache read (the
batch gathered from the memory map, ``train.CachedBatches``), augment and to input
(``train.image_input``: crop, flip and rotation in one ``grid_sample``, then colour jitter,
normalisation and layout, compiled into one pass on a CPU), forward (in the precision ``--precision``
resolves to), backward, optimizer (fused AdamW). Prints ms per batch and the share of each phase,
then the top operators, and writes the same to ``benchmarks/profile_train.json``.

    python benchmarks/profile_train.py [--steps 24] [--threads N] [--precision auto|fp32|bf16] [--no-channels-last]

The decode phase is measured but its time is not in the "cached step" total: with the cache,
a training step does the cache read instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_speed import BATCH, IMAGE_SIZE  # noqa: E402
from benchmarks.common import machine, need_dev_data, subset  # noqa: E402
from catdog.augment import sample_seed  # noqa: E402
from catdog.data import CachedImages, prepare  # noqa: E402
from catdog.models import build_model  # noqa: E402
from catdog.preprocess import to_uint8  # noqa: E402
from catdog.train import (  # noqa: E402
    CachedBatches,
    ResumableSampler,
    TrainConfig,
    TrainImages,
    autocast,
    autocast_dtype,
    image_input,
    make_optimizer,
    preprocess_for,
    resolve_precision,
)

PHASES = ["decode", "cache read", "augment + to input", "forward", "backward", "optimizer"]
OUT = Path(__file__).with_name("profile_train.json")


def profile_steps(data_dir: Path, cache: Path, steps: int, warmup: int, channels_last: bool, precision: str):
    cfg = TrainConfig(
        data_dir=str(data_dir), out="-", model="catnet", image_size=IMAGE_SIZE, batch_size=BATCH, precision=precision
    ).resolved()
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model("catnet", 2)
    pre = preprocess_for(model, cfg)
    data = prepare(data_dir, pre, cache)
    images = CachedImages(data, list(range(len(data.paths))))
    sampler = ResumableSampler(TrainImages(images), 1, 0, cfg.seed)
    batches = iter(CachedBatches(images, cpu, BATCH, sampler))
    order = list(sampler)
    to_input = image_input(pre, cpu, channels_last, augment=True)
    dtype = autocast_dtype(cfg, cpu)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(cfg, model, fused=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def step(i: int) -> None:
        with record_function("decode"):
            [to_uint8(data.paths[j], pre) for j, _ in order[i * BATCH : (i + 1) * BATCH]]
        with record_function("cache read"):
            pixels, labels, seeds = next(batches)
        with record_function("augment + to input"):
            torch.manual_seed(sample_seed(cfg.seed, "step", 0, i, 0))
            x = to_input(pixels, seeds)
        with record_function("forward"), autocast(cpu, dtype):
            loss = criterion(model(x), labels)
        with record_function("backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("optimizer"):
            optimizer.step()

    for i in range(warmup):
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(warmup, warmup + steps):
            step(i)
    events = {e.key: e for e in prof.key_averages()}
    ms = {name: events[name].cpu_time_total / 1000 / steps for name in PHASES}
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return ms, top, resolve_precision(cfg, cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="profiled steps (after 3 warm-up steps)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--no-channels-last", action="store_true", help="contiguous NCHW instead of channels_last")
    parser.add_argument("--precision", default="auto", help="auto (what catdog train picks here), fp32 or bf16")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup = 3
    with tempfile.TemporaryDirectory(prefix="profile-train-") as tmp:
        per_class = (args.steps + warmup) * BATCH // 2 + 1
        data_dir = subset(need_dev_data(), Path(tmp) / "subset", per_class)
        start = time.perf_counter()
        ms, top, precision = profile_steps(
            data_dir, Path(tmp) / "cache", args.steps, warmup, not args.no_channels_last, args.precision
        )
        wall = time.perf_counter() - start
    step_ms = sum(v for k, v in ms.items() if k != "decode")
    uncached_ms = step_ms - ms["cache read"] + ms["decode"]
    print(f"catnet {IMAGE_SIZE}px, batch {BATCH}, {args.steps} steps, {torch.get_num_threads()} threads, "
          f"{'NCHW' if args.no_channels_last else 'channels_last'}, {precision}; {machine()}")  # fmt: skip
    print(f"{'phase':<18} {'ms/batch':>9} {'% cached':>9} {'% uncached':>11}")
    for name in PHASES:
        cached = "" if name == "decode" else f"{100 * ms[name] / step_ms:8.1f}%"
        uncached = "" if name == "cache read" else f"{100 * ms[name] / uncached_ms:10.1f}%"
        print(f"{name:<18} {ms[name]:9.1f} {cached:>9} {uncached:>11}")
    print(f"{'step':<18} {step_ms:9.1f} (cached: {BATCH * 1000 / step_ms:.1f} images/s; "
          f"decoding every JPEG: {uncached_ms:.1f} ms, {BATCH * 1000 / uncached_ms:.1f} images/s)")  # fmt: skip
    print(top)
    record = {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "channels_last": not args.no_channels_last,
        "precision": precision,
        "batch": BATCH,
        "image_size": IMAGE_SIZE,
        "steps": args.steps,
        "ms_per_batch": {k: round(v, 2) for k, v in ms.items()},
        "cached_step_ms": round(step_ms, 2),
        "uncached_step_ms": round(uncached_ms, 2),
        "wall_seconds": round(wall, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
