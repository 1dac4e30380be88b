"""Frozen-backbone features, computed once per image (and view) and cached on disk.

The fast CPU path of ``catdog train --freeze backbone``: the pooled features of the
pretrained backbone never change, so each image goes through the backbone once, ever; the
new head then trains on the cached vectors in seconds. On CPU the backbone runs in ONNX
Runtime (several times faster than PyTorch eager here), on a GPU in PyTorch.

Layout under ``<cache_dir>/features/<key>/``: ``features.f32`` (rows of ``dim`` float32)
and ``index.json`` (``{"dim": D, "rows": {"<content hash>:<view>": row}}``). ``key`` names
the backbone, its weights and the preprocessing, so any change is a different cache. As in
the pixel cache, the index is rewritten atomically after each chunk: a killed extraction
resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from catdog.augment import sample_seed, view_transform
from catdog.data import PreparedData
from catdog.fsutil import atomic_write, atomic_write_text, file_lock
from catdog.preprocess import Preprocess, normalize

FeatureFn = Callable[[torch.Tensor], np.ndarray]  # normalised float32 NCHW batch -> (N, dim) features


class PooledFeatures(nn.Module):
    """A timm model up to its pooled, pre-logits features (what a new head sees)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)


def cache_key(architecture: str, pre: Preprocess) -> str:
    """Backbone, weights version and every preprocessing setting the features depend on."""
    import timm

    from catdog.data.hashing import content_hash

    settings = json.dumps([architecture, timm.__version__, pre.to_dict()], sort_keys=True)
    return f"{architecture}-{pre.image_size}px-{content_hash(settings.encode())[:12]}"


def onnx_feature_fn(backbone: nn.Module, onnx_file: Path, image_size: int, threads: int | None = None) -> FeatureFn:
    """Export the eval-mode feature extractor once (cached), then run it in ONNX Runtime."""
    import onnxruntime as ort

    if not onnx_file.exists():
        # .eval() on the very module exported: a wrapper left in train mode would export
        # batch-statistics BatchNorm, silently giving different features.
        module = PooledFeatures(backbone).eval()
        example = torch.zeros(2, 3, image_size, image_size)
        program = torch.onnx.export(
            module, (example,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False
        )
        atomic_write(onnx_file, lambda tmp: program.save(str(tmp)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: torch.Tensor) -> np.ndarray:
        return session.run(None, {input_name: batch.numpy()})[0]

    return run


def torch_feature_fn(backbone: nn.Module, device: torch.device) -> FeatureFn:
    """The feature extractor in PyTorch on ``device`` (bf16 autocast on a GPU)."""
    module = PooledFeatures(backbone).eval().to(device, memory_format=torch.channels_last)

    def run(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            out = module(batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last))
        return out.float().cpu().numpy()

    return run


class FeatureStore:
    """Cached feature vectors keyed by ``"<content hash>:<view>"``."""

    def __init__(self, cache_dir: str | os.PathLike, key: str) -> None:
        self.dir = Path(cache_dir) / "features" / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file = self.dir / "features.f32"
        self.index_file = self.dir / "index.json"
        self.dim = 0
        self.rows: dict[str, int] = {}
        self.reload()

    def reload(self) -> None:
        try:
            data = json.loads(self.index_file.read_text())
            self.dim, self.rows = int(data["dim"]), dict(data["rows"])
        except (OSError, ValueError, KeyError):
            self.dim, self.rows = 0, {}
        if self.rows and (not self.file.exists() or self.file.stat().st_size < len(self.rows) * self.dim * 4):
            self.dim, self.rows = 0, {}  # the vectors were lost behind the index's back

    def add(self, keys: list[str], vectors: np.ndarray) -> None:
        """Append vectors and commit the index (under the lock; other processes may be adding too)."""
        with file_lock(self.dir / ".lock"):
            self.reload()
            fresh = [(k, v) for k, v in zip(keys, vectors) if k not in self.rows]
            if not fresh:
                return
            self.dim = vectors.shape[1]
            n_rows = len(self.rows)
            self.file.touch()
            with open(self.file, "r+b") as out:
                out.truncate(n_rows * self.dim * 4)  # drop vectors a killed run wrote but never indexed
                out.seek(n_rows * self.dim * 4)
                out.write(np.stack([v for _, v in fresh]).astype(np.float32).tobytes())
                out.flush()
                os.fsync(out.fileno())
            for i, (key, _) in enumerate(fresh):
                self.rows[key] = n_rows + i
            atomic_write_text(self.index_file, json.dumps({"dim": self.dim, "rows": self.rows}))

    def read(self, keys: list[str]) -> np.ndarray:
        matrix = np.memmap(self.file, dtype=np.float32, mode="r", shape=(len(self.rows), self.dim))
        return np.array(matrix[[self.rows[k] for k in keys]])


def extract(
    data: PreparedData,
    jobs: list[tuple[int, int]],
    pre: Preprocess,
    store: FeatureStore,
    feature_fn: FeatureFn,
    *,
    batch_size: int = 64,
    deadline: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[int, int]]:
    """Compute the missing features of ``(image index, view)`` jobs; returns the jobs that are cached.

    Stops early (cleanly, between batches) when ``time.monotonic()`` passes ``deadline``.
    """
    pixels = data.cache.array()
    transforms: dict[int, Callable] = {}
    todo = [(i, v) for i, v in jobs if f"{data.hashes[i]}:{v}" not in store.rows]
    if progress and len(jobs) > len(todo):
        progress(len(jobs) - len(todo))
    for start in range(0, len(todo), batch_size):
        if deadline is not None and time.monotonic() > deadline:
            break
        chunk = todo[start : start + batch_size]
        crops = []
        for i, view in chunk:
            transform = transforms.setdefault(view, view_transform(pre, view))
            square = torch.from_numpy(np.array(pixels[data.rows[i]])).permute(2, 0, 1)
            crops.append(transform(square, sample_seed(data.hashes[i], view)))
        batch = normalize(torch.stack(crops), pre, crop=False)
        store.add([f"{data.hashes[i]}:{v}" for i, v in chunk], feature_fn(batch))
        if progress:
            progress(len(chunk))
    return [(i, v) for i, v in jobs if f"{data.hashes[i]}:{v}" in store.rows]
