"""Copy ONNX Runtime Web's runtimes (WebAssembly, WebGPU) out of the pinned npm package into the Python package.

The phone app (``catdog serve``'s ``/app``, ``catdog export --format web``) runs the model in the browser
with the npm package ``onnxruntime-web``, pinned in ``package.json`` and ``package-lock.json`` beside this
file. Six of its files (44 MB, so never committed) are copied into
``src/catdog/serve/static/app/vendor/`` (ignored by git). ``setup.py`` runs this before the package's
files are collected, so ``pip install .`` and ``pip install -e .`` both end with them in place; by hand:
``python web/build_app.py``. Needs ``npm`` only when the copies are missing or stale.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent
VENDOR = WEB.parent / "src" / "catdog" / "serve" / "static" / "app" / "vendor"
PACKAGE = "onnxruntime-web"
# The same names as catdog.webapp.VENDOR_FILES (catdog itself cannot be imported while it is being built):
# the WebAssembly runtime (``onnxruntime-web/wasm``: 14.9 MB), and the WebGPU one (``onnxruntime-web/webgpu``
# with its asyncify ``.wasm``: 28.9 MB), the WebGPU execution provider that runs this model (the JSEP one in
# ``ort.min.mjs`` fails on its MatMul).
FILES = (
    "ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)
STAMP = "VERSION"


class BuildError(RuntimeError):
    """The app's runtime could not be built; the message says what to do."""


def pinned_version() -> str:
    lock = json.loads((WEB / "package-lock.json").read_text(encoding="utf-8"))
    return lock["packages"][f"node_modules/{PACKAGE}"]["version"]


def _installed_version() -> str | None:
    manifest = WEB / "node_modules" / PACKAGE / "package.json"
    return json.loads(manifest.read_text(encoding="utf-8"))["version"] if manifest.is_file() else None


def _up_to_date(version: str) -> bool:
    stamp = VENDOR / STAMP
    return (
        stamp.is_file()
        and stamp.read_text(encoding="utf-8").strip() == version
        and all((VENDOR / name).is_file() for name in FILES)
    )


def build(quiet: bool = False) -> Path:
    """Make ``VENDOR`` hold the pinned runtime: ``npm ci`` when needed, then copy. Returns ``VENDOR``."""
    version = pinned_version()
    if _up_to_date(version):
        return VENDOR
    if _installed_version() != version:
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError(
                f"catdog's phone app needs {PACKAGE} {version} from npm, and npm is not on PATH: install Node.js "
                "and npm (e.g. apt-get install nodejs npm, or https://nodejs.org), then build catdog again."
            )
        command = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
        if not quiet:
            print(f"catdog: {' '.join(command[1:])} in {WEB} (the phone app's runtime, {PACKAGE} {version})")
        done = subprocess.run(command, cwd=WEB, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise BuildError(f"npm ci failed in {WEB} (exit status {done.returncode}): " + " / ".join(tail))
    dist = WEB / "node_modules" / PACKAGE / "dist"
    missing = [name for name in FILES if not (dist / name).is_file()]
    if missing:
        raise BuildError(f"{PACKAGE} {version} has no {', '.join(missing)} in {dist}; the pinned version changed.")
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(dist / name, VENDOR / name)
    (VENDOR / STAMP).write_text(version + "\n", encoding="utf-8")
    return VENDOR


if __name__ == "__main__":
    try:
        print(f"The phone app's runtime is in {build()}.")
    except BuildError as err:
        sys.exit(f"error: {err}")
