"""ONNX: export a catdog model to a self-contained file, and run one through ONNX Runtime.

The file carries everything :class:`catdog.predict.Predictor` needs in its ``metadata_props``
(classes, preprocessing, temperature, gate threshold, architecture, catdog version), so
``catdog predict --model file.onnx`` works with the file alone. Its outputs, by name:

- ``logits`` — ``(N, classes)``;
- ``pet_score`` — ``(N,)``, only for gated models: ``P(cat or dog)`` from the open-set gate;
- ``looks_like`` — ``(N,)`` int64, only for gated models: the ImageNet class the pretrained backbone sees;
- ``features`` — ``(N, F)`` penultimate features, for timm backbones (used by ``data audit``).

ONNX Runtime computes only the outputs asked for, so prediction pays nothing for ``features``.

This module runs ONNX files without importing torch or timm (a prediction starts in about a
second); making an export needs PyTorch and lives in :mod:`catdog.export`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import catdog
from catdog.errors import CatdogError, ModelError

if TYPE_CHECKING:
    from torch import nn

    from catdog.predict import Outputs

INPUT = "input"
EXPORT_FORMAT = 2  # bump when the graph layout or metadata change, so cached exports are rebuilt

# metadata_props key → config key; values are JSON.
_META_KEYS = {
    "classes": "classes",
    "preprocess": "preprocess",
    "temperature": "temperature",
    "gate": "gate",
    "architecture": "architecture",
    "split": "split",
}


def set_metadata(proto, config: dict) -> None:
    """Write the Predictor's settings into ``proto.metadata_props`` (replacing catdog's own keys)."""
    values = {meta: json.dumps(config.get(key)) for meta, key in _META_KEYS.items()}
    values["catdog_version"] = json.dumps(catdog.__version__)
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    for prop in kept:
        proto.metadata_props.add(key=prop.key, value=prop.value)
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)


def session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session: every core, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ModelError(f"'{path}' is not a usable ONNX model ({first}).") from None


def _cores() -> int:
    from catdog.sharding import local_share_of_cores

    return local_share_of_cores()


def read_config(sess) -> dict:
    """The catdog config stored in an ONNX session's metadata; a clear error when absent."""
    props = sess.get_modelmeta().custom_metadata_map
    if "classes" not in props or "preprocess" not in props:
        raise ModelError("The ONNX file has no catdog metadata (classes, preprocess); export it with 'catdog export'.")
    config = {}
    for meta, key in _META_KEYS.items():
        if meta in props:
            config[key] = json.loads(props[meta])
    config["catdog_version"] = json.loads(props.get("catdog_version", "null"))
    if config.get("temperature") is None:
        config["temperature"] = 1.0
    return config


def onnx_model_fn(sess) -> Callable[[np.ndarray], Outputs]:
    """A Predictor model function running ``sess``: its :class:`catdog.predict.Outputs`."""
    from catdog.predict import Outputs

    names = [o.name for o in sess.get_outputs()]
    wanted = ["logits"] + [name for name in ("pet_score", "looks_like") if name in names]
    if "logits" not in names:
        wanted = [names[0]]
    input_name = sess.get_inputs()[0].name

    def run(batch: np.ndarray) -> Outputs:
        out = dict(zip(wanted, sess.run(wanted, {input_name: np.ascontiguousarray(batch, dtype=np.float32)})))
        return Outputs(out.get("logits", out[wanted[0]]), out.get("pet_score"), out.get("looks_like"))

    return run


def features_fn(sess) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]] | None:
    """``(penultimate features, pet_score or None)`` of a batch, when the file has a ``features`` output."""
    names = [o.name for o in sess.get_outputs()]
    if "features" not in names:
        return None
    wanted = ["features"] + ["pet_score"] * ("pet_score" in names)
    input_name = sess.get_inputs()[0].name

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = sess.run(wanted, {input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return out[0], (out[1] if len(out) > 1 else None)

    return run


# -- the cached export used for fast CPU inference of the built-in model and model directories ---


def files_key(paths: list[Path]) -> str:
    """A hash of some files' bytes, catdog's version and the export format."""
    digest = hashlib.sha256(f"{catdog.__version__}/{EXPORT_FORMAT}/{version('torch')}".encode())
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def cached_export(name: str, key_files: list[Path], load: Callable[[], tuple[nn.Module, dict]]) -> Path:
    """The ONNX export of a model in the user cache, made once (atomically) on first use."""
    from catdog.fsutil import default_cache_dir, file_lock

    path = default_cache_dir() / "onnx" / f"{name}-{files_key(key_files)}.onnx"
    if path.exists():
        return path
    with file_lock(path.with_suffix(".lock")):  # several ranks or server workers may start together
        if not path.exists():
            from catdog.export import export_onnx, max_gap

            print(f"Exporting {name} to ONNX for fast CPU inference (once, into {path.parent}).", file=sys.stderr)
            module, config = load()
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                export_onnx(module, config, tmp)
                gap = max_gap(module, session(tmp), np.random.default_rng(0).normal(size=(4, *_input_shape(config))))
                if not gap <= 1e-4:
                    raise ModelError(f"the ONNX export of {name} differs from PyTorch by {gap:.2g} in probability.")
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    return path


def _input_shape(config: dict) -> tuple[int, int, int]:
    size = int(config["preprocess"]["image_size"])
    return 3, size, size


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def load_model_fn(
    model: str | os.PathLike | None, backend: str = "auto", threads: int | None = None
) -> tuple[Callable, dict, str, str]:
    """``(model_fn, config, name, backend used)`` for the built-in model, a model directory or an .onnx file.

    ``backend``: ``onnx`` runs ONNX Runtime (the built-in model or a model directory is exported
    once to the user cache), ``torch`` runs PyTorch eager, ``auto`` tries ONNX Runtime and falls
    back to PyTorch when the export fails. ``threads``: ONNX Runtime's threads per call (default:
    this process's cores).
    """
    if backend not in ("auto", "onnx", "torch"):
        raise CatdogError(f"backend '{backend}' must be auto, onnx or torch.")
    if model is not None and Path(model).suffix.lower() == ".onnx" and not Path(model).is_dir():
        if not Path(model).is_file():
            raise ModelError(f"ONNX file '{model}' does not exist.")
        if backend == "torch":
            raise CatdogError("an .onnx file runs only with the onnx backend.")
        sess = session(model, threads)
        return onnx_model_fn(sess), read_config(sess), str(model), "onnx"
    name, key_files, load = _torch_source(model)
    if backend != "torch":
        try:
            path = cached_export(name, key_files, load)
            sess = session(path, threads)
            return onnx_model_fn(sess), _full_config(sess, model), str(model or "builtin"), "onnx"
        except (ModelError, OSError, RuntimeError, ValueError, ImportError) as err:
            if backend == "onnx":
                raise
            print(f"ONNX export failed ({err}); running PyTorch instead.", file=sys.stderr)
    from catdog.predict import torch_model_fn

    module, config = load()
    return torch_model_fn(module), config, str(model or "builtin"), "torch"


def _full_config(sess, model: str | os.PathLike | None) -> dict:
    """The exported settings, plus the rest of a model directory's config.json (metrics, data ...)."""
    config = read_config(sess)
    if model is None:
        from catdog.models.files import builtin_config

        return builtin_config() | config
    from catdog.models import read_config as read_dir_config

    return read_dir_config(model) | config


def _torch_source(model: str | os.PathLike | None) -> tuple[str, list[Path], Callable[[], tuple[nn.Module, dict]]]:
    """Cache name, files whose bytes identify the weights, and the loader of a torch model."""
    if model is None:
        from catdog.models.files import builtin_files

        def load_builtin():
            from catdog.models.builtin import load_builtin

            return load_builtin()

        return "builtin", builtin_files(), load_builtin
    from catdog.models import load_model_dir
    from catdog.models import read_config as read_dir_config

    model_dir = Path(model)
    read_dir_config(model_dir)  # a clear error for a wrong path before anything else
    files = [model_dir / "config.json", model_dir / "model.safetensors"]
    return "model", files, lambda: load_model_dir(model_dir)
