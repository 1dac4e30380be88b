"""The phone app in Chromium (WebAssembly, 2 threads): ms per frame fp32 vs int8, download size, first answer.

``python -m benchmarks app [--quick]``. Each model is written by ``catdog export --format web`` and served
as a static folder (with the cross-origin isolation headers a host gives it, see the folder's ``_headers``);
Chromium opens it like a phone (Pixel 5 emulation) with a fake camera streaming a video made from dev
photos. Figures per model: the model alone (median of N runs on one frame), camera mode (frames answered
per second, median over 100 frames, preprocessing included), bytes the first visit downloads, and the time
from opening the app to its first answer once the service worker has cached everything. The fp32 app is also
opened on Chromium's SwiftShader WebGPU adapter (WebGPU emulated on the CPU): a check that the WebGPU path
loads and answers, with its ms per run, which says nothing of a phone's GPU.

The helpers (:func:`write_y4m`, :func:`static_server`, :func:`camera_fps`) are shared with tests/test_app.py.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DEV_DIR, Result, catdog_cmd

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
# WebGPU on the CPU: Chromium's SwiftShader adapter (Vulkan in software), slow but a real WebGPU device.
WEBGPU_ARGS = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"]
PHONE = "Pixel 5"


def write_y4m(photo: Path, path: Path, *, width: int = 640, height: int = 480, frames: int = 15, fps: int = 30) -> Path:
    """A raw YUV 4:2:0 video (Chromium's fake camera file) of ``photo`` filling the frame's height, centred.

    BT.601 limited range, as cameras deliver it. ``frames`` copies of the same picture (Chromium loops it).
    """
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
    img = ImageOps.contain(img, (width, height), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (width, height), (128, 128, 128))
    canvas.paste(img, ((width - img.width) // 2, (height - img.height) // 2))
    rgb = np.asarray(canvas, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255

    def half(plane):
        return plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in (y, half(u), half(v))]
    frame = b"FRAME\n" + b"".join(planes)
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            handle.write(frame)
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    """A static host that sends the folder's ``_headers`` (cross-origin isolation) and counts requests."""

    counter: list[int]
    extra: dict[str, str]

    def end_headers(self) -> None:
        for key, value in self.extra.items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def do_GET(self) -> None:
        self.counter[0] += 1
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def static_server(folder: Path, *, isolation: bool = True):
    """Serve ``folder`` on 127.0.0.1 in a thread; yields ``(url, counter)`` (counter[0]: GET requests so far)."""
    extra = {}
    if isolation:
        for line in (folder / "_headers").read_text().splitlines()[1:]:
            key, _, value = line.strip().partition(": ")
            extra[key] = value
    handler = type("Handler", (_Handler,), {"counter": [0], "extra": extra})
    handler.extensions_map = {**handler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm",
                              ".webmanifest": "application/manifest+json"}  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.counter
    finally:
        server.shutdown()
        server.server_close()


def open_app(browser, url: str, playwright):
    """A Pixel 5 context with the camera allowed, its page on the app, the model loaded: ``(context, page, info)``."""
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True)  # wait_for_function evaluates strings
    context.grant_permissions(["camera"], origin=url.split("/app")[0].rstrip("/"))
    page = context.new_page()
    page.goto(url)
    info = page.evaluate("window.catdogApp.ready.then(info => window.catdogApp.allLanes.then(() => info))")
    return context, page, info


def camera_fps(page, frames: int = 100, warmup: int = 10, timeout_s: float = 60) -> dict:
    """Start the camera, wait for ``warmup + frames`` answers: median frames per second over the last ``frames``."""
    page.click("#camera-start")
    page.wait_for_function(
        f"window.catdogApp.frames.length >= {warmup + frames}", timeout=timeout_s * 1000, polling=250
    )
    got = page.evaluate(
        "window.catdogApp.frames.map(f => [f.t, f.label, f.inferMs, f.prepMs, f.prediction.confidence])"
    )
    page.click("#camera-stop")
    got = got[warmup : warmup + frames + 1]
    gaps = [b[0] - a[0] for a, b in zip(got, got[1:])]
    return {
        "fps": 1000 / statistics.median(gaps),
        "labels": [g[1] for g in got],
        "infer_ms": statistics.median(g[2] for g in got),
        "prep_ms": statistics.median(g[3] for g in got),
        "confidence": statistics.median(g[4] for g in got),
    }


def model_ms(page, runs: int = 30) -> float:
    """The model alone on one frame, median ms over ``runs`` (after the app's warm-up run)."""
    times = page.evaluate(f"window.catdogApp.benchModel({runs})")
    return statistics.median(times)


def first_answer_ms(browser, url: str, playwright, photo: Path) -> float:
    """Open the app (already cached by its service worker) and classify ``photo``: ms from navigation to the answer."""
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True)  # wait_for_function evaluates strings
    page = context.new_page()
    page.goto(url)
    page.evaluate("window.catdogApp.ready")  # first visit: the service worker caches everything
    page.wait_for_function("navigator.serviceWorker.controller !== null")
    page.goto("about:blank")
    started = time.perf_counter()
    page.goto(url)
    page.set_input_files("#file-input", str(photo))
    page.locator("#results .card[data-state=done]").wait_for(timeout=30_000)
    elapsed = (time.perf_counter() - started) * 1000
    in_page = page.evaluate("window.catdogApp.firstAnswerMs")  # from the navigation's start, in the page's clock
    context.close()
    return in_page if in_page is not None else elapsed


def _export(out: Path, int8: bool) -> Path:
    args = ["export", "--format", "web", "--out", str(out)]
    if int8:
        args += ["--int8", "--check-data", str(DEV_DIR)]
    subprocess.run(catdog_cmd(*args), check=True, capture_output=True)
    return out


def measure(folder: Path, video: Path, photo: Path, frames: int, repeats: int = 3) -> dict:
    from playwright.sync_api import sync_playwright

    with static_server(folder) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=[*BROWSER_ARGS, f"--use-file-for-fake-video-capture={video}"]
        )
        try:
            first = first_answer_ms(browser, url + "/", p, photo)
            alone = {}
            for threads in (1, 2):  # one worker, the model alone
                context, page, _ = open_app(browser, url + f"/?lanes=1&threads={threads}", p)
                alone[threads] = model_ms(page)
                context.close()
            runs = []
            for _ in range(repeats):  # camera mode as the app runs (one worker per core), the median run
                context, page, info = open_app(browser, url + "/", p)
                runs.append(camera_fps(page, frames=frames))
                context.close()
        finally:
            browser.close()
    runs.sort(key=lambda r: r["fps"])
    camera = {**runs[len(runs) // 2], "fps_runs": [r["fps"] for r in runs]}
    return {"first_ms": first, "model_ms": alone, "lanes": info["lanes"], **downloads(folder), **camera}


def downloads(folder: Path) -> dict:
    """Bytes of the first visit (what the service worker caches at install; "./" is index.html again) and of the
    WebGPU runtime, which a browser fetches (and the service worker then caches) only where it runs on WebGPU."""
    from catdog import webapp

    size = sum((folder / name).stat().st_size for name in webapp.cached_files() if name != "./")
    return {"download": size, "webgpu_download": sum((folder / name).stat().st_size for name in webapp.cached_on_use())}


def webgpu_check(folder: Path, photo: Path, runs: int = 3) -> dict:
    """The app on Chromium's SwiftShader WebGPU adapter (WebGPU emulated on the CPU): that it loads on WebGPU,
    the model alone (median of ``runs``) and ``photo``'s label. A correctness check; no phone's speed."""
    from playwright.sync_api import sync_playwright

    with static_server(folder) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[*BROWSER_ARGS, *WEBGPU_ARGS])
        try:
            context, page, info = open_app(browser, url + "/", p)
            if info["backend"] != "webgpu":
                raise RuntimeError(f"the app did not load on WebGPU: {info}")
            ms = model_ms(page, runs)
            page.set_input_files("#file-input", str(photo))
            page.locator("#results .card[data-state=done]").wait_for(timeout=120_000)
            label = page.locator("#results .card").first.get_attribute("data-label")
            context.close()
        finally:
            browser.close()
    return {"ms": ms, "label": label, "load_s": info["ms"] / 1000}


def run(quick: bool) -> list[Result]:
    photo = DEV_DIR / "cat.1.jpg"
    frames = 30 if quick else 100
    command = "python -m benchmarks app" + (" --quick" if quick else "")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        video = write_y4m(photo, tmp_dir / "cat.y4m")
        for int8 in (False, True):
            name = "int8" if int8 else "fp32"
            m = measure(_export(tmp_dir / name, int8), video, photo, frames, repeats=1 if quick else 3)
            notes = f"Chromium, Pixel 5 emulation, WebAssembly SIMD, built-in model {name}"
            camera_notes = (
                f"{notes}; {m['lanes']} single-threaded workers; per frame: model {m['infer_ms']:.0f} ms + "
                f"preprocessing {m['prep_ms']:.0f} ms (medians); median over {frames} frames, the median of "
                f"{len(m['fps_runs'])} runs ({', '.join(f'{fps:.1f}' for fps in m['fps_runs'])} frames/s)"
            )
            results += [
                Result("app", f"{name}: model alone, 2 threads", m["model_ms"][2], "ms/frame", command,
                       notes=f"{notes}; one worker, median of 30 runs"),
                Result("app", f"{name}: model alone, 1 thread", m["model_ms"][1], "ms/frame", command,
                       notes=f"{notes}; one worker, median of 30 runs"),
                Result("app", f"{name}: camera mode", m["fps"], "frames/s", command, ">= 25 frames/s",
                       m["fps"] >= 25, notes=camera_notes),
                Result("app", f"{name}: first visit download", m["download"] / 1e6, "MB", command,
                       notes="page, WebAssembly runtime (onnxruntime-web .wasm) and model; where WebGPU runs the "
                             f"model, its runtime too: +{m['webgpu_download'] / 1e6:.1f} MB"),
                Result("app", f"{name}: first answer from the cache", m["first_ms"] / 1000, "s", command, "<= 3 s",
                       m["first_ms"] <= 3000, notes="opening the app (service worker cache) to one photo answered"),
            ]  # fmt: skip
            if not int8:
                gpu = webgpu_check(tmp_dir / name, photo, runs=3)
                results.append(
                    Result("app", "fp32: model alone, WebGPU on SwiftShader (CPU)", gpu["ms"], "ms/frame", command,
                           "answers cat", gpu["label"] == "cat",
                           notes="Chromium's SwiftShader WebGPU adapter, WebGPU emulated on the CPU: a check that "
                                 "the WebGPU path loads and answers, not a phone's speed; median of 3 runs; "
                                 f"loading with its first run {gpu['load_s']:.0f} s")
                )  # fmt: skip
    return results


def screenshot(out: Path) -> Path:
    """The README's picture: the app on a Pixel 5 (at 1x), camera on a dev cat, a dog and a horse answered."""
    from PIL import Image

    from benchmarks.common import DATA

    photos = [DEV_DIR / "dog.1.jpg", DATA / "neither" / "horse" / "inet-n02389026_sorrel.JPEG"]
    with (
        tempfile.TemporaryDirectory() as tmp,
        sync_playwright_chromium(write_y4m(DEV_DIR / "cat.1.jpg", Path(tmp) / "cat.y4m")) as (p, browser),
    ):
        folder = _export(Path(tmp) / "app", int8=False)
        with static_server(folder) as (url, _):
            context = browser.new_context(**{**p.devices[PHONE], "device_scale_factor": 1}, bypass_csp=True)
            context.grant_permissions(["camera"], origin=url)
            page = context.new_page()
            page.goto(url + "/")
            page.evaluate("window.catdogApp.ready")
            page.set_input_files("#file-input", [str(f) for f in photos])
            page.wait_for_function("document.querySelectorAll('#results .card[data-state=done]').length >= 2")
            page.click("#camera-start")
            page.wait_for_function("window.catdogApp.frames.length >= 40", polling=250)
            page.screenshot(path=str(out))
            context.close()
    Image.open(out).convert("RGB").quantize(128).save(out, optimize=True)
    return out


@contextlib.contextmanager
def sync_playwright_chromium(video: Path | None = None):
    from playwright.sync_api import sync_playwright

    args = [*BROWSER_ARGS, f"--use-file-for-fake-video-capture={video}"] if video else BROWSER_ARGS
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield p, browser
        finally:
            browser.close()


if __name__ == "__main__":
    import sys

    print(screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/app-phone.png")))
