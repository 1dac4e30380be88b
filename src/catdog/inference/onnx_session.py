"""ONNX Runtime: run a catdog ONNX file, and read or write the settings it carries.

The file carries everything :class:`catdog.inference.predictor.Predictor` needs in its ``metadata_props``
(classes, preprocessing, temperature, gate threshold, architecture, catdog version), so
``catdog predict --model file.onnx`` works with the file alone. Its outputs, by name:

- ``logits`` — ``(N, classes)``;
- ``pet_score`` — ``(N,)``, only for gated models: ``P(cat or dog)`` from the open-set gate;
- ``looks_like`` — ``(N,)`` int64, only for gated models: the top non-pet ImageNet class the backbone sees;
- ``looks_like_score`` — ``(N,)``, beside ``looks_like`` in files since catdog wrote it: that class's ImageNet
  probability (a file without it names the class however weak it is, as before);
- ``features`` — ``(N, F)`` penultimate features, for timm backbones (used by ``data audit``).

ONNX Runtime computes only the outputs asked for, so prediction pays nothing for ``features``. The file's
``doc_string`` (:func:`describe`) says the same in words for a developer without catdog, with what ``input`` holds.

This module runs ONNX files without importing torch or timm (a prediction starts in about a
second); making an export needs PyTorch and lives in :mod:`catdog.inference.onnx_export`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

import catdog
from catdog.errors import ModelError
from catdog.fsutil import utf8_name
from catdog.inference.cores import local_share_of_cores
from catdog.inference.outputs import LOOKS_LIKE_FLOOR, Outputs

INPUT = "input"

# metadata_props key → config key; values are JSON.
_META_KEYS = {
    "classes": "classes",
    "preprocess": "preprocess",
    "temperature": "temperature",
    "gate": "gate",
    "architecture": "architecture",
    "split": "split",
    "data": "data",  # only where the model was trained and on how many photos: catdog evaluate's warnings
}


def set_metadata(proto, config: dict) -> None:
    """Write the Predictor's settings into ``proto.metadata_props`` (replacing catdog's own keys)."""
    values = {meta: json.dumps(config.get(key)) for meta, key in _META_KEYS.items()}
    data = config.get("data")
    values["data"] = json.dumps({k: data.get(k) for k in ("root", "train_images")} if isinstance(data, dict) else None)
    values["catdog_version"] = json.dumps(catdog.__version__)
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    for prop in kept:
        proto.metadata_props.add(key=prop.key, value=prop.value)
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)
    # The input's contract in words, where a developer with only the file looks (Netron, ONNX Runtime's
    # get_modelmeta().description): the shape says NCHW, but not RGB, nor how pixels become values, and
    # 0-255 values run without an error (the built-in model then answers `neither` to most photos).
    outputs = [output.name for output in proto.graph.output]
    proto.doc_string = describe(config, outputs)
    for value in proto.graph.input:
        if value.name == INPUT:
            value.doc_string = _input_words(config)


def _input_words(config: dict) -> str:
    pre = config["preprocess"]
    size, side = int(pre["image_size"]), math.floor(int(pre["image_size"]) / float(pre["crop_pct"]))
    return (
        f"float32 (N, 3, {size}, {size}): N photos, RGB channels first (NCHW). Each photo upright (EXIF "
        f"orientation), transparency on white, its shorter side resized to {side} px (Pillow's "
        f"{pre['interpolation']}), the centre {side}x{side} square, then its centre {size}x{size}; each channel "
        f"(pixel / 255 - mean) / std with mean {list(pre['mean'])} and std {list(pre['std'])} (metadata "
        "'preprocess'), not 0-255 values."
    )


def describe(config: dict, outputs: list[str]) -> str:
    """The file's contract in a few sentences: what ``input`` must hold and what each output means."""
    classes = list(config["classes"])
    gate = config.get("gate") or {}
    words = [
        f"A catdog {'/'.join(classes)} classifier (catdog {catdog.__version__}).",
        f"Input 'input': {_input_words(config)}",
        f"Output 'logits': (N, {len(classes)}), in the order of metadata 'classes' {classes}; the probabilities "
        f"are softmax(logits / temperature), temperature {config.get('temperature') or 1.0} (metadata "
        "'temperature').",
    ]
    if "pet_score" in outputs and gate.get("threshold") is not None and set(classes) <= {"cat", "dog"}:
        words.append(
            "Output 'pet_score': (N,), P(cat or dog), 0 to 1; the answer is 'neither' below "
            f"{gate['threshold']} (metadata 'gate'), each class's probability is multiplied by it and "
            "P(neither) is 1 - pet_score."
        )
    if "looks_like" in outputs:
        words.append(
            "Output 'looks_like': (N,) int64, the ImageNet class (0-999) the photo looks like most among those "
            "that are no cat or dog."
        )
    if "looks_like_score" in outputs:
        words.append(
            "Output 'looks_like_score': (N,), that class's probability (softmax over the 1,000 ImageNet classes); "
            f"catdog names the class only from {LOOKS_LIKE_FLOOR} up."
        )
    if "features" in outputs:
        words.append("Output 'features': (N, F), the pooled features the classifier reads.")
    words.append(
        "The metadata_props values catdog writes are JSON (an int8 file also has ONNX Runtime's onnx.* marks). "
        "catdog's docs/predict-and-serve.md ('Using the file without catdog') gives a script that answers as "
        "catdog predict does, and docs/examples/onnx-web-page.html a web page that does (onnxruntime-web)."
    )
    return " ".join(words)


def session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session: every core, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(_openable(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ModelError(f"'{path}' is not a usable ONNX model ({first}).") from None


def _openable(path: str | os.PathLike) -> str | bytes:
    """``path`` as ONNX Runtime takes it: its name, or the file's bytes when the name is not UTF-8 (ONNX Runtime
    takes only a UTF-8 name, and refused 'caf\\xe9.onnx' with a message about its constructor's arguments)."""
    return str(path) if utf8_name(path) else Path(path).read_bytes()


def _cores() -> int:
    return local_share_of_cores()


def read_config(sess, path: str | os.PathLike) -> dict:
    """The catdog config stored in the metadata of ``sess`` (the ONNX file ``path``), checked as config.json is.

    A hand-made or damaged file's metadata is one sentence naming the file and the field, never a traceback.
    """
    from catdog.models import check_config

    props = sess.get_modelmeta().custom_metadata_map
    if "classes" not in props or "preprocess" not in props:
        raise ModelError(f"'{path}' has no catdog metadata (classes, preprocess); export it with 'catdog export'.")
    config = {}
    for meta, key in (*_META_KEYS.items(), ("catdog_version", "catdog_version")):
        if meta not in props and meta != "catdog_version":
            continue
        try:
            config[key] = json.loads(props.get(meta, "null"))
        except ValueError:
            raise ModelError(f"'{path}' is damaged: its metadata '{meta}' is not JSON; export it again.") from None
    if config.get("temperature") is None:
        config["temperature"] = 1.0
    # Only a model directory needs 'architecture' (to rebuild its network): an ONNX file is its network.
    check_config({**config, "architecture": config.get("architecture") or "onnx"}, path, "export it again")
    return config


def onnx_model_fn(sess) -> Callable[[np.ndarray], Outputs]:
    """A Predictor model function running ``sess``: its :class:`catdog.inference.outputs.Outputs`."""
    names = [o.name for o in sess.get_outputs()]
    wanted = ["logits"] + [name for name in ("pet_score", "looks_like", "looks_like_score") if name in names]
    if "logits" not in names:
        wanted = [names[0]]
    input_name = sess.get_inputs()[0].name

    def run(batch: np.ndarray) -> Outputs:
        out = dict(zip(wanted, sess.run(wanted, {input_name: np.ascontiguousarray(batch, dtype=np.float32)})))
        logits = out.get("logits", out[wanted[0]])
        return Outputs(logits, out.get("pet_score"), out.get("looks_like"), out.get("looks_like_score"))

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
