"""The phone app: a progressive web app that runs the model in the browser, offline, on the device.

``catdog serve`` serves it at ``/app`` (:mod:`catdog.serve.app_routes`); ``catdog export --format web``
writes it as a static folder (:func:`write_web`). Its files:

- ``serve/static/app/``: the page, its scripts (``app.js`` on the page, ``shares.js`` showing probabilities
  as the server's page does, ``worker.js`` where the model runs), the service worker (``sw.js``, a
  template: the cache's version and file list are filled in), the manifest and icons. In git.
- ``serve/static/app/vendor/``: ONNX Runtime Web, copied out of the pinned npm package by
  ``web/build_app.py`` when the Python package is built: its WebAssembly runtime (every browser) and its
  WebGPU runtime (browsers with WebGPU; the service worker caches it only where it is used). Not in git.
- ``model.onnx``: the model's ONNX export (the file ``catdog predict`` runs), and ``model.json``: what the
  browser needs to turn its outputs into a Prediction exactly as :meth:`Predictor.to_predictions` does.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
from pathlib import Path

from catdog import __version__
from catdog.errors import CatdogError
from catdog.fsutil import listed, naming_the_file_written, utf8_safe
from catdog.models.files import is_onnx_model, refuse_a_missing_model

APP_FILES = (
    "index.html",
    "app.js",
    "shares.js",
    "worker.js",
    "manifest.webmanifest",
    "icon.svg",
    "icon-192.png",
    "icon-512.png",
    "icon-maskable-512.png",
)
# ONNX Runtime Web's WebAssembly runtime: every browser, and the fallback where WebGPU fails.
WASM_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
# Its WebGPU runtime (the WebGPU execution provider, in a .wasm built with asyncify): only where the browser has
# WebGPU. It runs WebAssembly too, but 1.5-3 times slower per run and 2-3 times slower to load than the runtime
# above (Chromium, 2-core EPYC), and its .wasm is twice the size: hence two runtimes.
WEBGPU_FILES = ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
VENDOR_FILES = WASM_FILES + WEBGPU_FILES
# The page's description and the manifest's name and description say what the app answers, in the built-in
# model's words in the package; for a model with other answers they name its own (see app_file_bytes).
BUILTIN_ANSWERS = ("cat", "dog", "neither")
WORDED_FILES = ("index.html", "manifest.webmanifest")
MODEL_FILE = "model.onnx"
CONFIG_FILE = "model.json"
SERVICE_WORKER = "sw.js"

# Cross-origin isolation (SharedArrayBuffer: WebAssembly threads) and a strict policy: the app loads
# nothing from elsewhere and sends nothing anywhere ('wasm-unsafe-eval' compiles the runtime).
# The phone app decodes a photo whole in the browser (4 bytes a pixel, twice over): 40 MP is 320 MB, which a
# phone holds; catdog's own 200 MP would be 1.6 GB.
APP_MAX_PIXELS = 40_000_000

APP_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
        "connect-src 'self' blob: data:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".onnx": "application/octet-stream",
}


_NOT_BUILT = (
    "The phone app's runtime is not built into this install{}: install Node.js and npm, then reinstall catdog "
    "(pip install .) or run 'python web/build_app.py' in its checkout."
)


class AppNotBuiltError(CatdogError):
    """The app's runtime (onnxruntime-web) is missing from this install.

    ``str(err)`` names the missing files and their folder, for the person at this machine (``catdog export``,
    the server's log); :attr:`public` says it without them, for the server's clients: no path on disk for them.
    """

    public = _NOT_BUILT.format("")


def app_dir() -> Path:
    """The app's files inside the installed package."""
    return Path(__file__).resolve().parent / "serve" / "static" / "app"


def runtime_dir() -> Path:
    """onnxruntime-web's files, checked: a clear error when the package was built without them."""
    vendor = app_dir() / "vendor"
    missing = [name for name in VENDOR_FILES if not (vendor / name).is_file()]
    if missing:
        raise AppNotBuiltError(_NOT_BUILT.format(f" ({', '.join(missing)} missing from {vendor})"))
    return vendor


def model_file(model: str | os.PathLike | None) -> Path:
    """The ONNX file of a model: an ``.onnx`` file, or the cached export of a model directory or the built-in model."""
    from catdog.inference.model_cache import cached_export, torch_source

    refuse_a_missing_model(model)  # else a missing x.onnx reached shutil as "No such file or directory"
    if is_onnx_model(model):
        return Path(model)
    name, key_files, load = torch_source(model)
    return cached_export(name, key_files, load)


def app_file_bytes(name: str, answers: list[str] | None) -> bytes:
    """The app's file ``name`` for a model that answers ``answers`` (``None``: not known yet, the package's file).

    The page's description and the manifest (the installed app's name) named cat, dog or neither whatever the
    model's classes; they name the model's own answers.
    """
    data = (app_dir() / name).read_bytes()
    if name not in WORDED_FILES or answers is None or tuple(answers) == BUILTIN_ANSWERS:
        return data
    builtin, own = listed(BUILTIN_ANSWERS, "or"), listed(answers, "or")
    if name == "index.html":
        return data.decode("utf-8").replace(builtin, html.escape(own)).encode("utf-8")
    manifest = json.loads(data)
    manifest["name"], manifest["description"] = (manifest[key].replace(builtin, own) for key in ("name", "description"))
    return json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")


def app_config(predictor, model_path: Path) -> dict:
    """``model.json``: classes, preprocessing, temperature and gate of ``predictor`` (its model is ``model_path``).

    The browser's ``toPrediction`` follows :meth:`Predictor.to_predictions` with these values.
    """
    from catdog.inference.predictor import LOOKS_LIKE_FLOOR, imagenet_classes

    stat = model_path.stat()
    return {
        "catdog_version": __version__,
        "name": "builtin" if predictor.name == "builtin" else utf8_safe(Path(predictor.name).name),
        "model": MODEL_FILE,
        "model_bytes": stat.st_size,
        "model_sha256": _sha256(model_path),
        "classes": list(predictor.classes),
        "answers": predictor.answers,
        "preprocess": predictor.pre.to_dict() | {"resize_size": predictor.pre.resize_size},
        "temperature": predictor.temperature,
        "gated": predictor.gated,
        "neither_threshold": predictor.gate_threshold,
        "threshold": predictor.threshold,
        "max_pixels": min(predictor.max_pixels, APP_MAX_PIXELS),
        "imagenet": [list(pair) for pair in imagenet_classes()] if predictor.gated else [],
        "looks_like_floor": LOOKS_LIKE_FLOOR,
    }


_HASHES: dict[tuple[str, int, float], str] = {}


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def cached_files() -> list[str]:
    """Every file the service worker caches at install, relative to the app's folder: all but the WebGPU runtime."""
    return ["./", *APP_FILES, *(f"vendor/{name}" for name in WASM_FILES), CONFIG_FILE, MODEL_FILE]


def cached_on_use() -> list[str]:
    """The files the service worker caches the first time the app fetches them: the WebGPU runtime (28.9 MB),
    which a browser without WebGPU never fetches."""
    return [f"vendor/{name}" for name in WEBGPU_FILES]


def service_worker(config: dict) -> str:
    """``sw.js`` with its cache version (app files, runtime and model) and the files to cache filled in."""
    digest = hashlib.sha256(config["model_sha256"].encode())
    digest.update(json.dumps(config, sort_keys=True).encode())
    for name in APP_FILES:
        digest.update((app_dir() / name).read_bytes())
    for name in VENDOR_FILES:
        path = runtime_dir() / name
        digest.update(f"{name}:{path.stat().st_size}".encode())
    template = (app_dir() / SERVICE_WORKER).read_text(encoding="utf-8")
    filled = template.replace("__VERSION__", digest.hexdigest()[:16]).replace("__FILES__", json.dumps(cached_files()))
    return filled.replace("__ON_USE__", json.dumps(cached_on_use()))


def write_web(
    model: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    int8: bool = False,
    check_dir: str | os.PathLike | None = None,
    n_check: int | None = None,
    neither_threshold: float | None = None,
) -> dict:
    """``catdog export --format web``: the app as a static folder ``out`` (any static host serves it).

    The model is the ONNX export ``catdog predict`` runs (checked against PyTorch), or with ``int8`` or
    ``check_dir`` a fresh :func:`catdog.export.export` checked on those photos. Returns ``model.json``, with
    that export's checks under ``check``.
    """
    from catdog.inference.predictor import Predictor

    runtime = runtime_dir()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CatdogError(f"'{out}' already exists and is not an empty folder; choose a new folder for the app.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with naming_the_file_written(out):  # a full disk names the app's folder
            (tmp / "vendor").mkdir(parents=True)
            target = tmp / MODEL_FILE
            check = None
            if int8 or check_dir is not None:
                from catdog.export import export

                check = export(model, target, int8=int8, check_dir=check_dir, n_check=n_check)
            else:
                shutil.copyfile(model_file(model), target)
            predictor = Predictor.load(str(target), neither_threshold=neither_threshold, backend="onnx")
            config = app_config(predictor, target)
            config["name"] = "builtin" if model is None else utf8_safe(Path(model).name)  # the page shows it
            for name in APP_FILES:
                (tmp / name).write_bytes(app_file_bytes(name, config["answers"]))
            for name in VENDOR_FILES:
                shutil.copyfile(runtime / name, tmp / "vendor" / name)
            (tmp / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
            (tmp / SERVICE_WORKER).write_text(service_worker(config), encoding="utf-8")
            (tmp / "_headers").write_text(_headers_file(), encoding="utf-8")
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # The check's own path named the temporary folder, renamed away above.
    return config | ({"check": check.to_dict() | {"path": str(out / MODEL_FILE)}} if check is not None else {})


def _headers_file() -> str:
    """Netlify / Cloudflare Pages style headers: cross-origin isolation for WebAssembly threads."""
    lines = "".join(f"  {key}: {value}\n" for key, value in APP_HEADERS.items())
    return f"/*\n{lines}"
