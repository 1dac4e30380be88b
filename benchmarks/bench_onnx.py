"""ONNX Runtime vs the best PyTorch eager setup, EfficientNet-Lite0 at 224x224 on this CPU.

Figures: ONNX fp32 batch-1 median latency (floor <= 10 ms; the median of the least disturbed of five
rounds, see ``benchmarks.common.interleaved_ms``), its speed-up over the best PyTorch
eager setup (BN folded into convolutions, channels_last, all cores, inference mode; floor >= 2x),
int8 (static, calibrated on dev photos) speed-up over fp32 ONNX (floor >= 1.3x), and batch-32 throughput.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import Result, interleaved_ms, need_dev_data

COMMAND = "python -m benchmarks onnx"


def _median_ms(fn, batch, repeats: int) -> float:
    return interleaved_ms({"one": fn}, batch, repeats)["one"]


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a Conv2d (same parent, next child) into the conv."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    for parent in module.modules():
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                conv.weight, conv.bias = fuse_conv_bn_weights(
                    conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
                )
                # timm's BatchNormAct2d carries the activation: keep it, drop the normalisation.
                tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
                parent._modules[second] = nn.Sequential(*tail) if tail else nn.Identity()
    return module


def _torch_fn(module: nn.Module, channels_last: bool):
    module = module.eval()
    if channels_last:
        module = module.to(memory_format=torch.channels_last)

    def run(batch: np.ndarray):
        x = torch.from_numpy(batch)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return module(x)

    return run


def run(quick: bool) -> list[Result]:
    from catdog.export import _quantize, check_images
    from catdog.inference.onnx_export import export_onnx
    from catdog.models import build_model
    from catdog.onnx_backend import _cores, session
    from catdog.preprocess import Preprocess

    dev = need_dev_data()
    torch.set_num_threads(_cores())
    model = build_model("tf_efficientnet_lite0", 2, gate=True).eval()
    pre = Preprocess(224, 0.875, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    config = {"architecture": "tf_efficientnet_lite0", "classes": ["cat", "dog"], "preprocess": pre.to_dict()}
    photos, _ = check_images(dev, pre, ["cat", "dog"], 64)
    one, thirty_two = photos[:1], photos[:32]
    repeats = 20 if quick else 100

    import copy

    eager_fns = {
        "eager": _torch_fn(copy.deepcopy(model), False),
        "eager+channels_last": _torch_fn(copy.deepcopy(model), True),
        "bn-folded+channels_last": _torch_fn(fold_batchnorm(copy.deepcopy(model)), True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model, config, fp32_path)
        _quantize(fp32_path, int8_path, photos, Path(tmp), config)
        fp32, int8 = session(fp32_path), session(int8_path)

        def ort_fn(sess):
            return lambda batch: sess.run(["logits", "pet_score"], {"input": batch})

        batch_one = interleaved_ms({**eager_fns, "fp32": ort_fn(fp32), "int8": ort_fn(int8)}, one, repeats)
        fp32_ms, int8_ms = batch_one.pop("fp32"), batch_one.pop("int8")
        eager = batch_one
        best_name = min(eager, key=eager.get)
        fp32_b32 = _median_ms(ort_fn(fp32), thirty_two, 3 if quick else 10)
        int8_b32 = _median_ms(ort_fn(int8), thirty_two, 3 if quick else 10)
    torch_b32 = _median_ms(_torch_fn(fold_batchnorm(copy.deepcopy(model)), True), thirty_two, 2 if quick else 5)
    notes = f"{_cores()} threads; PyTorch eager batch-1 ms: " + ", ".join(f"{k} {v:.1f}" for k, v in eager.items())
    speedup = eager[best_name] / fp32_ms
    return [
        Result(
            "onnx", "ONNX fp32 batch-1 median latency", fp32_ms, "ms", COMMAND, "<= 10 ms", fp32_ms <= 10, notes=notes
        ),
        Result(
            "onnx",
            f"ONNX fp32 speed-up over best PyTorch eager ({best_name}), batch 1",
            speedup,
            "x",
            COMMAND,
            ">= 2x",
            speedup >= 2,
            notes=notes,
        ),
        Result("onnx", "ONNX int8 batch-1 median latency", int8_ms, "ms", COMMAND),
        Result(
            "onnx",
            "ONNX int8 speed-up over fp32, batch 1",
            fp32_ms / int8_ms,
            "x",
            COMMAND,
            ">= 1.3x",
            fp32_ms / int8_ms >= 1.3,
        ),  # fmt: skip
        Result("onnx", "ONNX fp32 throughput, batch 32", 32000 / fp32_b32, "images/s", COMMAND),
        Result("onnx", "ONNX int8 throughput, batch 32", 32000 / int8_b32, "images/s", COMMAND),
        Result(
            "onnx",
            "PyTorch eager (BN folded, channels_last) throughput, batch 32",
            32000 / torch_b32,
            "images/s",
            COMMAND,
        ),  # fmt: skip
    ]
