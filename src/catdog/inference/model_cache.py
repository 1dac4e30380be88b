"""A model → a model function: the built-in model, a model directory or an .onnx file, on either backend.

A model directory or the built-in model runs in ONNX Runtime through an export made once into the
user cache (:func:`cached_export`), or in PyTorch when asked or when the export fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import catdog
from catdog.errors import CatdogError, ModelError
from catdog.inference.onnx_session import onnx_model_fn, read_config, session
from catdog.inference.outputs import torch_model_fn

if TYPE_CHECKING:
    from torch import nn

EXPORT_FORMAT = 4  # bump when the graph layout or metadata change, so cached exports are rebuilt
# Exports kept in the cache, the most recently used first: each trained model and catdog version makes
# its own (20-60 MB), and a practitioner's cache had grown to 287 of them (6 GB). Pruned after each export.
KEPT_EXPORTS = 16


def files_key(paths: list[Path]) -> str:
    """A hash of some files' bytes, catdog's version and the export format."""
    digest = hashlib.sha256(f"{catdog.__version__}/{EXPORT_FORMAT}/{version('torch')}".encode())
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def export_path(name: str, key_files: list[Path]) -> Path:
    """Where :func:`cached_export` keeps the ONNX export of a model named ``name`` whose bytes are ``key_files``."""
    from catdog.fsutil import default_cache_dir

    return default_cache_dir() / "onnx" / f"{name}-{files_key(key_files)}.onnx"


def cached_export(name: str, key_files: list[Path], load: Callable[[], tuple[nn.Module, dict]]) -> Path:
    """The ONNX export of a model in the user cache, made once (atomically) on first use."""
    from catdog.fsutil import file_lock

    path = export_path(name, key_files)
    if path.exists():
        _mark_used(path)
        return path
    with file_lock(path.with_suffix(".lock")):  # several ranks or server workers may start together
        if not path.exists():
            from catdog.inference.onnx_export import export_onnx, max_gap  # torch: only to export

            module, config = load()  # first: a model that cannot load is refused before an export is announced
            print(f"Exporting {name} to ONNX for fast CPU inference (once, into {path.parent}).", file=sys.stderr)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                export_onnx(module, config, tmp)
                gap = max_gap(module, session(tmp), np.random.default_rng(0).normal(size=(4, *_input_shape(config))))
                if not gap <= 1e-4:
                    raise ModelError(f"the ONNX export of {name} differs from PyTorch by {gap:.2g} in probability.")
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            prune_exports(path.parent)
    return path


def _mark_used(path: Path) -> None:
    """Set the export's modification time to now: the order in which :func:`prune_exports` keeps them."""
    with contextlib.suppress(OSError):  # a read-only cache still serves its exports
        os.utime(path)


def model_exports(folder: Path) -> list[Path]:
    """The exports :func:`cached_export` made in ``folder``, the most recently used first.

    Backbone feature extractors (``features.py``) share the folder under other names and are not listed.
    """
    from catdog.models.files import BUILTIN_MODELS

    pattern = re.compile(rf"^({'|'.join(map(re.escape, (*BUILTIN_MODELS, 'model')))})-[0-9a-f]{{20}}\.onnx$")
    exports = []
    for entry in folder.iterdir():
        if pattern.match(entry.name):
            with contextlib.suppress(FileNotFoundError):  # pruned by another process meanwhile
                exports.append((entry.stat().st_mtime, entry))
    return [entry for _, entry in sorted(exports, key=lambda pair: pair[0], reverse=True)]


def prune_exports(folder: Path, keep: int = KEPT_EXPORTS) -> list[Path]:
    """Remove all but the ``keep`` most recently used model exports from ``folder``; the removed ones.

    A removed export is made again by the next command that needs it; a process that already opened
    one keeps it (ONNX Runtime has read it into memory). Its lock file goes with it: exports are written
    atomically, so two processes exporting the same model at once waste time but break nothing.
    """
    removed = []
    for stale in model_exports(folder)[keep:]:
        try:
            stale.unlink()
            removed.append(stale)
        except FileNotFoundError:  # another process pruned it first
            pass
        stale.with_suffix(".lock").unlink(missing_ok=True)
    return removed


def _input_shape(config: dict) -> tuple[int, int, int]:
    size = int(config["preprocess"]["image_size"])
    return 3, size, size


def load_model_fn(
    model: str | os.PathLike | None,
    backend: str = "auto",
    threads: int | None = None,
    loaded: tuple[nn.Module, dict] | None = None,
) -> tuple[Callable, dict, str, str]:
    """``(model_fn, config, name, backend used)`` for the built-in model, a model directory or an .onnx file.

    ``backend``: ``onnx`` runs ONNX Runtime (the built-in model or a model directory is exported
    once to the user cache), ``torch`` runs PyTorch eager, ``auto`` tries ONNX Runtime and falls
    back to PyTorch when the export fails. ``threads``: ONNX Runtime's threads per call (default:
    this process's cores). ``loaded``: the model directory's ``(module, config)`` as
    :func:`catdog.models.load_model_dir` returned them, when the caller holds them already: not read again.
    """
    if backend not in ("auto", "onnx", "torch"):
        raise CatdogError(f"backend '{backend}' must be auto, onnx or torch.")
    from catdog.models.files import is_onnx_model, refuse_a_missing_model

    refuse_a_missing_model(model)  # said here, not by the model directory's reader: an .onnx file is taken too
    if is_onnx_model(model):
        if not Path(model).is_file():
            raise ModelError(f"ONNX file '{model}' is not a file.")
        if backend == "torch":
            raise CatdogError("an .onnx file runs only with the onnx backend.")
        sess = session(model, threads)
        return onnx_model_fn(sess), read_config(sess, model), str(model), "onnx"
    name, key_files, load = torch_source(model, loaded)
    export_failure = None
    if backend != "torch":
        try:
            path = cached_export(name, key_files, load)
            sess = session(path, threads)
            return onnx_model_fn(sess), _full_config(sess, path, model), str(model or "builtin"), "onnx"
        except (ModelError, OSError, RuntimeError, ValueError, ImportError) as err:
            if backend == "onnx":
                raise
            export_failure = err
    # A model that PyTorch cannot load either says so alone: "ONNX export failed (...); running PyTorch instead"
    # followed by the same sentence as the error read as two problems.
    module, config = load()
    if export_failure is not None:
        print(f"ONNX export failed ({export_failure}); running PyTorch instead.", file=sys.stderr)
    return torch_model_fn(module), config, str(model or "builtin"), "torch"


def _full_config(sess, path: str | os.PathLike, model: str | os.PathLike | None) -> dict:
    """The exported settings (of the export at ``path``), plus the rest of a model directory's config.json."""
    config = read_config(sess, path)
    from catdog.models.files import builtin_model_config, builtin_name

    name = builtin_name(model)
    if name is not None:
        return builtin_model_config(name) | config
    from catdog.models import read_config as read_dir_config

    return read_dir_config(model) | config


def torch_source(
    model: str | os.PathLike | None, loaded: tuple[nn.Module, dict] | None = None
) -> tuple[str, list[Path], Callable[[], tuple[nn.Module, dict]]]:
    """Cache name, files whose bytes identify the weights, and the loader of a torch model.

    ``model``: None or a name of BUILTIN_MODELS (``builtin``, ``builtin-large``), or a model directory.
    ``loaded``: that directory's ``(module, config)``, read already: what the loader returns.
    """
    from catdog.models.files import builtin_files, builtin_name

    name = builtin_name(model)
    if name is not None:

        def load_shipped():
            from catdog.models.builtin import load_shipped

            return load_shipped(name)

        return name, builtin_files(name), load_shipped
    from catdog.models import load_model_dir
    from catdog.models import read_config as read_dir_config

    model_dir = Path(model)
    read_dir_config(model_dir)  # a clear error for a wrong path before anything else
    files = [model_dir / "config.json", model_dir / "model.safetensors"]
    return "model", files, lambda: loaded if loaded is not None else load_model_dir(model_dir)
