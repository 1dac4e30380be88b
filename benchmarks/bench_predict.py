"""`catdog predict` end to end (process start, decode, preprocess, model, JSON) over photos of about 500x400 px.

The photos are dev photos resized to 500x400 and re-encoded as JPEG in a temporary folder.
The model is the built-in one when its weights are installed, else a gated EfficientNet-Lite0
exported to ONNX (same network, same cost). Floor: >= 80 images/s over 2,000 photos.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from PIL import Image

from benchmarks.common import Result, catdog_cmd, need_dev_data

SIZE = (500, 400)


def make_photos(dev: Path, out: Path, n: int) -> list[Path]:
    sources = sorted(dev.glob("*.jpg"))[: n // 2] + sorted(dev.glob("*.jpg"))[-(n - n // 2) :]
    paths = []
    for i, source in enumerate(sources):
        path = out / f"{i:05d}-{source.name}"
        Image.open(source).convert("RGB").resize(SIZE, Image.Resampling.BICUBIC).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def _model_args(tmp: Path) -> tuple[list[str], str]:
    try:
        from catdog.models.files import builtin_config

        builtin_config()
        return [], "built-in model"
    except (OSError, ValueError):
        from catdog.inference.onnx_export import export_onnx
        from catdog.models import build_model
        from catdog.models.pretrained import pretrained_preprocess

        model = build_model("tf_efficientnet_lite0", 2, gate=True).eval()
        config = {
            "architecture": "tf_efficientnet_lite0",
            "classes": ["cat", "dog"],
            "preprocess": pretrained_preprocess(model.backbone).to_dict(),
            "gate": {"threshold": 0.1},
        }
        path = tmp / "lite0.onnx"
        export_onnx(model, config, path)
        return ["--model", str(path)], "gated EfficientNet-Lite0 ONNX file (built-in weights not installed)"


def run(quick: bool) -> list[Result]:
    dev = need_dev_data()
    n = 300 if quick else 2000
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        photos = tmp / "photos"
        photos.mkdir()
        make_photos(dev, photos, n)
        model_args, model_name = _model_args(tmp)
        env = {**os.environ, "CATDOG_CACHE_DIR": str(tmp / "cache")}
        # Warm-up: the built-in model's one-time ONNX export is not part of the measurement.
        first = next(photos.iterdir())
        subprocess.run(catdog_cmd("predict", *model_args, str(first)), env=env, capture_output=True, check=True)
        command = catdog_cmd("predict", *model_args, "--json", str(photos))
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        results = json.loads(done.stdout)
        ok = sum("label" in r for r in results)
    if ok != n:
        raise RuntimeError(f"only {ok} of {n} photos were predicted: {done.stderr[-500:]}")
    rate = n / seconds
    return [
        Result(
            "predict",
            f"catdog predict, {n} photos of {SIZE[0]}x{SIZE[1]} px, end to end",
            rate,
            "images/s",
            "python -m benchmarks predict",
            ">= 80 images/s",
            rate >= 80,
            notes=f"{model_name}; {seconds:.1f} s wall including process start",
        )
    ]
