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
# The API's documentation page (catdog serve's /docs): Swagger UI from the pinned npm package, served by catdog
# itself, so that the page works offline (FastAPI's default loads it from a CDN: a blank page without internet).
DOCS_PACKAGE = "swagger-ui-dist"
DOCS_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE")
DOCS_VENDOR = WEB.parent / "src" / "catdog" / "serve" / "static" / "docs"


class BuildError(RuntimeError):
    """The app's runtime could not be built; the message says what to do."""


def pinned_version(package: str = PACKAGE) -> str:
    lock = json.loads((WEB / "package-lock.json").read_text(encoding="utf-8"))
    return lock["packages"][f"node_modules/{package}"]["version"]


def _installed_version(package: str = PACKAGE) -> str | None:
    manifest = WEB / "node_modules" / package / "package.json"
    return json.loads(manifest.read_text(encoding="utf-8"))["version"] if manifest.is_file() else None


def _up_to_date(version: str, vendor: Path = VENDOR, files: tuple[str, ...] = FILES) -> bool:
    stamp = vendor / STAMP
    return (
        stamp.is_file()
        and stamp.read_text(encoding="utf-8").strip() == version
        and all((vendor / name).is_file() for name in files)
    )


def build(quiet: bool = False) -> Path:
    """Make ``VENDOR`` hold the pinned runtime and ``DOCS_VENDOR`` the API page's Swagger UI: ``npm ci`` when
    needed, then copy. Returns ``VENDOR``."""
    version, docs_version = pinned_version(), pinned_version(DOCS_PACKAGE)
    if _up_to_date(version) and _up_to_date(docs_version, DOCS_VENDOR, DOCS_FILES):
        return VENDOR
    if _installed_version() != version or _installed_version(DOCS_PACKAGE) != docs_version:
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
    _copy(PACKAGE, version, WEB / "node_modules" / PACKAGE / "dist", FILES, VENDOR)
    _copy(DOCS_PACKAGE, docs_version, WEB / "node_modules" / DOCS_PACKAGE, DOCS_FILES, DOCS_VENDOR)
    return VENDOR


def _copy(package: str, version: str, dist: Path, files: tuple[str, ...], vendor: Path) -> None:
    missing = [name for name in files if not (dist / name).is_file()]
    if missing:
        raise BuildError(f"{package} {version} has no {', '.join(missing)} in {dist}; the pinned version changed.")
    vendor.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copyfile(dist / name, vendor / name)
    (vendor / STAMP).write_text(version + "\n", encoding="utf-8")


if __name__ == "__main__":
    try:
        print(f"The phone app's runtime is in {build()}.")
    except BuildError as err:
        sys.exit(f"error: {err}")
