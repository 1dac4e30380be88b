"""Numeric precision: bf16 on CPUs with AMX and on GPUs, fp16 with a scaler, fp32 otherwise."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from catdog.training.config import TrainConfig


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    """``--precision auto``: bf16 autocast where it measured faster than fp32, else fp32.

    On GPUs, bf16. On a CPU with AMX (Intel Xeon since Sapphire Rapids), oneDNN runs bf16
    convolutions on its matrix unit, and training from scratch took half the time on 2 cores
    (catnet at 128 px: 338 against 167 images/s; seed-cnn 292 against 153), while fine-tuning
    EfficientNet-Lite0, whose depthwise convolutions and norms are bound by memory, gained nothing
    (19.3 against 19.8). On CPUs without it (AVX2 AMD EPYC), bf16 was about 10x slower than fp32.
    """
    if cfg.precision != "auto":
        return cfg.precision
    if device.type == "cuda":
        return "bf16"
    return "bf16" if cfg.family() == "scratch" and cpu_has_amx() else "fp32"


def precision_words(precision: str) -> str:
    """What the log says a resolved ``--precision`` computes in: the docs' bf16 on an AMX CPU went unsaid."""
    return "fp32" if precision == "fp32" else f"{precision} (autocast; weights kept in fp32)"


def cpu_has_amx() -> bool:
    """Whether this CPU has Intel's AMX tile unit (torch asks cpuinfo; the function is private, hence the guard)."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The low-precision dtype of autocast, or None for plain fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision(cfg, device))


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision when a low-precision dtype is chosen, plain fp32 otherwise."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def logits_of(output) -> torch.Tensor:
    """A GatedClassifier returns (logits, pet_score); training needs the logits."""
    return output[0] if isinstance(output, tuple) else output
