"""Time the first and later training steps on a GPU, cuDNN autotuning off then on: ``python -m benchmarks.gpu_probe``.

Random weights and pixels, one process (so the second setting finds the first one's kernels loaded).
On an H200 (2026-11-26): Lite0 at batch 128, 224 px: 30 / 32 ms per step; catnet at batch 256,
160 px: 11 / 11 ms; augment_batch: 3.5 ms for 256 images at 224 px.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from catdog.augment import augment_batch
from catdog.models import build_model


def steps(model, batch: int, size: int, count: int, augment: bool) -> list[float]:
    device = torch.device("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    pixels = torch.randint(0, 256, (batch, 3, size + 32, size + 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    times = []
    for i in range(count):
        torch.cuda.synchronize()
        tick = time.perf_counter()
        if augment:
            x = augment_batch(pixels, np.arange(batch, dtype=np.uint64) + i, size)
        else:
            x = pixels[..., :size, :size].float()
        x = ((x - 127.5) / 127.5).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - tick)
    return times


def main() -> None:
    for name, batch, size in (("tf_efficientnet_lite0", 128, 224), ("catnet", 256, 160)):
        for bench in (False, True):
            torch.backends.cudnn.benchmark = bench
            model = build_model(name, 2, pretrained=False).cuda().to(memory_format=torch.channels_last).train()
            tick = time.perf_counter()
            t = steps(model, batch, size, 25, augment=True)
            print(
                f"{name} bs{batch} {size}px cudnn.benchmark={bench}: first {t[0]:.2f} s, 2-5 {sum(t[1:5]):.2f} s, "
                f"later {1000 * np.median(t[5:]):.1f} ms/step = {batch / np.median(t[5:]):.0f} img/s "
                f"(total {time.perf_counter() - tick:.1f} s)",
                flush=True,
            )
    x = torch.randint(0, 256, (256, 3, 256, 256), dtype=torch.uint8, device="cuda")
    for _ in range(3):
        torch.cuda.synchronize()
        tick = time.perf_counter()
        augment_batch(x, np.arange(256, dtype=np.uint64), 224)
        torch.cuda.synchronize()
    print(f"augment_batch 256 x 256->224: {1000 * (time.perf_counter() - tick):.1f} ms", flush=True)


if __name__ == "__main__":
    sys.exit(main())
