"""The phone app (``/app`` and ``catdog export --format web``) in a real browser: Playwright driving Debian's
Chromium as a Pixel 5, the model running in the page (ONNX Runtime Web: WebAssembly, and WebGPU on
Chromium's SwiftShader adapter, a WebGPU device emulated on the CPU).

Its answers are compared with Python's (``Predictor``) on the same photos; the camera is Chromium's fake
device streaming a video made from a dev photo.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import ssl
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from PIL import Image

from benchmarks.bench_app import BROWSER_ARGS, CHROMIUM, PHONE, WEBGPU_ARGS, static_server, write_y4m
from catdog import webapp
from catdog.fsutil import printable
from catdog.images import ImageError, decode, sniff_format
from test_browser import run_clock_until_asked

from conftest import missing, require_the_app_in_chromium, run_catdog_in_process
from hostile import encode, many_scans_jpeg, photo_like, png_bomb, shared_server
from serving import (
    CAMERA_ENDED,
    CAMERA_INTERRUPTED,
    FAILED_TO_LOAD,
    LINES_OF,
    LIVE_PAUSED,
    LIVE_REGIONS,
    LIVE_STREAMS,
    RECORD_STREAMS,
    REPO,
    SET_HIDDEN,
    Server,
    error_of,
    running,
    self_signed,
)

SCREENSHOTS = REPO / "artifacts" / "screenshots"

pytestmark = pytest.mark.browser

try:
    from playwright import sync_api
except ImportError:  # said by the prerequisites fixture: a failure under CI, a skip elsewhere
    sync_api = None

if TYPE_CHECKING:  # playwright is imported by the fixtures, after the check that Chromium is there
    from playwright.sync_api import Page


@pytest.fixture(scope="module", autouse=True)
def prerequisites() -> None:
    require_the_app_in_chromium()


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Server:
    """The session's server with the built-in model and default limits (a model load saved); the tests that need
    other options start their own."""
    return shared_server(request)


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def python_predictor():
    from catdog.predict import Predictor

    return Predictor.load(None)


@pytest.fixture(scope="module")
def gpu_browser(playwright, server):
    """Chromium with WebGPU on its SwiftShader adapter; a Chromium that gives no adapter is a missing prerequisite."""
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*BROWSER_ARGS, *WEBGPU_ARGS])
    try:
        page = b.new_page()
        page.goto(server.url + "/healthz")  # a secure context (127.0.0.1): navigator.gpu is there
        adapter = page.evaluate(
            "navigator.gpu ? navigator.gpu.requestAdapter().then(a => a && a.info.architecture) : 'no navigator.gpu'"
        )
        page.close()
        if adapter != "swiftshader":
            missing(f"Chromium at {CHROMIUM} gives no SwiftShader WebGPU adapter with {WEBGPU_ARGS}: {adapter}")
        yield b
    finally:
        b.close()


def phone(browser, playwright, url: str):
    """A Pixel 5 context and a page on ``url`` with the model loaded; page errors are collected in ``page.errors``."""
    # bypass_csp: Playwright's polling (wait_for_function) evaluates strings, which the app's CSP forbids.
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(url)
    page.evaluate("window.catdogApp.ready")
    return context, page


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def answers(page, files: list[Path], timeout_ms: int = 60_000) -> dict[str, dict]:
    """Classify ``files`` in the page: ``{name: prediction or {"error": ...}}``."""
    before = page.locator("#results .card").count()
    page.set_input_files("#file-input", [str(f) for f in files])
    page.wait_for_function(
        f"document.querySelectorAll('#results .card:not([data-state=pending])').length >= {before + len(files)}",
        timeout=timeout_ms,
        polling=200,
    )
    out = {}
    for card in page.locator("#results .card").all()[: len(files)]:
        name = card.locator(".name").inner_text()
        if card.get_attribute("data-state") == "done":
            out[name] = json.loads(card.get_attribute("data-prediction"))
        else:
            out[name] = {"error": card.locator(".error").inner_text()}
    return out


def assert_same(browser_answer: dict, python_answer: dict, tolerance: float = 0.02) -> None:
    assert browser_answer["label"] == python_answer["label"], (browser_answer, python_answer)
    for key, value in python_answer["probabilities"].items():
        assert abs(browser_answer["probabilities"][key] - value) <= tolerance, (key, browser_answer, python_answer)
    assert browser_answer.get("looks_like") == python_answer.get("looks_like")


def test_the_app_answers_as_python_does(
    browser, playwright, server, python_predictor, data_root, samples_dir, tmp_path
):
    """Cat, dog, a horse, a large JPEG (decoded at a reduced scale by Python), a rotated one and a transparent
    PNG on a phone: the same labels, probabilities within 0.02 (all but the large JPEG: within 1e-5). A piebald
    horse the backbone sees as nothing clearly (plow, 0.004) is not said to look like anything, as in Python."""
    horse = data_root / "neither" / "horse" / "inet-n02389026_sorrel.JPEG"
    piebald = data_root / "neither" / "horse" / "popanim-horse_65.png"
    cat = Image.open(samples_dir / "cat" / "cat.1.jpg").convert("RGB")
    large, rotated, transparent = tmp_path / "large.jpg", tmp_path / "rotated.jpg", tmp_path / "transparent.png"
    cat.resize((cat.width * 4, cat.height * 4), Image.Resampling.LANCZOS).save(large, quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    cat.rotate(90, expand=True).save(rotated, exif=exif, quality=95)
    _half_transparent(cat).save(transparent)
    photos = [samples_dir / "cat" / "cat.1.jpg", samples_dir / "dog" / "dog.1.jpg", horse, large, rotated, transparent]
    photos += [samples_dir / "cat" / "cat.18.jpg", piebald]  # cat.18: its shares, rounded alone, added to 100.1 %
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        assert page.evaluate("crossOriginIsolated"), "COOP/COEP headers missing: WebAssembly gets no threads"
        info = page.evaluate("window.catdogApp.info")
        assert info["backend"] == "wasm" and info["lanes"] >= 1 and info["threads"] >= 1
        # This Chromium (--disable-gpu) has navigator.gpu but no adapter: WebAssembly, and no WebGPU failure.
        assert page.evaluate("navigator.gpu.requestAdapter()") is None and info["gpuFailure"] is None
        assert page.locator("#backend").inner_text() == "on-device · WebAssembly"
        got = answers(page, photos)
        expected = python_predictor.predict_batch([(p.name, p) for p in photos])
        for want in expected:
            assert_same(got[want.source], want.to_dict(), tolerance=0.02 if want.source == large.name else 1e-5)
        assert got[horse.name]["label"] == "neither" and got[horse.name]["looks_like"] == "sorrel"
        card = page.locator(f"#results .card:has(.name:text-is('{horse.name}'))")
        assert card.locator(".answer").inner_text() == "No cat or dog"
        assert card.locator(".looks").inner_text().startswith("Looks like: sorrel")
        # In the server page's order: the answer, what it looks like, then the shares (the app put it last).
        lines = card.locator(".body > *").evaluate_all("els => els.map((el) => el.classList[0])")
        assert [line for line in lines if line in ("answer", "looks", "probs")] == ["answer", "looks", "probs"], lines
        assert got[piebald.name]["label"] == "neither" and "looks_like" not in got[piebald.name]
        card = page.locator(f"#results .card:has(.name:text-is('{piebald.name}'))")
        assert card.locator(".answer").inner_text() == "No cat or dog" and card.locator(".looks").is_hidden()
        for shown in page.locator("#results .card .probs").all_inner_texts():  # as on the server's page
            shares = [float(value) for value in re.findall(r"(\d+\.\d)%", shown)]
            assert len(shares) == 3 and round(sum(shares), 1) == 100.0, shown
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the app is {overflow}px wider than the phone's screen"
        shot(page, "test_app_phone")
        assert not page.errors
    finally:
        context.close()


def test_a_card_names_a_neither_photo_by_its_class_s_first_name(browser, playwright, server, data_root) -> None:
    """A model's own ImageNet list may name a class "sorrel, chestnut horse": the app's card gave that whole name
    where the server's page gives its first one. The card says "sorrel", the whole name on hover, as the page does.
    The real model.json, the sorrel's name lengthened; no service worker, so page.route sees its request."""
    horse = data_root / "neither" / "horse" / "inet-n02389026_sorrel.JPEG"

    def longer_name(route) -> None:
        config = route.fetch().json()
        config["imagenet"] = [
            ["sorrel, chestnut horse", means] if name == "sorrel" else [name, means]
            for name, means in config["imagenet"]
        ]
        route.fulfill(json=config)

    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True, service_workers="block")
    try:
        page = context.new_page()
        page.route("**/app/model.json", longer_name)
        page.goto(server.url + "/app/")
        page.evaluate("window.catdogApp.ready")
        assert answers(page, [horse])[horse.name]["looks_like"] == "sorrel, chestnut horse"
        looks = page.locator(f"#results .card:has(.name:text-is('{horse.name}')) .looks")
        assert looks.inner_text() == "Looks like: sorrel — a horse of a brownish orange to light brown color"
        assert looks.get_attribute("title") == "ImageNet class: sorrel, chestnut horse"
    finally:
        context.close()


def test_a_card_shows_a_long_photo_name_whole(browser, playwright, server, tmp_path, cat_photo) -> None:
    """On a phone the app cut a photo's name to one line with an ellipsis: a long name (a camera's, a download's)
    lost all but its first 20 letters, with no way to read the rest. It wraps now, as on the server's page; so
    does the error sentence that quotes it (it ran off the card, and the phone zoomed the whole app out)."""
    long_name = "a_photo_downloaded_from_a_chat_with_a_name_much_longer_than_a_phone_is_wide"
    photo = tmp_path / f"{long_name}.jpg"
    photo.write_bytes(cat_photo.read_bytes())
    unreadable = tmp_path / f"{long_name}_cut.jpg"
    unreadable.write_bytes(b"not a photo")
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        answers(page, [photo, unreadable])
        lines = page.locator("#results .card :is(.name, .error:not([hidden]))")
        assert lines.count() == 3  # two names, one error
        for line in lines.all():
            shown, whole = line.evaluate("(line) => [line.clientWidth, line.scrollWidth]")
            assert whole <= shown, f"{line.inner_text()!r} is {whole} px wide, {shown} px of it shown"
        assert not page.errors
    finally:
        context.close()


# In a page: each share ("neither 99.7%") of the cards' shares that a line break cuts in two.
BROKEN_SHARES = """() => [...document.querySelectorAll('#results .card .probs')].flatMap((probs) => {
    const walker = document.createTreeWalker(probs, NodeFilter.SHOW_TEXT);
    const broken = [];
    while (walker.nextNode()) {
        for (const share of walker.currentNode.data.matchAll(/\\S+ \\d+\\.\\d%/g)) {
            const range = document.createRange();
            range.setStart(walker.currentNode, share.index);
            range.setEnd(walker.currentNode, share.index + share[0].length);
            const lines = new Set([...range.getClientRects()].filter((r) => r.width).map((r) => Math.round(r.top)));
            if (lines.size > 1) broken.push(share[0]);
        }
    }
    return broken;
})"""


def test_a_card_keeps_each_share_on_one_line_on_a_phone(browser, playwright, server, dev_dir, data_root) -> None:
    """On a phone the app's card broke its shares anywhere: "cat 100.0% · dog 0.0% · neither" on one line and "0.0%"
    on the next. Each share is now kept whole (the page's cards too: one helper in shares.js), a line breaking only
    between two."""
    photos = [dev_dir / "cat.1.jpg", data_root / "neither" / "food" / "inet-n07714571_head_cabbage.JPEG"]
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        answers(page, photos)
        assert page.locator("#results .card .probs").first.inner_text().count("%") == 3
        assert page.evaluate(BROKEN_SHARES) == []
        # A trained model's class longer than the line (its folder's name) still wraps, within its share, rather
        # than run out of the card: kept whole on one line, it pushed a 320-px phone's page sideways.
        page.set_viewport_size({"width": 320, "height": 640})
        overflow = page.evaluate("""() => {
            const probs = document.querySelector('#results .card .probs');
            const names = { 'staffordshire bull terrier': 0.5, 'american pit bull terrier': 0.3, neither: 0.2 };
            globalThis.catdogShares.showPercents(probs, names);
            const page = document.documentElement;
            return [probs.scrollWidth - probs.clientWidth, page.scrollWidth - page.clientWidth];
        }""")
        assert overflow == [0, 0], "a long share ran out of its card"
        assert not page.errors
    finally:
        context.close()


@pytest.mark.slow  # about a minute of SwiftShader on 2 cores; the fallback tests below stay in the fast suite
def test_webgpu_answers_as_python_does(gpu_browser, playwright, server, python_predictor, data_root, samples_dir):
    """Where the browser has WebGPU (here SwiftShader's, on the CPU: about 25 s to load, 9 s a photo) the model
    runs on it in one worker: cat, dog and a horse get Python's labels, probabilities within 1e-4 (fp32 on a
    GPU sums in another order than on the CPU; measured here: equal to the answers' 6 decimals). The WebGPU
    runtime, cached by the service worker the first time it is used, loads again offline."""
    horse = data_root / "neither" / "horse" / "inet-n02389026_sorrel.JPEG"
    photos = [samples_dir / "cat" / "cat.1.jpg", samples_dir / "dog" / "dog.1.jpg", horse]
    context, page = phone(gpu_browser, playwright, server.url + "/app/")
    try:
        info = page.evaluate("window.catdogApp.info")
        assert info["backend"] == "webgpu" and info["lanes"] == 1, info
        assert info["adapter"] == "google swiftshader" and info["gpuFailure"] is None, info
        assert page.locator("#backend .where").inner_text() == "on-device · WebGPU"
        assert page.locator("#backend a").get_attribute("href") == "?backend=wasm"
        assert page.locator("#status").inner_text() == "Ready: builtin model on this device (WebGPU)."
        got = answers(page, photos, timeout_ms=300_000)
        for want in python_predictor.predict_batch([(p.name, p) for p in photos]):
            assert_same(got[want.source], want.to_dict(), tolerance=1e-4)
        assert got[horse.name]["looks_like"] == "sorrel"
        shot(page, "test_app_webgpu")

        page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=60_000)
        context.set_offline(True)
        page.reload()
        assert page.evaluate("window.catdogApp.ready")["backend"] == "webgpu"
        assert not page.errors
    finally:
        context.close()


def test_webgpu_failing_falls_back_to_webassembly(gpu_browser, playwright, server, python_predictor, samples_dir):
    """A WebGPU adapter whose session fails (a stand-in runtime throws, as a buggy driver would): the app says
    so and answers in WebAssembly workers. ``?backend=wasm`` skips WebGPU where it works."""
    failing = (
        "export const env = { wasm: {}, webgpu: {} }; export class Tensor {}; export const InferenceSession = "
        "{ create: async () => { throw new Error('no device for this test'); } };"
    )
    cat = samples_dir / "cat" / "cat.5.jpg"
    want = python_predictor.predict_batch([(cat.name, cat)])[0].to_dict()
    context, page = phone(gpu_browser, playwright, server.url + "/app/?backend=wasm")
    try:
        assert page.evaluate("window.catdogApp.info")["backend"] == "wasm"
        assert page.locator("#backend .where").inner_text() == "on-device · WebAssembly"
        assert page.locator("#backend a").inner_text() == "use WebGPU if available"
        assert_same(answers(page, [cat])[cat.name], want, tolerance=1e-5)
    finally:
        context.close()

    context = stand_in_gpu_runtime(gpu_browser, playwright, failing)
    try:
        page = context.new_page()
        page.goto(server.url + "/app/")
        info = page.evaluate("window.catdogApp.ready")
        assert info["backend"] == "wasm" and info["gpuFailure"] == "no device for this test", info
        assert page.locator("#backend .where").inner_text() == "on-device · WebAssembly (WebGPU failed)"
        assert page.locator("#backend").get_attribute("title") == "WebGPU failed: no device for this test"
        assert_same(answers(page, [cat])[cat.name], want, tolerance=1e-5)

        # The failure is not remembered for good: the page offers WebGPU again, and a reload tries it.
        retry = page.locator("#backend a")
        assert retry.inner_text() == "try WebGPU again" and retry.is_visible()
        tries = len(context.webgpu_loads)
        retry.click()
        page.wait_for_load_state()
        info = page.evaluate("window.catdogApp.ready")
        assert len(context.webgpu_loads) > tries, "the reload did not try WebGPU"
        assert info["backend"] == "wasm" and info["gpuFailure"] == "no device for this test", info
    finally:
        context.close()


def stand_in_gpu_runtime(gpu_browser, playwright, runtime: str):
    """A context whose WebGPU runtime is ``runtime`` (JavaScript), as a driver that misbehaves would make it.

    No service worker: Playwright's route then sees the worker's request for the WebGPU runtime.
    """
    context = gpu_browser.new_context(**playwright.devices[PHONE], bypass_csp=True, service_workers="block")
    context.webgpu_loads = []  # one entry each time a worker loads the WebGPU runtime

    def fulfill(route):
        context.webgpu_loads.append(route.request.url)
        route.fulfill(body=runtime, content_type="text/javascript")

    context.route("**/vendor/ort.webgpu.min.mjs", fulfill)
    return context


def test_webgpu_that_never_finishes_loading_gives_way_to_webassembly(
    gpu_browser, playwright, server, python_predictor, samples_dir
):
    """A GPU whose session never comes (a hung driver): after ``?gpu-timeout`` seconds the app loads the model in
    WebAssembly, says why, and answers as Python does."""
    hanging = (
        "export const env = { wasm: {}, webgpu: {} }; export class Tensor {}; "
        "export const InferenceSession = { create: () => new Promise(() => {}) };"
    )
    cat = samples_dir / "cat" / "cat.5.jpg"
    want = python_predictor.predict_batch([(cat.name, cat)])[0].to_dict()
    context = stand_in_gpu_runtime(gpu_browser, playwright, hanging)
    try:
        page = context.new_page()
        page.goto(server.url + "/app/?gpu-timeout=2")
        info = page.evaluate("window.catdogApp.ready")
        assert info["backend"] == "wasm", info
        assert info["gpuFailure"] == "the GPU took more than 2 s to prepare the model", info
        assert page.locator("#backend .where").inner_text() == "on-device · WebAssembly (WebGPU failed)"
        # Trying again keeps the address's other settings.
        assert page.locator("#backend a").get_attribute("href") == "?gpu-timeout=2"
        assert_same(answers(page, [cat])[cat.name], want, tolerance=1e-5)
    finally:
        context.close()


def test_webgpu_lost_while_answering_hands_the_photos_to_webassembly(
    gpu_browser, playwright, server, python_predictor, samples_dir
):
    """A GPU that loads the model and then fails on the photos (a lost device): both photos asked of it are
    answered in WebAssembly, as Python answers them, and the page says that WebGPU failed."""
    lost_after_loading = (
        "export const env = { wasm: {}, webgpu: {} }; "
        "export class Tensor { constructor(type, data) { this.data = data; } } "
        "let runs = 0; "
        "export const InferenceSession = { create: async () => ({ inputNames: ['input'], outputNames: ['logits'], "
        "run: async () => { if (++runs > 1) throw new Error('the GPU device was lost'); "
        "return { logits: { data: new Float32Array([0, 0]) } }; } }) };"
    )
    photos = [samples_dir / "cat" / "cat.5.jpg", samples_dir / "dog" / "dog.1.jpg"]
    want = {p.source: p.to_dict() for p in python_predictor.predict_batch([(p.name, p) for p in photos])}
    context = stand_in_gpu_runtime(gpu_browser, playwright, lost_after_loading)
    try:
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda err: page.errors.append(str(err)))
        page.goto(server.url + "/app/")
        assert page.evaluate("window.catdogApp.ready")["backend"] == "webgpu"  # the stand-in's warm-up run worked
        got = answers(page, photos)
        for photo in photos:
            assert_same(got[photo.name], want[photo.name], tolerance=1e-5)
        info = page.evaluate("window.catdogApp.info")
        assert info["backend"] == "wasm" and info["gpuFailure"] == "the GPU device was lost", info
        assert page.locator("#backend .where").inner_text() == "on-device · WebAssembly (WebGPU failed)"
        assert page.locator("#status").inner_text().startswith("Ready: builtin model on this device (WebAssembly")
        assert not page.errors
    finally:
        context.close()


def _half_transparent(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    rgba.putalpha(128)
    return rgba


def server_sentence(photo: Path) -> str:
    """What catdog.images says of ``photo``, which it cannot use, naming it by its name as the app does."""
    with pytest.raises(ImageError) as said:
        decode(photo)
    return str(said.value).replace(str(photo), photo.name)


def test_a_file_that_is_not_a_photo_gets_one_sentence(browser, playwright, server, tmp_path, cat_photo):
    """A text file chosen as a photo was "not an image the app can read (it reads JPEG, …)" in the app and "not an
    image: its content is text" on the server's page: the app now says the page's sentence (catdog.images'). Its
    card has the page's headline, "Not classified", over the sentence (the sentence was the headline)."""
    broken, page_source = tmp_path / "holiday.jpg", tmp_path / "saved.jpg"
    broken.write_bytes(b"this is not really a photo")
    page_source.write_bytes(b"<!doctype html><html><body>a saved page</body></html>")
    cut, empty = tmp_path / "cut.jpg", tmp_path / "empty.jpg"
    cut.write_bytes(cat_photo.read_bytes()[:600])
    empty.write_bytes(b"")
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        said = answers(page, [broken, page_source])
        for photo in (broken, page_source):
            assert said[photo.name]["error"] == server_sentence(photo), said
        assert page.locator("#results .card[data-state=error] .answer").all_inner_texts() == ["Not classified"] * 2
        # What catdog predict says of them too (it once called a cut JPEG "not an image this browser can read").
        said = answers(page, [cut, empty])
        assert said["cut.jpg"]["error"].startswith("'cut.jpg' is truncated or corrupt"), said
        assert said["empty.jpg"]["error"] == "'empty.jpg' is empty (0 bytes).", said
        # Said once, by the batch's summary: a card is no live region (test_a_screen_reader_hears_each_answer_once).
        # Each sentence names its photo, so it is said as it is ("cut.jpg: 'cut.jpg' is..." said the name twice).
        page.wait_for_function("document.getElementById('announce').textContent.startsWith(\"'cut.jpg' is \")")
        assert page.locator("#results .card[data-state=error]").count() == 4
        # A batch is listed in the order chosen, above the one before (each card was put first).
        names = page.locator("#results .card .name").all_inner_texts()
        assert names == ["cut.jpg", "empty.jpg", "holiday.jpg", "saved.jpg"], names
    finally:
        context.close()


def test_text_svg_and_xml_are_worded_as_the_server_words_them(browser, playwright, server, tmp_path) -> None:
    """The app called any UTF-8 file "text", an SVG drawing (which "Choose photos" offers as an image) and an XML
    file too, where catdog.images calls them an SVG file and XML; and a Japanese note, cut by the 64 bytes looked
    at inside a character, was text to neither. Each is now worded as the server's page words it (an SVG too:
    test_psd_ico_tiff_and_heic_are_named_as_the_server_names_them)."""
    note, drawing, feed = tmp_path / "note.jpg", tmp_path / "drawing.svg", tmp_path / "feed.jpg"
    note.write_bytes(("猫と犬の写真についてのメモです。" * 5).encode())
    drawing.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9" height="9"/></svg>'
    )
    feed.write_text('<?xml version="1.0"?><feed><title>Cats</title></feed>')
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        said = answers(page, [note, drawing, feed])
        for photo in (note, feed):
            assert said[photo.name]["error"] == server_sentence(photo), said
        assert said["note.jpg"]["error"] == "'note.jpg' is not an image: its content is text.", said
        unread = "'drawing.svg' is an SVG file, an unsupported format; use JPEG, PNG, WebP, GIF, BMP or AVIF."
        assert said["drawing.svg"]["error"] == unread, said
    finally:
        context.close()


def test_psd_ico_tiff_and_heic_are_named_as_the_server_names_them(browser, playwright, server, tmp_path, cat_photo):
    """The server names a PSD, an ICO or an SVG ("'x' is a PSD file, an unsupported format; use ..."); the app said
    "not an image the app can read (it reads JPEG, ...)" of each, and of a TIFF or a phone's HEIC, which catdog
    predict reads and a browser does not. Each is named now, in the server's words, with the app's own formats;
    a TIFF and a HEIC say where they are read."""
    cat = Image.open(cat_photo)
    files = {
        "layers.psd": b"8BPS" + bytes(60),  # test_serve's PSD (Pillow writes none)
        "favicon.ico": encode(cat.resize((64, 64)), "ICO"),
        "scan.tif": encode(cat, "TIFF"),
        "IMG_0001.HEIC": encode(cat, "HEIF"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    use = "use JPEG, PNG, WebP, GIF, BMP or AVIF"
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        said = answers(page, [tmp_path / name for name in files])
        for name in ("layers.psd", "favicon.ico"):
            by_server = server_sentence(tmp_path / name)
            assert by_server.startswith(said[name]["error"].removesuffix(f"{use}.")), (by_server, said)
        assert said["layers.psd"]["error"] == f"'layers.psd' is a PSD file, an unsupported format; {use}.", said
        assert said["favicon.ico"]["error"] == f"'favicon.ico' is an ICO file, an unsupported format; {use}.", said
        for name, kind in (("scan.tif", "a TIFF"), ("IMG_0001.HEIC", "a HEIC")):
            assert said[name]["error"] == (
                f"'{name}' is {kind} file, which this app cannot read; {use}, or the server's page "
                "(catdog serve), which reads it."
            ), said
        assert not page.errors
    finally:
        context.close()


def test_a_heic_whose_ftyp_box_is_256_bytes_is_no_ico(browser, playwright, server, tmp_path, cat_photo) -> None:
    """An ftyp box of 256 bytes (a HEIC or an AVIF with many compatible brands) starts with 00 00 01 00, an ICO's
    signature: the app looked for an ICO before the brands and called such a photo "an ICO file", where
    catdog.images (which looks at the brands first) calls it a HEIF. The app looks in sniff_format's order now."""
    heic = encode(Image.open(cat_photo), "HEIF")
    size = struct.unpack(">I", heic[:4])[0]
    assert heic[4:8] == b"ftyp" and size < 256
    padded = struct.pack(">I", 256) + heic[4:size] + b"mif1" * ((256 - size) // 4) + heic[size:]
    assert padded.startswith(b"\x00\x00\x01\x00") and sniff_format(padded[:64]) == "HEIF"
    (tmp_path / "IMG_0002.HEIC").write_bytes(padded)
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        said = answers(page, [tmp_path / "IMG_0002.HEIC"])
        assert said["IMG_0002.HEIC"]["error"].startswith("'IMG_0002.HEIC' is a HEIC file,"), said
    finally:
        context.close()


def test_a_pdf_zip_or_gzip_is_worded_as_the_server_words_it(browser, playwright, server, tmp_path, cat_photo) -> None:
    """A PDF, a ZIP or a GZIP chosen as a photo was "not an image the app can read (it reads JPEG, …)" in the app,
    where the server says "its content is PDF": the app now says the server's sentence (catdog.images')."""
    scan, archive, packed = tmp_path / "scan.jpg", tmp_path / "photos.jpg", tmp_path / "cat.jpg.gz"
    Image.open(cat_photo).save(scan, "PDF")  # a photo saved as a PDF, as a scanner does
    with zipfile.ZipFile(archive, "w") as z:
        z.write(cat_photo, "cat.jpg")
    packed.write_bytes(gzip.compress(cat_photo.read_bytes()))
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        said = answers(page, [scan, archive, packed])
        for photo, content in ((scan, "PDF"), (archive, "ZIP"), (packed, "GZIP")):
            sentence = f"'{photo.name}' is not an image: its content is {content}."
            assert (said[photo.name]["error"], server_sentence(photo)) == (sentence, sentence), said
    finally:
        context.close()


def test_clear_results_empties_the_app_as_it_does_the_page(browser, playwright, server, cat_photo) -> None:
    """The app had no "Clear results" (the server's page has): a phone's list of answered photos only grew. It now
    has one, shown once there is something to clear; it says "Results cleared.", hands the keyboard focus to
    Choose photos, and a batch cleared before it is answered is not announced after."""
    context, page = held_phone(browser, playwright, server)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        clear = page.locator("#clear")
        assert clear.is_hidden()
        answers(page, [cat_photo])
        clear.focus()
        page.keyboard.press("Enter")
        assert page.locator("#results .card").count() == 0 and clear.is_hidden()
        assert page.evaluate("document.activeElement.id") == "file-input"
        page.wait_for_function("document.getElementById('announce').textContent === 'Results cleared.'")

        # Cleared while its answer is held: on a fast machine it was answered before the click, and the test
        # passed without the rule it checks.
        page.evaluate("window.held.answers = []")
        page.set_input_files("#file-input", [str(cat_photo)])
        page.wait_for_function("window.held.answers.length >= 1", timeout=30_000, polling=100)
        clear.click()
        page.evaluate("window.handOn('answers', false)")
        page.wait_for_function("window.catdogApp.timings.length === 2", timeout=30_000)
        page.wait_for_timeout(300)  # the batch's summary would be in by now
        assert page.locator("#announce").text_content() == "Results cleared."
        assert page.locator("#results .card").count() == 0
        assert not errors
    finally:
        context.close()


# Run in the app's workers: counts the photos the browser is asked to decode (camera frames are not Blobs).
COUNT_DECODES = """() => {
    self.decoded = 0;
    const decode = self.createImageBitmap;
    self.createImageBitmap = (source, ...rest) => {
        if (source instanceof Blob) self.decoded += 1;
        return decode(source, ...rest);
    };
}"""


def counting_decodes(page):
    """COUNT_DECODES in each of the app's workers; returns a function giving how many Blobs they decoded since."""
    for worker in page.workers:
        worker.evaluate(COUNT_DECODES)
    return lambda: sum(worker.evaluate("self.decoded") for worker in page.workers)


def test_clear_results_drops_the_photos_still_queued(browser, playwright, server, tmp_path, cat_photo) -> None:
    """ "Clear results" emptied the list, but the photos still queued in the workers were computed all the same and
    their answers dropped: a phone's battery spent on cards no longer shown. Those not yet started are dropped
    now; a photo chosen after the clear is answered as usual."""
    photos = []
    for i in range(24):
        photos.append(tmp_path / f"cat{i}.jpg")
        shutil.copy(cat_photo, photos[-1])
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        page.evaluate("window.catdogApp.allLanes")
        decoded = counting_decodes(page)
        page.set_input_files("#file-input", [str(p) for p in photos])
        page.wait_for_function("window.catdogApp.timings.length >= 1", timeout=60_000, polling=50)
        page.click("#clear")
        cleared_at = page.evaluate("window.catdogApp.timings.length")
        # One more photo, after the clear: its lane answers in order, so it has done (or dropped) what it was given,
        # and the lanes were given as many each.
        assert answers(page, [cat_photo])["cat.1.jpg"]["label"] == "cat"
        # Computed: those answered before the clear, one a lane at most in progress at it or started since, the new.
        lanes = len(page.workers)
        assert decoded() <= cleared_at + 2 * lanes + 1 < len(photos) - 2 * lanes, (decoded(), cleared_at, lanes)
        assert not page.errors, page.errors
    finally:
        context.close()


def test_clear_results_drops_the_photos_chosen_while_the_model_loads(browser, playwright, server, tmp_path, cat_photo):
    """Photos chosen while the model still loaded waited for it outside the workers, so "Clear results" (which tells
    the workers) missed them: cleared, all were computed once the model came. The model's model.json is held until
    after the clear; then none of them is computed, and a photo chosen after is answered."""
    photos = []
    for i in range(6):
        photos.append(tmp_path / f"cat{i}.jpg")
        shutil.copy(cat_photo, photos[-1])
    # No service worker: its own requests for the app's files are not the page's, and page.route sees only these.
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True, service_workers="block")
    try:
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda err: page.errors.append(str(err)))
        held: list = []
        page.route("**/app/model.json", lambda route: held.append(route))  # answered after the clear
        page.goto(server.url + "/app/")
        page.set_input_files("#file-input", [str(p) for p in photos])
        page.click("#clear")
        while not held:
            page.wait_for_timeout(50)
        held[0].continue_()
        page.evaluate("window.catdogApp.ready")
        # Timings: one a photo computed, its card shown or not (the cleared ones were asked first, as the model came).
        assert answers(page, [cat_photo])["cat.1.jpg"]["label"] == "cat"
        computed = page.evaluate("window.catdogApp.timings.length")
        assert computed == 1, f"{computed} photos computed: those cleared before the model came, and the new one"
        assert page.locator("#results .card").count() == 1
        assert not page.errors, page.errors
    finally:
        context.close()


def test_a_photo_over_the_limit_is_refused_before_it_is_decoded(browser, playwright, server, tmp_path, cat_photo):
    """A phone's 200-MP photo (16320x12240, 800 MB decoded) was decoded whole before the app's 40-MP check, which a
    phone's tab may not survive. A JPEG and a PNG that size (valid files of one colour, 1.7 MB and 0.6 MB) are now
    refused from their headers with the app's sentence, the browser never asked to decode them; others still are."""
    jpeg, png = tmp_path / "200mp.jpg", tmp_path / "200mp.png"
    # Before its frame header, what a camera puts there: EXIF (turned 90 degrees), a thumbnail with a frame header
    # of its own (not the photo's size), 1.3 MB of maker notes (more than the app reads of a file at once).
    exif = Image.Exif()
    exif[0x0112] = 6
    segments = [(0xE1, exif.tobytes()), (0xE2, encode(photo_like(), "JPEG"))] + [(0xEF, bytes(65_000))] * 20
    camera = b"".join(bytes([0xFF, marker]) + struct.pack(">H", len(data) + 2) + data for marker, data in segments)
    grey = many_scans_jpeg(16320, 12240, scans=1)
    jpeg.write_bytes(grey[:2] + camera + grey[2:])
    png.write_bytes(png_bomb(16320, 12240, rows=12240))  # every row there: a whole image
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        decoded = counting_decodes(page)
        said = answers(page, [jpeg, png])
        for name in (jpeg.name, png.name):
            assert said[name] == {"error": f"'{name}' has 199.8 megapixels, over the 40 megapixel limit."}, said
        assert decoded() == 0
        assert answers(page, [cat_photo])[cat_photo.name]["label"] == "cat"
        assert decoded() == 1  # the spy sees a decode
        assert not page.errors
    finally:
        context.close()


def test_other_formats_over_the_limit_are_refused_before_they_are_decoded(
    browser, playwright, server, tmp_path, cat_photo
):
    """Only a JPEG's and a PNG's size was read before decoding: a 48-MP WebP, GIF, BMP or AVIF was decoded whole
    first. Each way these formats give their size is read now: WebP's three kinds of first chunk, a GIF's screen
    and first frame (a screen of 10x10 whose frame is 8000x6000 Chromium draws 8000x6000), a BMP's DIB header, an
    AVIF's ispe. None of the large ones is decoded; the cat photo in each is; a format whose header the app cannot
    size (ICO, which Chromium decodes) is refused without decoding."""
    big, small = Image.new("RGB", (8000, 6000), "gray"), Image.open(cat_photo)
    exif = Image.Exif()
    exif[0x0112] = 1
    kinds = {
        "vp8.webp": ("WEBP", "RGB", {"method": 0}),
        "vp8l.webp": ("WEBP", "RGB", {"lossless": True}),
        "vp8x.webp": ("WEBP", "RGB", {"lossless": True, "exif": exif.tobytes()}),  # metadata: the extended header
        "screen.gif": ("GIF", "P", {}),
        "core.bmp": ("BMP", "1", {}),  # 1 bit a pixel: 6 MB at 48 MP
        "photo.avif": ("AVIF", "RGB", {"speed": 10}),
    }
    for name, (fmt, mode, options) in kinds.items():
        (tmp_path / name).write_bytes(encode(big.convert(mode), fmt, **options))
        (tmp_path / f"small-{name}").write_bytes(encode(small.convert(mode), fmt, **options))
    gif = bytearray((tmp_path / "screen.gif").read_bytes())
    gif[6:10] = struct.pack("<HH", 10, 10)  # the logical screen; the frame stays 8000x6000
    (tmp_path / "frame.gif").write_bytes(gif)
    small.resize((64, 64)).save(tmp_path / "icon.ico")
    large = [tmp_path / name for name in [*kinds, "frame.gif"]]
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        decoded = counting_decodes(page)
        said = answers(page, large)
        for photo in large:
            assert said[photo.name] == {"error": f"'{photo.name}' has 48.0 megapixels, over the 40 megapixel limit."}
        assert decoded() == 0
        said = answers(page, [tmp_path / "icon.ico"])
        assert said == {"icon.ico": {"error": "'icon.ico' is an ICO file, an unsupported format; use JPEG, PNG, "
                                              "WebP, GIF, BMP or AVIF."}}  # fmt: skip
        assert decoded() == 0
        said = answers(page, [tmp_path / f"small-{name}" for name in kinds])
        assert all("label" in answer for answer in said.values()), said
        assert decoded() == len(kinds)
        assert not page.errors
    finally:
        context.close()


def test_a_jpeg_with_stray_bytes_between_its_segments_is_answered(browser, playwright, server, tmp_path, cat_photo):
    """Bytes between two segments of a JPEG (libjpeg warns "extraneous bytes before marker" and skips them, as
    Pillow does: catdog predict answers it) made the app's header reader give up, and since the app refuses a photo
    whose header gives no size, it called the photo corrupt. The reader skips them now, as the decoders do."""
    data = cat_photo.read_bytes()
    after_app0 = 4 + struct.unpack(">H", data[4:6])[0]  # SOI, then the first segment: its marker and length
    stray = tmp_path / "stray.jpg"
    stray.write_bytes(data[:after_app0] + b"\x00\x12\x34" + data[after_app0:])
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        said = answers(page, [stray])
        assert said["stray.jpg"].get("label") == "cat", said
        assert not page.errors
    finally:
        context.close()


def test_a_cut_avif_is_called_an_avif_file(browser, playwright, server, tmp_path, cat_photo):
    """The sentence for a file the browser cannot decode names its kind with "a": "a AVIF file" (since the app
    learnt AVIF's signature). An AVIF cut short, its header whole, gets "an AVIF file".

    So does one whose ftyp box names the generic HEIF brand first (mif1) and AVIF among its compatible brands, as
    some encoders write it: the header reader sized it, but the sentence looked at the first brand only and called
    it "not an image the app can read (it reads ... AVIF)". Whole, that file is answered."""
    data = encode(Image.open(cat_photo), "AVIF", speed=10)
    assert data[4:12] == b"ftypavif" and b"mif1" in data[16:32]  # Pillow's brands: avif, then avif mif1 miaf ...
    generic = data[:8] + b"mif1" + data[12:]  # the first brand mif1; avif stays among the compatible ones
    cut, cut_generic, whole_generic = tmp_path / "cut.avif", tmp_path / "cut-mif1.avif", tmp_path / "mif1.avif"
    cut.write_bytes(data[: len(data) * 2 // 3])  # the header (ftyp, meta) whole, the image data cut
    cut_generic.write_bytes(generic[: len(generic) * 2 // 3])
    whole_generic.write_bytes(generic)
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        said = answers(page, [cut, cut_generic])
        for name in (cut.name, cut_generic.name):
            assert said[name] == {"error": f"'{name}' is truncated or corrupt (an AVIF file this browser cannot "
                                           "decode)."}, said  # fmt: skip
        assert answers(page, [whole_generic])[whole_generic.name].get("label") == "cat"
        assert not page.errors
    finally:
        context.close()


def test_installable_manifest_and_service_worker(browser, playwright, server):
    manifest_response = httpx.get(server.url + "/app/manifest.webmanifest")
    assert manifest_response.headers["content-type"].startswith("application/manifest+json")
    manifest = manifest_response.json()
    assert manifest["display"] == "standalone" and manifest["start_url"] == "./" and manifest["short_name"]
    sizes = set()
    for icon in manifest["icons"]:
        response = httpx.get(server.url + "/app/" + icon["src"])
        assert response.status_code == 200, icon
        if icon["type"] == "image/png":
            import io

            picture = Image.open(io.BytesIO(response.content))
            width, height = picture.size
            assert f"{width}x{height}" == icon["sizes"]
            sizes.add(width)
            if "maskable" in icon.get("purpose", ""):  # a launcher cuts it to its own shape: no transparent corner
                assert picture.convert("RGBA").getchannel("A").getextrema() == (255, 255), icon
    assert {192, 512} <= sizes, "Chromium installs an app with 192 and 512 px icons"
    assert any("maskable" in icon.get("purpose", "") for icon in manifest["icons"])
    # No "id": the app's identity is then its start_url, where it is served (an id of "./" is resolved
    # against the origin, so every catdog app on one host would be one app).
    assert "id" not in manifest
    page_response = httpx.get(server.url + "/app/")
    assert page_response.headers["cross-origin-opener-policy"] == "same-origin"
    redirect = httpx.get(server.url + "/app?backend=wasm")  # the address the docs give keeps its query
    assert redirect.status_code == 308 and str(redirect.next_request.url) == server.url + "/app/?backend=wasm"
    assert httpx.head(server.url + "/app").status_code == 308
    assert page_response.headers["cross-origin-embedder-policy"] == "require-corp"
    sw = httpx.get(server.url + "/app/sw.js").text
    assert "__VERSION__" not in sw and "__FILES__" not in sw and "__ON_USE__" not in sw and '"model.onnx"' in sw

    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        assert page.locator("link[rel=manifest]").get_attribute("href") == "manifest.webmanifest"
        scope = page.evaluate("navigator.serviceWorker.ready.then(r => r.active && r.scope)")
        assert scope == server.url + "/app/"
    finally:
        context.close()


def test_chromium_finds_the_app_installable(playwright, server, tmp_path):
    """Chromium's own installability check (what its "Install app" needs): no errors, a valid manifest.

    A persistent profile: Playwright's usual contexts are incognito, where nothing is installable.
    """
    device = {k: v for k, v in playwright.devices[PHONE].items() if k != "default_browser_type"}
    context = playwright.chromium.launch_persistent_context(
        tmp_path / "profile", executable_path=str(CHROMIUM), args=BROWSER_ARGS, bypass_csp=True, **device
    )
    try:
        page = context.new_page()
        page.goto(server.url + "/app/")
        page.evaluate("window.catdogApp.ready")
        page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=60_000)
        cdp = context.new_cdp_session(page)
        assert cdp.send("Page.getInstallabilityErrors")["installabilityErrors"] == []
        manifest = cdp.send("Page.getAppManifest")
        assert manifest["errors"] == [] and manifest["url"] == server.url + "/app/manifest.webmanifest"
    finally:
        context.close()


def _requests_served(server: Server) -> dict[str, float]:
    """Requests the server has answered by route, but for /metrics (this counting) and the service worker's script."""
    from prometheus_client.parser import text_string_to_metric_families

    total: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        for s in family.samples:
            route = s.labels.get("route")
            # The browser itself checks sw.js for an update after a registration or navigation (Chromium's
            # offline emulation does not cover that check; on a phone without network it simply fails).
            if s.name == "catdog_http_requests_total" and route not in ("/metrics", "/app/sw.js"):
                total[route] = total.get(route, 0) + s.value
    return total


def test_offline_after_the_first_visit_and_no_request_after_load(browser, playwright, server, samples_dir):
    """Once loaded, the app sends nothing: photos are answered with the network off, from the cache."""
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=60_000)
        before = _requests_served(server)
        cat = samples_dir / "cat" / "cat.2.jpg"
        assert answers(page, [cat])[cat.name]["label"] == "cat"
        assert _requests_served(server) == before, "the app asked the server for something after it had loaded"

        context.set_offline(True)
        page.reload()
        page.evaluate("window.catdogApp.ready")
        dog = samples_dir / "dog" / "dog.2.jpg"
        assert answers(page, [dog])[dog.name]["label"] == "dog"
        assert page.evaluate("navigator.onLine") is False
        assert _requests_served(server) == before, "offline, yet the server saw requests"
        assert not page.errors
    finally:
        context.close()


@pytest.mark.parametrize("label", ["cat", "dog", "neither"])
def test_camera_frames_get_the_right_answer(playwright, server, dev_dir, data_root, tmp_path, label):
    """Chromium's fake camera streams a video of one dev photo: every frame answered gets its label. A horse's
    frames are `neither`, and what it looks like has its own line, as on the server's page (the app put "looks
    like: sorrel" in the fps line). Only the answer is a live region, its percentage beside it."""
    horse = data_root / "neither" / "horse" / "inet-n02389026_sorrel.JPEG"
    photo = horse if label == "neither" else dev_dir / f"{label}.1.jpg"
    video = write_y4m(photo, tmp_path / f"{label}.y4m")
    b = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*BROWSER_ARGS, f"--use-file-for-fake-video-capture={video}"]
    )
    try:
        context, page = phone(b, playwright, server.url + "/app/")
        context.grant_permissions(["camera"], origin=server.url)
        page.click("#camera-start")
        page.wait_for_function("window.catdogApp.frames.length >= 20", timeout=60_000, polling=250)
        labels = page.evaluate("window.catdogApp.frames.map(f => f.label)")
        assert labels.count(label) == len(labels), labels
        headline = "No cat or dog" if label == "neither" else f"{label} · "
        assert page.locator("#live-answer").inner_text().startswith(headline)
        # The live region holds the answer alone: with its percentage, a screen reader said again each frame
        # whose percentage moved ("cat 87%", "cat 88%"…), several times a second.
        assert page.locator("#live-label").inner_text() == ("No cat or dog" if label == "neither" else label)
        info = page.locator("#live-info").inner_text()
        assert " fps · model " in info and float(page.locator("#live-info").get_attribute("data-fps")) > 0
        assert "looks like" not in info.lower(), info
        looks = page.locator("#live-looks")
        if label == "neither":
            assert looks.inner_text() == "Looks like: sorrel — a horse of a brownish orange to light brown color"
        else:
            assert looks.is_hidden()
        assert page.evaluate("document.getElementById('video').videoWidth") == 640
        shot(page, f"test_app_camera_{label}")
        page.click("#camera-stop")
        assert page.evaluate("document.getElementById('video').srcObject") is None
        assert not page.errors
    finally:
        b.close()


@pytest.mark.slow  # a browser and the model each: the default suite stays near 10 minutes
def test_a_camera_taken_away_or_in_the_background_stops(playwright, server, dev_dir, tmp_path):
    """A camera the system ends (another app takes it; iOS in the background) once went on answering "No cat or
    dog" on black frames; now it stops with a sentence. In the background the app lets the camera go (its light
    off, the model idle) and takes it again on return."""
    video = write_y4m(dev_dir / "cat.1.jpg", tmp_path / "cat.y4m")
    b = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*BROWSER_ARGS, f"--use-file-for-fake-video-capture={video}"]
    )
    stream = "document.getElementById('video').srcObject"
    try:
        context, page = phone(b, playwright, server.url + "/app/")
        context.grant_permissions(["camera"], origin=server.url)
        page.click("#camera-start")
        page.wait_for_function("window.catdogApp.frames.length >= 3", timeout=60_000, polling=250)

        page.evaluate(SET_HIDDEN, True)  # the user switches app
        assert page.evaluate(f"{stream} === null") and page.locator("#camera-start").is_visible()
        page.evaluate(SET_HIDDEN, False)
        page.locator("#camera-stop").wait_for(state="visible", timeout=30_000)  # taken again, and answering
        page.wait_for_function("window.catdogApp.frames.length >= 3", timeout=30_000, polling=250)

        page.evaluate(f"{stream}.getVideoTracks()[0].dispatchEvent(new Event('ended'))")  # taken by the system
        assert page.locator("#camera-error").inner_text() == CAMERA_ENDED  # the server's page's sentence
        assert page.evaluate(f"{stream} === null") and page.locator("#camera-start").is_visible()
        frames = page.evaluate("window.catdogApp.frames.length")
        page.wait_for_timeout(1000)
        assert page.evaluate("window.catdogApp.frames.length") == frames  # no answer after the camera ended
        assert not page.errors
    finally:
        b.close()


def test_a_photo_or_the_camera_waiting_for_an_answer_says_so(browser, playwright, server, cat_photo) -> None:
    """A photo chosen while the model still downloaded showed "…" under its name, and the camera "…" alone until
    its first answer: nothing said what was awaited. As on the server's page, a card says "Classifying…" and the
    camera "Camera on: classifying the first frame…". model.json is held to keep the photo waiting."""
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True, service_workers="block")
    try:
        page = context.new_page()
        held: list = []
        page.route("**/app/model.json", lambda route: held.append(route))
        page.goto(server.url + "/app/")
        page.set_input_files("#file-input", [str(cat_photo)])
        assert page.locator("#results .card .answer").inner_text() == "Classifying…"
        while not held:
            page.wait_for_timeout(50)
        held[0].continue_()
        page.evaluate("window.catdogApp.ready")
        page.evaluate(
            """() => { window.infoLines = []; const info = document.getElementById('live-info');
            new MutationObserver(() => window.infoLines.push(info.textContent))
                .observe(info, { childList: true, characterData: true, subtree: true }); }"""
        )
        page.click("#camera-start")
        page.wait_for_function("window.catdogApp.frames.length >= 1", timeout=60_000, polling=100)
        page.click("#camera-stop")
        assert page.evaluate("window.infoLines")[0] == "Camera on: classifying the first frame…"
    finally:
        context.close()


def test_the_first_camera_answer_gives_no_rate_of_0_fps(browser, playwright, server) -> None:
    """A rate needs two answers: under the first camera answer the app said "0.0 fps", which on a phone read as a
    camera that does not work. The first answer's line gives the model's and preprocessing's times alone; the next
    ones the rate before them. Every text of the line, from the Start, is recorded."""
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        page.evaluate(
            """() => { window.infoLines = []; const info = document.getElementById('live-info');
            new MutationObserver(() => info.textContent && window.infoLines.push(info.textContent))
                .observe(info, { childList: true, characterData: true, subtree: true }); }"""
        )
        page.click("#camera-start")
        page.wait_for_function("window.catdogApp.frames.length >= 3", timeout=60_000, polling=100)
        page.click("#camera-stop")
        lines = page.evaluate("window.infoLines")[1:]  # after "Camera on: classifying the first frame…"
        assert re.fullmatch(r"model \d+ ms · preprocessing \d+ ms", lines[0]), lines
        assert all(re.fullmatch(r"\d+\.\d fps · model \d+ ms · preprocessing \d+ ms", line) for line in lines[1:])
        assert not any(line.startswith("0.0 fps") for line in lines), lines
    finally:
        context.close()


def test_start_clicked_twice_while_the_camera_starts_opens_one_stream(browser, playwright, server) -> None:
    """Start clicked again while the browser was still asking for the camera asked for a second stream; the first
    was never stopped, so the camera stayed on after Stop. A click while the camera starts now does nothing."""
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        page.evaluate(RECORD_STREAMS)  # every stream the app is given, to see which are still live after Stop
        # Both clicks before the browser answers the first: a user's double tap on a slow permission prompt.
        page.locator("#camera-start").evaluate("button => { button.click(); button.click(); }")
        page.locator("#camera-stop").wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(500)  # a second stream, if one was asked for, comes by now
        asked = page.evaluate("window.streams.length")
        page.click("#camera-stop")
        assert (asked, page.evaluate(LIVE_STREAMS)) == (1, 0), "camera streams asked for, and still live after Stop"
        assert not page.errors
    finally:
        context.close()


def test_the_camera_let_go_or_ended_leaves_the_keyboard_focus_where_it_was(browser, playwright, server) -> None:
    """The app moved the keyboard focus to Stop whenever the camera started: taken again as the app came back
    from the background, it jumped from wherever the person was (a screen reader then read Stop camera). And Stop,
    focused and hidden as the system ended the camera, dropped the focus to the page. As on the server's page,
    only a focus on the button that goes moves on to the other one now."""
    context, page = phone(browser, playwright, server.url + "/app/")
    focused = "document.activeElement.id"
    try:
        page.focus("#camera-start")
        page.keyboard.press("Enter")
        page.locator("#camera-stop").wait_for(state="visible", timeout=30_000)
        assert page.evaluate(focused) == "camera-stop"  # the keyboard goes on from Stop

        page.focus("#file-input")
        page.evaluate(SET_HIDDEN, True)
        page.evaluate(SET_HIDDEN, False)
        page.locator("#camera-stop").wait_for(state="visible", timeout=30_000)  # taken again
        assert page.evaluate(focused) == "file-input"

        page.focus("#camera-stop")
        page.evaluate(
            "document.getElementById('video').srcObject.getVideoTracks()[0].dispatchEvent(new Event('ended'))"
        )
        assert page.locator("#camera-error").inner_text() == CAMERA_ENDED
        assert page.evaluate(focused) == "camera-start"  # not the page's body: the keyboard goes on from Start
        assert not page.errors
    finally:
        context.close()


def test_the_camera_answered_while_the_app_is_hidden_waits_until_it_is_back(browser, playwright, server) -> None:
    """The app went to the background while the browser still asked for the camera (a permission prompt answered
    late, a slow camera): the app lets go only a camera it has, so the stream that came then ran hidden, its light
    on. That stream is now let go as soon as it comes, and the camera taken again once the app is back in front."""
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        page.evaluate(RECORD_STREAMS, True)
        page.click("#camera-start")
        page.evaluate(SET_HIDDEN, True)
        page.evaluate("window.answerCamera()")
        page.wait_for_function("window.streams.length === 1", timeout=30_000)
        page.wait_for_timeout(500)  # the app has had the stream for a while
        assert page.evaluate(LIVE_STREAMS) == 0, "a camera live while the app is in the background"
        assert page.locator("#camera-start").is_visible()
        page.evaluate(SET_HIDDEN, False)
        page.locator("#camera-stop").wait_for(state="visible", timeout=30_000)
        assert (page.evaluate("window.streams.length"), page.evaluate(LIVE_STREAMS)) == (2, 1)
        page.click("#camera-stop")
        assert page.evaluate(LIVE_STREAMS) == 0, "a camera live after Stop"
        assert not page.errors
    finally:
        context.close()


def test_a_screen_reader_hears_each_answer_once(browser, playwright, server, tmp_path, cat_photo) -> None:
    """The results were one live region, so a screen reader said each card as it came ("…" included) and a failed
    photo twice (its answer was an alert too). As on the server's page, one hidden live region now says the batch
    as it is chosen, then each photo's name and answer, or why it has none; the cards are not live."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        got = answers(page, [cat_photo, broken])
        page.wait_for_function("document.getElementById('announce').textContent.includes('broken.jpg')")
        assert page.evaluate(LIVE_REGIONS) == ["status", "camera-error", "live-label", "announce"]
        percent = round(got[cat_photo.name]["confidence"] * 100)
        error = page.locator("#results .card[data-state=error] .error").inner_text()
        assert error.startswith("'broken.jpg' is not an image"), error  # named in it: not said twice
        said = f"{cat_photo.name}: cat, {percent} percent. {error.rstrip('.')}."
        assert page.locator("#announce").text_content() == said
        # Each card is named by its photo, as on the page: a list of articles said "article" for each.
        for name in (cat_photo.name, broken.name):
            assert page.get_by_role("article", name=name, exact=True).count() == 1, name
        assert not page.errors
    finally:
        context.close()


# In the app: its camera's track, and the live answer's opacity (0.45 while dimmed: the answer is from before).
TRACK = "document.getElementById('video').srcObject.getVideoTracks()[0]"
LIVE_OPACITY = "getComputedStyle(document.getElementById('live-label')).opacity"


def test_a_camera_the_system_interrupts_pauses_until_it_is_back(browser, playwright, server) -> None:
    """A camera the system interrupts without ending it (iOS: a phone call, another app taking the camera) fires
    `mute`, then `unmute`; the app went on classifying its black or frozen frames, with nothing said. It now
    classifies none while the camera is muted, says why (the server's page's sentence), and goes on once it is
    back."""
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True)
    context.add_init_script(HOLD)
    try:
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda err: page.errors.append(str(err)))
        page.goto(server.url + "/app/")
        frames = "window.catdogApp.frames.length"
        page.click("#camera-start")
        page.wait_for_function(f"{frames} >= 2", timeout=60_000, polling=100)
        # An answer to a frame taken before the mute, held until after it: however slow the model
        page.evaluate("window.held.answers = []")
        page.wait_for_function("window.held.answers.length >= 1", timeout=30_000, polling=100)
        muted_at = page.evaluate(f"() => {{ {TRACK}.dispatchEvent(new Event('mute')); return performance.now(); }}")
        assert page.locator("#camera-error").inner_text() == CAMERA_INTERRUPTED
        # The last answer stays, dimmed, and the line under it says it is from before (not the last fps).
        assert page.locator("#live-info").inner_text() == LIVE_PAUSED
        assert page.evaluate(LIVE_OPACITY) == "0.45"
        page.evaluate("window.handOn('answers', false)")
        page.wait_for_timeout(1_000)  # the time a frame could be taken while the camera is interrupted
        assert page.locator("#live-info").inner_text() == LIVE_PAUSED, "a frame taken before the mute was shown"
        unmuted_at = page.evaluate(f"() => {{ {TRACK}.dispatchEvent(new Event('unmute')); return performance.now(); }}")
        assert page.locator("#camera-error").inner_text() == ""
        page.wait_for_function(
            f"window.catdogApp.frames.filter((f) => f.grabbedAt > {unmuted_at}).length >= 2",
            timeout=30_000,
            polling=100,
        )
        assert "fps" in page.locator("#live-info").inner_text()
        assert page.evaluate(LIVE_OPACITY) == "1"
        taken = page.evaluate("window.catdogApp.frames.map((f) => f.grabbedAt)")
        assert not [t for t in taken if muted_at < t < unmuted_at], "frames classified while the camera was interrupted"
        # Stopped while interrupted, the camera does not go on when it is back: the sentence saying it would goes.
        page.evaluate(f"{TRACK}.dispatchEvent(new Event('mute'))")
        page.click("#camera-stop")
        assert page.locator("#camera-error").inner_text() == "", "a stopped camera still said its answers would go on"
        assert not page.errors
    finally:
        context.close()


def _interrupt_once_answered(page) -> None:
    """Once a frame is answered, holds the answers that follow until one is held, then interrupts the camera
    (`mute`): that answer is to a frame taken before the interruption."""
    page.wait_for_function("window.catdogApp.frames.length >= 1", timeout=60_000, polling=100)
    page.evaluate("window.held.answers = []")
    page.wait_for_function("window.held.answers.length >= 1", timeout=30_000, polling=100)
    page.evaluate(f"{TRACK}.dispatchEvent(new Event('mute'))")


def _a_new_answer_ends_the_dimming(page) -> None:
    """Hands on the held answers and waits for a new answer shown (its fps line; the mute took that away), not only
    one more answered: with two lanes a held answer can be older than the one shown, counted in frames but not
    shown, and the old one stays dim. Then the live answer is at full brightness, and the camera is stopped."""
    page.evaluate("window.handOn('answers', false)")
    page.wait_for_function("'fps' in document.getElementById('live-info').dataset", timeout=30_000, polling=100)
    assert page.evaluate(LIVE_OPACITY) == "1"
    page.click("#camera-stop")


def test_an_interrupted_camera_keeps_its_sentence_and_dims_until_a_new_answer(browser, playwright, server) -> None:
    """While the camera was interrupted, a frame's error (a frame taken before) took the sentence saying so away,
    as the server's page no longer does; interrupted before any answer (a camera that starts muted), the app said
    "Paused: the answer shown is from before ..." with none shown; at unmute the old answer was at full brightness
    until the next. The sentence stays, the line needs an answer, and the old one is dimmed until a new one; the
    line under it says "Camera back: classifying…" (it was empty), as on the page."""
    context, page = held_phone(browser, playwright, server)
    try:
        page.evaluate("window.held.answers = []")
        page.click("#camera-start")
        page.wait_for_function("window.held.answers.length >= 1", timeout=60_000, polling=100)
        page.evaluate(f"{TRACK}.dispatchEvent(new Event('mute'))")
        assert page.locator("#live-info").inner_text() == "", "the paused line said with no answer shown"
        page.evaluate("window.failFrames = true; window.handOn('answers', true)")  # their errors, while interrupted
        assert page.locator("#camera-error").inner_text() == CAMERA_INTERRUPTED, "a frame's error replaced it"
        page.evaluate(f"window.failFrames = false; {TRACK}.dispatchEvent(new Event('unmute'))")
        page.evaluate("window.handOn('answers', false)")
        _interrupt_once_answered(page)
        assert page.locator("#live-info").inner_text() == LIVE_PAUSED
        page.evaluate(f"{TRACK}.dispatchEvent(new Event('unmute'))")
        assert page.evaluate(LIVE_OPACITY) == "0.45", "the answer from before the interruption shown as if new"
        # The camera back, its answers held: the line says so, as the page's does (it was empty under the old one).
        assert page.locator("#live-info").inner_text() == "Camera back: classifying…"
        _a_new_answer_ends_the_dimming(page)
    finally:
        context.close()


def test_a_camera_that_starts_interrupted_says_so(browser, playwright, server) -> None:
    """A camera that starts interrupted (iOS: a call has it; its track is muted from the start and no mute event
    comes) said nothing of it, and its line "Camera on: classifying the first frame…" while no frame was taken.
    It says the interruption's sentence, no line, and "Camera back: classifying…" at the unmute, then answers.
    The track's `muted` is the browser's, made true here until the unmute (Chromium's fake camera never is)."""
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True)
    context.add_init_script(
        """window.startMuted = true;
        const muted = Object.getOwnPropertyDescriptor(MediaStreamTrack.prototype, "muted");
        Object.defineProperty(MediaStreamTrack.prototype, "muted", {
            configurable: true, get() { return window.startMuted || muted.get.call(this); } });"""
    )
    try:
        page = context.new_page()
        page.goto(server.url + "/app/")
        page.evaluate("window.catdogApp.ready")
        page.click("#camera-start")
        page.locator("#camera-stop").wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(500)
        assert page.locator("#camera-error").inner_text() == CAMERA_INTERRUPTED
        assert page.locator("#live-info").inner_text() == "", "a frame said to be classified while none is taken"
        assert page.evaluate("window.catdogApp.frames.length") == 0
        page.evaluate(f"window.startMuted = false; {TRACK}.dispatchEvent(new Event('unmute'))")
        assert page.locator("#camera-error").inner_text() == ""
        assert page.locator("#live-info").inner_text() == "Camera back: classifying…"
        page.wait_for_function("window.catdogApp.frames.length >= 1", timeout=60_000, polling=100)
        page.click("#camera-stop")
    finally:
        context.close()


def test_a_frame_taken_before_an_interruption_is_no_new_answer_after_it(browser, playwright, server) -> None:
    """A frame taken before the camera was interrupted (`mute`) and answered after it was back (`unmute`) was shown
    as the new answer: the old answer's dimming ended, and its fps line came back, on a picture from before. Such a
    frame is now dropped, and the dimming lasts until a frame taken since the unmute is answered. Here the answers
    out at the mute are held and handed on after the unmute, the later frames' held meanwhile."""
    context, page = held_phone(browser, playwright, server)
    try:
        page.click("#camera-start")
        _interrupt_once_answered(page)
        page.wait_for_function("window.framesOut === 0", timeout=30_000, polling=100)  # every frame sent is held
        shown = page.evaluate("window.catdogApp.frames.length")
        page.evaluate(
            f"() => {{ window.beforeMute = window.held.answers; window.held.answers = [];"
            f" {TRACK}.dispatchEvent(new Event('unmute')); window.beforeMute.forEach((handOn) => handOn()); }}"
        )
        page.wait_for_timeout(300)
        assert page.evaluate(LIVE_OPACITY) == "0.45", "a frame taken before the interruption ended its dimming"
        assert page.evaluate("window.catdogApp.frames.length") == shown, "a frame taken before the mute was shown"
        _a_new_answer_ends_the_dimming(page)
    finally:
        context.close()


def test_a_frame_error_goes_once_a_newer_frame_is_answered(browser, playwright, server) -> None:
    """A frame the model failed on left its error under the live answer while the next frames were answered, until
    Stop: the app never took a frame's error away. As on the server's page, the next answer shown takes it away."""
    context, page = held_phone(browser, playwright, server)
    try:
        page.evaluate("window.failFrames = true")
        page.click("#camera-start")
        page.locator("#camera-error", has_text="Failed.").wait_for(timeout=60_000)
        page.evaluate("window.failFrames = false")
        page.wait_for_function("document.getElementById('live-info').dataset.fps", timeout=30_000, polling=100)
        assert page.locator("#camera-error").inner_text() == "", "a frame's error stayed under newer answers"
        page.click("#camera-stop")
    finally:
        context.close()


# In a page, before its scripts: while window.held.answers is an array, the model's answers (a worker's messages)
# are held there, and while window.held.pictures is, the camera's pictures (createImageBitmap's: taken at once,
# handed on later), each as a function that hands it on. window.framesOut counts the frames sent to a worker and
# not yet answered, held or not.
HOLD = """
window.held = { answers: null, pictures: null };
window.framesOut = 0;
const holdOr = (kind, handOn) => (window.held[kind] ? window.held[kind].push(handOn) : handOn());
window.Worker = class extends Worker {
    postMessage(message, transfer) {
        if (message.type === "frame") window.framesOut++;
        super.postMessage(message, transfer);
    }
    get onmessage() {
        return super.onmessage;
    }
    set onmessage(handler) {
        super.onmessage = (event) => {
            if (event.data.prediction) window.framesOut--;
            // window.failFrames: a frame's answer handed on as the worker's error for it.
            const data = { id: event.data.id, ok: false, error: "Failed." };
            const failed = () => new MessageEvent("message", { data });
            holdOr("answers", () => handler(window.failFrames && event.data.prediction ? failed() : event));
        };
    }
};
const takePicture = window.createImageBitmap;
window.createImageBitmap = (...args) => {
    const picture = takePicture(...args);
    return new Promise((resolve, reject) => holdOr("pictures", () => picture.then(resolve, reject)));
};
window.handOn = (kind, holdOn) => {
    const out = window.held[kind];
    window.held[kind] = holdOn ? [] : null;
    out.forEach((handOn) => handOn());
};
"""


def held_phone(browser, playwright, server):
    """A phone's context and a page on the app with HOLD in it, every lane loaded (no lane's load answer held)."""
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True)
    context.add_init_script(HOLD)
    page = context.new_page()
    page.goto(server.url + "/app/")
    page.evaluate("window.catdogApp.ready.then(() => window.catdogApp.allLanes)")
    return context, page


@pytest.mark.parametrize("held", ["answers", "pictures"])
def test_a_frame_sent_before_stop_is_not_shown_after_a_restart(browser, playwright, server, held: str) -> None:
    """A frame sent before Stop and answered after the next Start was shown as the new session's first answer (a
    slow lane; its number was newer than the last one shown), and so was a picture taken before Stop that came
    after Start. A stopped session's frames are now never shown, and the new session's are: here what was out at
    Stop (the answers, or a picture) comes only after the camera has started again, the new session's held."""
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True)
    context.add_init_script(HOLD)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(server.url + "/app/")
        page.evaluate("window.catdogApp.ready.then(() => window.catdogApp.allLanes)")  # no lane's load answer held
        page.click("#camera-start")
        page.wait_for_function("window.catdogApp.frames.length >= 1", timeout=60_000, polling=100)
        page.evaluate(f"window.held.{held} = []")
        # Out at Stop: answers held, every frame sent answered; or a picture held, none sent unanswered.
        page.wait_for_function(f"window.held.{held}.length >= 1", timeout=30_000, polling=100)
        page.click("#camera-stop")
        page.wait_for_function("window.framesOut === 0", timeout=30_000, polling=100)
        page.evaluate(
            f"() => {{ window.lastSession = window.held.{held}; window.held = {{ answers: [], pictures: [] }}; }}"
        )
        page.click("#camera-start")
        page.locator("#camera-stop").wait_for(state="visible", timeout=30_000)
        page.evaluate("window.lastSession.forEach((handOn) => handOn())")
        if held == "pictures":  # its frame is sent now, the new session's pictures held: its answer is the one held
            page.wait_for_function("window.held.answers.length >= 1", timeout=30_000, polling=100)
            page.evaluate("window.handOn('answers', true)")
        page.wait_for_timeout(300)
        shown = (page.evaluate("window.catdogApp.frames.length"), page.locator("#live-label").inner_text())
        assert shown == (0, "…"), "a frame of the stopped session shown after the restart"
        page.evaluate("window.handOn('pictures', false); window.handOn('answers', false)")
        page.wait_for_function("window.catdogApp.frames.length >= 1", timeout=30_000, polling=100)
        assert page.locator("#live-label").inner_text() != "…", "the new session's answer not shown"
        assert not errors, errors
    finally:
        context.close()


@pytest.mark.slow  # a browser and the model each: the default suite stays near 10 minutes
def test_over_plain_http_the_app_says_what_needs_https(playwright, server):
    """Opened from another machine over plain http (a phone on the LAN), the camera button was greyed out without
    a word and the page promised offline use it could not give; it now says what needs https."""
    port = server.url.rsplit(":", 1)[1]
    b = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*BROWSER_ARGS, "--host-resolver-rules=MAP laptop.test 127.0.0.1"]
    )
    try:
        context, page = phone(b, playwright, f"http://laptop.test:{port}/app/")
        assert not page.evaluate("self.isSecureContext")
        assert (
            "plain http: the camera, offline use and installing need https"
            in page.locator("#camera-error").inner_text()
        )
        assert page.locator("#offline-note").inner_text() == "Offline use needs https."
        assert page.locator("#status").inner_text().startswith("Ready:")  # photos still work
        shot(page, "test_app_plain_http")
    finally:
        b.close()


@pytest.mark.slow  # its own server and browser
def test_served_over_https_a_phone_on_the_lan_gets_the_camera_and_offline_use(playwright, tmp_path):
    """`catdog serve --ssl-certfile --ssl-keyfile`: the phone app from a laptop, with no proxy, over https."""
    cert, key = self_signed(tmp_path)
    with running("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), log=tmp_path / "server.log") as srv:
        assert srv.url.startswith("https://") and "serving on https://" in srv.log()
        trusting = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(srv.url + "/readyz", verify=trusting).json() == {"status": "ready"}  # that certificate
        port = srv.url.rsplit(":", 1)[1]
        # The phone would trust the certificate (mkcert's CA); this Chromium is told to.
        b = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*BROWSER_ARGS, "--host-resolver-rules=MAP laptop.test 127.0.0.1", "--ignore-certificate-errors"],
        )
        try:
            context, page = phone(b, playwright, f"https://laptop.test:{port}/app/")
            assert page.evaluate("self.isSecureContext")
            page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=60_000)  # offline use
            assert page.locator("#camera-error").inner_text() == ""
            assert "needs https" not in page.locator("#offline-note").inner_text()
            assert page.locator("#status").inner_text().startswith("Ready:")
        finally:
            b.close()


def test_export_web_writes_a_static_app(browser, playwright, tmp_path, samples_dir, python_predictor):
    """``catdog export --format web``: a folder any static host serves; the app in it answers as Python does."""
    out = tmp_path / "app"
    run = [sys.executable, "-m", "catdog", "export", "--format", "web", "--out", str(out)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"index.html", "sw.js", "model.onnx", "model.json", "manifest.webmanifest", "_headers"} <= names
    assert {f"vendor/{name}" for name in webapp.VENDOR_FILES} <= names
    config = json.loads((out / "model.json").read_text())
    assert config["classes"] == ["cat", "dog"] and config["gated"] and len(config["imagenet"]) == 1000
    assert config["temperature"] == pytest.approx(python_predictor.temperature)

    again = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr

    cat = samples_dir / "cat" / "cat.3.jpg"
    with static_server(out) as (url, _):
        context, page = phone(browser, playwright, url + "/")
        try:
            got = answers(page, [cat])[cat.name]
            assert_same(got, python_predictor.predict_batch([(cat.name, cat)])[0].to_dict())
        finally:
            context.close()


def test_opened_while_the_server_still_loads_its_model(browser, playwright, samples_dir, tmp_path):
    """/app opened the moment the server answers: the page waits for the model (503s), then answers."""
    srv = Server(log=tmp_path / "server.log")
    try:
        srv.wait("/healthz")
        context, page = phone(browser, playwright, srv.url + "/app/")
        try:
            cat = samples_dir / "cat" / "cat.4.jpg"
            assert answers(page, [cat])[cat.name]["label"] == "cat"
            assert page.locator("#status").inner_text().startswith("Ready:")
            assert not page.errors
        finally:
            context.close()
    finally:
        srv.stop()


def test_a_model_that_failed_to_load_is_said_once_in_the_app(browser, playwright, tmp_path):
    """A model that failed to load was a 503 without Retry-After: the app asked for model.json again every second
    for a minute, then said "reload the page", which cannot help. The server now answers 500 with what to do (why
    is in its log); the app shows that sentence as it is, after one ask."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{ not json")
    srv = Server("--model", str(model), log=tmp_path / "server.log")
    # No service worker: its own requests for the app's files are not the page's, and page.route sees only these.
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True, service_workers="block")
    try:
        srv.wait("/readyz", status=500, timeout=60)
        asked: list = []
        page = context.new_page()
        page.clock.install()
        page.route("**/app/model.json", lambda route: (asked.append(route), route.continue_()))
        page.goto(srv.url + "/app/")
        status = page.locator("#status")
        status.filter(has_text="could not be loaded").wait_for(timeout=10_000)
        said = status.inner_text()
        assert said == FAILED_TO_LOAD, said
        footer = page.locator("footer").inner_text()  # it promised "Works offline." without a model
        assert "nothing is sent anywhere" in footer and "offline" not in footer.lower(), footer
        page.clock.run_for(60_000)
        page.wait_for_timeout(500)  # a request the app sent would reach the route handler now
        assert len(asked) == 1, f"asked {len(asked)} times"
    finally:
        context.close()
        srv.stop()


def test_a_missing_runtime_is_one_clear_sentence_without_a_path(monkeypatch, tmp_path):
    """An install built without npm: /app answers 503 with the sentence that says what to do. It named the
    folder the files were missing from, a path on the server's disk, to any client; now only the log does, as
    every log line names a folder that is not UTF-8 ('\\xe9', not the lone surrogate '\\udce9')."""
    install = tmp_path / os.fsdecode(b"site-packages-\xe9")
    shutil.copytree(REPO / "src" / "catdog", install / "catdog", ignore=shutil.ignore_patterns("vendor", "__pycache__"))
    vendor = install / "catdog" / "serve" / "static" / "app" / "vendor"
    monkeypatch.setenv("PYTHONPATH", str(install))  # the server imports this copy, without its runtime
    with running(log=tmp_path / "server.log") as srv:
        for path in ("/app/", "/app/vendor/ort.wasm.min.mjs", "/app/sw.js"):
            response = httpx.get(srv.url + path)
            assert response.status_code == 503, (path, response.text)
            error = response.json()["error"]
            assert str(tmp_path) not in error and "not built" in error and "npm" in error, error
            assert error == getattr(webapp.AppNotBuiltError, "public", None)
        assert httpx.get(srv.url + "/app/nothing.js").status_code == 404
    assert srv.log().count(f"missing from {printable(str(vendor))}") == 1, srv.log()  # the log names it, once
    assert "\\udc" not in srv.log(), srv.log()


def test_the_build_copies_the_runtime_files_the_server_serves():
    """web/build_app.py keeps its own list (it runs before catdog can be imported): the two lists agree."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_app", REPO / "web" / "build_app.py")
    build_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_app)
    assert tuple(build_app.FILES) == webapp.VENDOR_FILES
    from catdog.serve.app import DOCS_FILES  # the API page's Swagger UI (/docs), copied by the same build

    assert set(DOCS_FILES) <= set(build_app.DOCS_FILES)


@pytest.mark.slow  # two checked exports, ~30 s
def test_export_web_with_check_data_says_what_the_check_found(tmp_path, samples_dir):
    """Checked on the user's photos, the web export says what the check found, as the ONNX export does (it said
    nothing), and its --json names the app's model file (it named a temporary folder renamed away)."""
    checked = [sys.executable, "-m", "catdog", "export", "--format", "web", "--check-data", str(samples_dir)]
    checked += ["--check-images", "8", "--out"]
    done = subprocess.run([*checked, str(tmp_path / "checked")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "vs PyTorch" in done.stdout and "on 8 photos" in done.stdout, done.stdout
    as_json = subprocess.run(
        [*checked, str(tmp_path / "as-json"), "--json"], capture_output=True, text=True, timeout=600
    )
    check = json.loads(as_json.stdout)["check"]
    assert check["n_check"] == 8 and Path(check["path"]) == tmp_path / "as-json" / "model.onnx"
    assert Path(check["path"]).is_file()


@pytest.mark.slow
def test_agreement_with_python_on_240_photos(browser, playwright, server, python_predictor, samples_dir, dev_dir):
    """The 40 samples and 200 dev photos loaded into the page: labels agree on >= 99 %, probabilities within 0.02."""
    samples = sorted(samples_dir.glob("*/*.jpg"))
    taken = {p.name for p in samples}  # the page names cards by file name: no name twice
    dev = [p for c in ("cat", "dog") for p in sorted(dev_dir.glob(f"{c}.*.jpg")) if p.name not in taken][::100]
    photos = samples + dev[:100] + dev[-100:] if len(dev) > 200 else samples + dev
    assert len(photos) == 240
    context, page = phone(browser, playwright, server.url + "/app/")
    try:
        got = {}
        for start in range(0, len(photos), 40):
            got |= answers(page, photos[start : start + 40], timeout_ms=300_000)
        expected = {p.source: p.to_dict() for p in python_predictor.predict_paths([str(p) for p in photos])}
        by_name = {Path(k).name: v for k, v in expected.items()}
        agree = sum(got[name]["label"] == want["label"] for name, want in by_name.items())
        gap = max(
            abs(got[name]["probabilities"][k] - v)
            for name, want in by_name.items()
            for k, v in want["probabilities"].items()
        )
        assert agree / len(photos) >= 0.99, f"labels agree on {agree} of {len(photos)}"
        assert gap <= 0.02, f"largest probability gap {gap:.4f}"
    finally:
        context.close()


def test_a_served_onnx_file_gone_from_the_disk_is_one_sentence_not_a_traceback(server, tmp_path):
    """`serve --model m.onnx`, the file then moved away: /app/model.json and /app/model.onnx answered "Internal
    Server Error" and the log held a traceback. They answer the sentence of a model that could not be loaded, and
    only the log names the file."""
    model = tmp_path / "m.onnx"
    model.write_bytes(httpx.get(server.url + "/app/model.onnx").content)  # the built-in model's export
    with running("--model", str(model), log=tmp_path / "server.log") as srv:
        model.unlink()
        for path in ("/app/model.json", "/app/model.onnx"):
            response = httpx.get(srv.url + path)
            assert response.status_code == 500 and error_of(response) == FAILED_TO_LOAD, response.text
    assert "Traceback" not in srv.log() and "does not exist" in srv.log(), srv.log()


def test_export_web_of_a_missing_onnx_file_says_the_model_does_not_exist(tmp_path):
    """`export missing.onnx --format web` said "No such file or directory: 'missing.onnx'.", shutil's words, once
    the app's model file was told by is_onnx_model (true of a name alone); it says so as every command does."""
    missing_model = tmp_path / "missing.onnx"
    said = run_catdog_in_process("export", str(missing_model), "--format", "web", "--out", str(tmp_path / "app"))
    assert said.returncode == 2, said.stderr
    assert said.stderr.startswith(f"error: Model '{missing_model}' does not exist; give a model directory"), said.stderr
    assert not (tmp_path / "app").exists()


@pytest.mark.slow  # exports an app and starts a server (~20 s on 2 cores)
def test_an_app_for_other_classes_names_them(tmp_path, samples_dir):
    """A model trained on other classes: the exported app's page description and manifest (the installed app's
    name) said "cat, dog or neither"; they name the model's own answers, as served and as exported."""
    import html.parser

    from catdog.models import build_model, save_model_dir
    from catdog.models.pretrained import pretrained_preprocess

    model = build_model("tf_efficientnet_lite0", 2, gate=False).eval()  # untrained head: its classes matter here
    classes = ["cow", "sheep & goat"]  # a folder name with '&': the page escapes it
    config = {"architecture": "tf_efficientnet_lite0", "classes": classes, "temperature": 1.0}
    save_model_dir(model, config | {"preprocess": pretrained_preprocess(model).to_dict()}, tmp_path / "m")

    class Description(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "meta" and attrs.get("name") == "description":
                self.text = attrs["content"]

    def described(page: str, manifest: dict) -> None:
        reader = Description()
        reader.feed(page)
        own = "Classifies photos and the camera as cow or sheep & goat, on this device, offline."
        assert reader.text == manifest["description"] == own
        assert manifest["name"] == "catdog: cow or sheep & goat" and manifest["short_name"] == "catdog"

    out = tmp_path / "app"
    done = subprocess.run(
        [sys.executable, "-m", "catdog", "export", str(tmp_path / "m"), "--format", "web", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    described((out / "index.html").read_text(), json.loads((out / "manifest.webmanifest").read_text()))
    srv = Server("--model", str(out / "model.onnx"), log=tmp_path / "server.log")  # the file loads fastest
    try:
        srv.wait()
        manifest = httpx.get(srv.url + "/app/manifest.webmanifest")
        assert manifest.headers["content-type"].startswith("application/manifest+json")
        described(httpx.get(srv.url + "/app/").text, manifest.json())
    finally:
        srv.stop()
    # The built-in model's app keeps the package's words.
    assert (
        webapp.app_file_bytes("index.html", ["cat", "dog", "neither"]) == (webapp.app_dir() / "index.html").read_bytes()
    )


# In the app: from now on, every sentence its status line (a live region) says, in window.said.
SAID = """() => { window.said = []; const line = document.getElementById('status');
    new MutationObserver(() => window.said.push(line.textContent)).observe(line, { childList: true }); }"""


@contextmanager
def _phone_app_on_a_clock(browser, playwright, server, answer_model_json) -> Iterator[Page]:
    """The app opened on a phone whose clock the test runs forward (page.clock), its model.json answered by
    ``answer_model_json``. No service worker: its own requests for the app's files are not the page's, and
    page.route sees only these."""
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True, service_workers="block")
    try:
        page = context.new_page()
        page.clock.install()
        page.route("**/app/model.json", answer_model_json)
        page.goto(server.url + "/app/")
        yield page
    finally:
        context.close()


@pytest.mark.parametrize("status", [503, 429], ids=["503", "a proxy's 429"])
def test_the_app_waits_as_long_as_a_503_asks_a_minute_at_most(browser, playwright, server, status):
    """While the server loaded its model the app asked for its files again every 2 s, whatever the 503's
    Retry-After said (a proxy's 30, say), and said only that the server was loading. It now waits what each 503
    asks (1-30 s, the server's page's rule in shares.js), says how long, and gives up after a minute of waits in
    all. Here model.json is answered 503 with Retry-After: 30, then 25, then 25 (30 + 25 + 25 is over a minute),
    on the page's clock run forward by Playwright. A rate-limiting proxy's 429 is waited for alike."""
    asked: list[str] = []

    def loading(route) -> None:
        asked.append(route.request.url)
        wait = "30" if len(asked) == 1 else "25"
        route.fulfill(status=status, headers={"Retry-After": wait}, json={"error": "The model is still loading."})

    with _phone_app_on_a_clock(browser, playwright, server, loading) as page:
        page.wait_for_selector("#status:has-text('trying again in 30 s')", timeout=10_000)
        page.evaluate(SAID)
        page.clock.run_for(30_000)
        page.wait_for_selector("#status:has-text('trying again in 25 s')", timeout=10_000)
        page.clock.run_for(25_000)
        page.wait_for_selector("#status:has-text('could not be loaded')", timeout=10_000)
        assert page.locator("#status").inner_text() == (
            "The model could not be loaded: the server still asked to wait after 55 s; reload the page to try again."
        )
        assert len(asked) == 3, asked
        # Between two waits the line went back to "Loading the model…": it is still the server that is waited for.
        assert "Loading the model…" not in page.evaluate("window.said"), page.evaluate("window.said")


def test_the_app_asks_again_while_a_proxy_cannot_reach_the_server(browser, playwright, server):
    """A proxy's 502 or 504 for model.json (catdog serve restarting behind it) ended the app's load with "The
    model could not be loaded: model.json answered HTTP 502.", where the server's page asks again. The app now
    asks again every 1.5 s, as the page does, and loads the model once the proxy reaches the server. Its status
    line (a live region) is said once per sentence: it went back to "Loading the model…" between asks, so a screen
    reader said both every 1.5 s. Here 502 twice, then 504, then the real server."""
    asked: list = []
    proxy = (502, 502, 504)

    def through_a_proxy(route) -> None:
        asked.append(route)
        if len(asked) > len(proxy):
            route.continue_()
            return
        status = proxy[len(asked) - 1]
        route.fulfill(status=status, body=f"<html><body>{status}</body></html>", content_type="text/html")

    with _phone_app_on_a_clock(browser, playwright, server, through_a_proxy) as page:
        page.wait_for_selector("#status:has-text('(HTTP 502)')", timeout=10_000)
        page.evaluate(SAID)
        for count in range(2, len(proxy) + 2):
            run_clock_until_asked(page, asked, count)
        page.wait_for_selector("#status:has-text('Ready:')", timeout=60_000)
        assert len(asked) == len(proxy) + 1, f"asked {len(asked)} times"
        said = page.evaluate("window.said")
        assert said[0] == "The proxy cannot reach the server (HTTP 504); retrying…", said
        assert "Loading the model…" not in said and said[-1].startswith("Ready:"), said


def test_the_app_asks_again_while_the_server_cannot_be_reached_a_minute_at_most(browser, playwright, server):
    """A server that could not be reached while the app loaded its model (catdog serve restarting, a phone's
    network coming back) ended the load at once with "The model could not be loaded: Failed to fetch.", where the
    server's page asks again every 1.5 s. The app now asks again every 1.5 s, as the page does, saying so, and
    loads the model once the server answers; a server still out of reach after a minute is said with what to do.
    Here model.json's connection is refused twice, then the real server answers; then, reloaded, always refused."""
    asked: list = []
    refusals = 2

    def refused_at_first(route) -> None:
        asked.append(route)
        if len(asked) > refusals:
            route.continue_()
        else:
            route.abort("connectionrefused")

    with _phone_app_on_a_clock(browser, playwright, server, refused_at_first) as page:
        status = page.locator("#status")
        status.filter(has_text="retrying").wait_for(timeout=10_000)
        assert status.inner_text() == "Cannot reach the server; retrying…"  # the page's words
        for count in range(2, refusals + 2):
            run_clock_until_asked(page, asked, count)
        status.filter(has_text="Ready:").wait_for(timeout=60_000)
        assert len(asked) == refusals + 1, f"asked {len(asked)} times"

        page.unroute("**/app/model.json")
        page.route("**/app/model.json", lambda route: route.abort("connectionrefused"))
        page.reload()
        status.filter(has_text="retrying").wait_for(timeout=10_000)
        page.clock.run_for(60_000)
        status.filter(has_text="could not be loaded").wait_for(timeout=10_000)
        assert status.inner_text() == (
            # true of an app exported with --format web on a static host too, where no catdog serve runs
            "The model could not be loaded: the server could not be reached for a minute; check that the server is "
            "running and this device is online, then reload the page."
        )


OTHER_SERVER = "http://127.0.0.2:9/model.onnx"  # refused where the CSP is bypassed: a network failure to fetch


@pytest.mark.parametrize(
    ("address", "sentence"),
    [
        ("http://[oops/model.onnx", '"http://[oops/model.onnx" is no valid address; check model.json.'),
        # quoted without its password: a malformed address cannot be parsed to take it out
        ("http://user:secret@[oops/model.onnx", '"http://[oops/model.onnx" is no valid address; check model.json.'),
        # a space before it, which the browser skips (the password was shown)
        (" http://user:secret@[oops/m.onnx", '" http://[oops/m.onnx" is no valid address; check model.json.'),
        ("ftp://example.com/m.onnx", '"ftp://example.com/m.onnx" is no http or https address; check model.json.'),
        (
            OTHER_SERVER,
            f'"{OTHER_SERVER}" is on another server, and the app loads its model only from its own (its security '
            "policy); put the model beside the app and name it in model.json.",
        ),
        (
            # its own server's address, so that only the credentials are wrong with it
            "http://user:pw@{host}/app/model.onnx",
            "its address in model.json has a user name or password in it, which the app cannot send; name the model "
            "without them.",
        ),
        (
            # said by the same sentence, not by the ftp one, which quotes the address and so the password
            "ftp://user:secret@example.com/m.onnx",
            "its address in model.json has a user name or password in it, which the app cannot send; name the model "
            "without them.",
        ),
    ],
    ids=[
        "malformed",
        "malformed with a password",
        "malformed with a password after a space",
        "ftp",
        "another server",
        "a user name and password",
        "ftp with a password",
    ],
)
def test_a_model_address_fetch_cannot_use_is_said_at_once_not_as_a_server_out_of_reach(
    browser, playwright, server, address: str, sentence: str
):
    """fetch rejects a malformed address, one of a scheme it cannot fetch (ftp:) and one the app's security policy
    blocks (another server's) with the TypeError of a network failure, so a model.json naming its model by one was
    asked again for a minute and then said to be "a server that could not be reached". So does one with a user name
    or password in it (https://user:pw@host/model.onnx), its password not shown. The app now says at once what is
    wrong with the address. Here the real model.json, its "model" changed."""
    address = address.format(host=server.url.split("://")[1])

    def changed(route) -> None:
        config = route.fetch().json()
        route.fulfill(json={**config, "model": address})

    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True, service_workers="block")
    try:
        page = context.new_page()
        page.route("**/app/model.json", changed)
        page.goto(server.url + "/app/")
        status = page.locator("#status")
        status.filter(has_text="could not be loaded").wait_for(timeout=30_000)
        assert status.inner_text() == f"The model could not be loaded: {sentence}"
    finally:
        context.close()


def test_the_app_opened_at_an_address_with_a_password_loads(browser, playwright, server) -> None:
    """Opened at http://user:pw@host/app/ (a server behind a password, say), the app's document kept the
    credentials in its address, fetch refused every file of the app resolved against it with a TypeError, and the
    app said "Cannot reach the server; retrying…" for a minute. It now opens itself again at the address without
    them (location.href), and loads."""
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(server.url.replace("://", "://user:pw@") + "/app/")
        page.locator("#status").filter(has_text="Ready:").wait_for(timeout=30_000)
        assert page.evaluate("document.URL") == server.url + "/app/"
    finally:
        context.close()


@pytest.mark.parametrize("name", ["model.json", "model.onnx"])
def test_a_model_file_missing_from_the_server_is_said_with_what_to_do(browser, playwright, server, name):
    """A 404 for the app's own model file (a static host given part of an export) showed the server's bare "Not
    found: /app/model.onnx". The app now says which file is missing and what to do, in one sentence. The request
    goes to a name the real server has nothing at, for its real 404."""
    # No service worker: its own requests for the app's files are not the page's, and page.route sees only these.
    context = browser.new_context(**playwright.devices[PHONE], bypass_csp=True, service_workers="block")
    try:
        page = context.new_page()
        page.route(f"**/app/{name}", lambda route: route.continue_(url=f"{server.url}/app/missing-{name}"))
        page.goto(server.url + "/app/")
        status = page.locator("#status")
        status.filter(has_text="could not be loaded").wait_for(timeout=30_000)
        assert status.inner_text() == (
            f"The model could not be loaded: {name}, the app's model file, is missing from the server (HTTP 404); "
            "copy every file catdog export --format web wrote, or open the app that catdog serve serves."
        )
        # On a phone the sentence broke inside "--format", leaving "--" at a line's end (at 354-370 px here).
        broken = []
        for width in range(280, 430, 2):
            page.set_viewport_size({"width": width, "height": 740})
            if page.evaluate(LINES_OF, ["status", "--format"]) != 1:
                broken.append(width)
        assert not broken, f"--format broken across lines at widths {broken}"
    finally:
        context.close()
