"""The page in a real browser: Playwright (Python) driving Debian's Chromium against ``catdog serve``.

Screenshots are saved under ``artifacts/screenshots/`` as test artefacts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.bench_app import BROWSER_ARGS, CHROMIUM

from conftest import missing
from hostile import shared_server
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
    running,
)

try:
    from playwright import sync_api
except ImportError:  # a developer's machine without the test extras: the fixtures below say so
    sync_api = None

SCREENSHOTS = REPO / "artifacts" / "screenshots"

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("builtin_model")]


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Server:
    """The session's server with the built-in model and default limits (a model load saved); the tests that need
    other options start their own."""
    return shared_server(request)


@pytest.fixture(scope="module")
def playwright():
    if sync_api is None:
        missing("playwright (Python) is not installed: pip install -e '.[test]'")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    if not CHROMIUM.exists():
        missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    # One browser with the fake camera: the flags only matter once a page asks for the camera.
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
    yield b
    b.close()


@pytest.fixture
def page(browser, server: Server, request: pytest.FixtureRequest):
    # bypass_csp: Playwright's own polling (wait_for_function) evaluates strings, which the page's CSP forbids.
    context = browser.new_context(viewport={"width": 1100, "height": 900}, bypass_csp=True)
    context.grant_permissions(["camera"], origin=server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.url + "/")
    page.wait_for_selector("#model-status:has-text('Model:')")
    yield page
    shot(page, request.node.name)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_upload_a_cat_photo(page, cat_photo: Path) -> None:
    page.set_input_files("#file-input", str(cat_photo))
    card = page.locator("#results .card").first
    card.locator(".answer.cat").wait_for(timeout=30_000)
    assert card.get_attribute("data-label") == "cat"
    assert card.locator(".name").inner_text() == cat_photo.name
    percent = int(card.locator(".bar").get_attribute("aria-valuenow"))
    assert 50 <= percent <= 100 and f"{percent}%" in card.locator(".answer").inner_text()
    # Screen readers hear the answer through the live region.
    page.wait_for_function("document.getElementById('announce').textContent.includes('cat')")


def test_a_screen_reader_hears_each_answer_once(page, cat_photo: Path, tmp_path: Path) -> None:
    """Each card's answer (and its error) was a live region beside the batch's summary, which says the same, so a
    screen reader said each photo twice. The summary is now the only live region of photos: it says the batch as
    it is chosen, then each photo's name and answer, or why it has none."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    page.set_input_files("#file-input", [str(cat_photo), str(broken)])
    page.wait_for_selector("#results .card[data-state=error]", timeout=30_000)
    page.wait_for_selector("#results .card[data-state=done]", timeout=30_000)
    page.wait_for_function("document.getElementById('announce').textContent.includes('broken.jpg')")
    assert page.evaluate(LIVE_REGIONS) == ["model-status", "live-label", "live-error", "announce"]
    percent = page.locator("#results .card[data-state=done] .bar").get_attribute("aria-valuenow")
    error = page.locator("#results .card[data-state=error] .error").inner_text()
    assert error.startswith("'broken.jpg' is not an image"), error  # so it is said without the name before it
    said = f"{cat_photo.name}: cat, {percent} percent. {error.rstrip('.')}."
    assert page.locator("#announce").text_content() == said


def test_several_photos_at_once(page, cat_photo: Path, dog_photo: Path) -> None:
    page.set_input_files("#file-input", [str(cat_photo), str(dog_photo)])
    page.wait_for_selector("#results .card[data-state=done] >> nth=1", timeout=30_000)
    labels = {
        page.locator(f"#results .card:has(.name:text-is('{p.name}'))").get_attribute("data-label"): p.name
        for p in (cat_photo, dog_photo)
    }
    assert labels == {"cat": cat_photo.name, "dog": dog_photo.name}
    # A batch is listed in the order chosen; a later batch comes above it.
    page.set_input_files("#file-input", str(dog_photo))
    page.wait_for_selector("#results .card[data-state=done] >> nth=2", timeout=30_000)
    names = page.locator("#results .card .name").all_inner_texts()
    assert names == [dog_photo.name, cat_photo.name, dog_photo.name], names


def _error_for_text_given_as(page, photo: Path):
    """Gives the page a file of text at ``photo`` (a path to write) and returns its card's error line once shown,
    checked to name the photo and call it no image."""
    photo.write_bytes(b"this is not really a photo")
    page.set_input_files("#file-input", str(photo))
    error = page.locator("#results .card[data-state=error] .error")
    error.wait_for(timeout=30_000)
    text = error.inner_text()
    assert photo.name in text and "not an image" in text, text
    return error


def test_a_broken_file_shows_the_error(page, tmp_path: Path) -> None:
    """A file that is no photo is said on its card, with no empty box where its picture would be."""
    _error_for_text_given_as(page, tmp_path / "holiday.jpg")
    # Said once, by the batch's summary: the card is no live region (test_a_screen_reader_hears_each_answer_once).
    page.wait_for_function("document.getElementById('announce').textContent.includes('holiday.jpg')")
    # Named once: the server's sentence names the file ("holiday.jpg: 'holiday.jpg' is not..." read it twice).
    assert page.locator("#announce").inner_text().count("holiday.jpg") == 1, page.locator("#announce").inner_text()
    card = page.locator("#results .card[data-state=error]")
    # No heat-map button on a card with no answer, and no broken-picture icon (CSS overrode `hidden`).
    assert card.locator(".heat-button").is_hidden() and card.locator(".pic img").is_hidden()
    # Nor an empty grey box the height of a photo where there is nothing to show (a phone's whole screen of them).
    card.locator(".pic[data-nopreview]").wait_for(state="attached", timeout=10_000)
    assert card.locator(".pic").is_hidden()


def test_a_photo_cut_short_is_shown_set_aside(page, cat_photo: Path, tmp_path: Path) -> None:
    """Chromium draws a JPEG cut short as far as it goes (the top of the photo, grey below); the server refuses
    it. The card showed that partial picture as brightly as an answered photo's, beside "Not classified": it
    is now greyed and faded."""
    data = cat_photo.read_bytes()
    cut = tmp_path / "half.jpg"
    cut.write_bytes(data[: len(data) // 2])
    page.set_input_files("#file-input", [str(cut), str(cat_photo)])
    refused = page.locator("#results .card[data-state=error]")
    refused.locator(".error").wait_for(timeout=30_000)
    assert "the file ends before its image does" in refused.locator(".error").inner_text()
    page.locator("#results .card[data-state=done]").wait_for(timeout=30_000)
    looks = "img => [img.naturalWidth, Number(getComputedStyle(img).opacity), getComputedStyle(img).filter]"
    width, opacity, filtered = refused.locator(".pic img").evaluate(looks)
    assert width > 0 and opacity <= 0.5 and "grayscale(1)" in filtered, (width, opacity, filtered)
    assert page.locator("#results .card[data-state=done] .pic img").evaluate(looks)[1:] == [1, "none"]


def test_a_photo_over_the_limit_is_refused_in_the_page(page, server: Server, tmp_path: Path) -> None:
    """The page refuses a photo over the server's limit before sending it, in the server's words: the name
    was the one without quotes among the page's messages."""
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff" * 10_000_001)  # rounded up: not "10.0 MB, over the 10 MB limit"
    before = _predict_requests(server)
    page.set_input_files("#file-input", str(big))
    error = page.locator("#results .card[data-state=error] .error")
    error.wait_for(timeout=30_000)
    assert error.inner_text() == "'huge.jpg' is 10.1 MB, over the 10 MB limit for one photo."
    assert _predict_requests(server) == before, "the page sent a photo it knew the server refuses"
    # Nor does it decode it to show it (a 50-MB photo is hundreds of MB of pixels on a phone): the card says so.
    assert page.evaluate("document.querySelector('#results .card[data-state=error] .pic img').src") == ""
    note = page.evaluate(
        "getComputedStyle(document.querySelector('#results .card[data-state=error] .pic'), '::after').content"
    )
    assert note == '"Not shown: over the size limit"'


def test_a_photo_the_browser_cannot_show_is_answered_and_says_so(page, cat_photo: Path, tmp_path: Path) -> None:
    """A TIFF (or a HEIC) is answered by the server, but Chromium cannot draw it: the card once showed an
    empty grey box; it says there is no preview."""
    from PIL import Image

    tiff = tmp_path / "scan.tif"
    Image.open(cat_photo).save(tiff)
    page.set_input_files("#file-input", str(tiff))
    card = page.locator("#results .card[data-state=done]")
    card.wait_for(timeout=30_000)
    assert card.locator(".answer").inner_text().startswith("cat · ")
    page.wait_for_function("document.querySelector('#results .pic[data-nopreview]') !== null", timeout=10_000)
    note = page.evaluate(
        "getComputedStyle(document.querySelector('#results .pic'), '::after').getPropertyValue('content')"
    )
    assert note == '"No preview in this browser"' and card.locator(".pic img").is_hidden()


def test_a_heat_map_of_a_photo_the_browser_cannot_show_is_not_written_over(page, cat_photo: Path, tmp_path: Path):
    """The server draws a heat map over the photo, so it shows where the browser cannot show the photo (a TIFF,
    a HEIC); "No preview in this browser" was written across it. The note goes while the heat map is shown."""
    from PIL import Image

    tiff = tmp_path / "scan.tif"
    Image.open(cat_photo).save(tiff)
    page.set_input_files("#file-input", str(tiff))
    card = page.locator("#results .card[data-state=done]")
    card.wait_for(timeout=30_000)
    page.wait_for_function("document.querySelector('#results .pic[data-nopreview]') !== null", timeout=10_000)
    note = "getComputedStyle(document.querySelector('#results .pic'), '::after').getPropertyValue('content')"
    card.get_by_role("button", name="Heat map").click()
    card.locator("img.heat").wait_for(timeout=60_000)
    assert page.evaluate(note) == "none" and card.locator("img.heat").is_visible()
    card.get_by_role("button", name="Heat map").click()  # hidden again: the note is back in the empty box
    card.locator("img.heat").wait_for(state="detached")
    assert page.evaluate(note) == '"No preview in this browser"'


def _photo_box_in_the_dark(browser, server: Server, photo: Path, state: str):
    """The card's picture box (as drawn, RGB) once ``photo`` is answered (``state`` done or error) in the dark
    scheme, and the box's own grey."""
    import io

    from PIL import Image

    context = browser.new_context(viewport={"width": 800, "height": 900}, color_scheme="dark", bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#model-status:has-text('Model:')")
        page.set_input_files("#file-input", str(photo))
        page.locator(f"#results .card[data-state={state}]").wait_for(timeout=30_000)
        page.wait_for_function("document.querySelector('#results .pic img').complete")
        box = Image.open(io.BytesIO(page.locator("#results .pic").screenshot())).convert("RGB")
        grey = page.evaluate("getComputedStyle(document.querySelector('#results .pic')).backgroundColor")
        return box, tuple(int(v) for v in re.findall(r"\d+", grey))
    finally:
        context.close()


def test_a_photo_s_transparency_is_shown_on_white_as_the_model_sees_it(browser, server: Server, tmp_path: Path):
    """The server reads a transparent PNG on white; the card drew it on the box's grey, dark in the dark scheme,
    so a cut-out was shown as a picture the model never saw. It is drawn on white in either scheme."""
    from PIL import Image

    see_through = tmp_path / "cut-out.png"
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(see_through)
    picture, _ = _photo_box_in_the_dark(browser, server, see_through, "done")
    assert picture.getpixel((picture.width // 2, picture.height // 2)) == (255, 255, 255)


def test_a_photo_cut_short_is_not_drawn_on_white(browser, server: Server, cat_photo: Path, tmp_path: Path):
    """A photo is drawn on white, as the server reads transparency; a refused one, cut short, had the part the
    browser could not draw as a pale slab on the dark scheme's card. It is on the box's grey, as before."""
    data = cat_photo.read_bytes()
    cut = tmp_path / "half.jpg"
    cut.write_bytes(data[: len(data) // 3])
    box, grey = _photo_box_in_the_dark(browser, server, cut, "error")
    assert box.getpixel((box.width // 2, box.height - 3)) == grey


def test_a_photo_with_no_cat_or_dog_says_so(page, data_root: Path, cat_photo: Path) -> None:
    """A horse: the card says plainly that it sees no cat or dog, and what the photo looks like."""
    horse = data_root / "neither" / "horse" / "inet-n02389026_sorrel.JPEG"
    if not horse.exists():
        missing(f"{horse} is missing from the shared data")
    page.set_input_files("#file-input", [str(horse), str(cat_photo)])
    page.wait_for_selector("#results .card[data-state=done] >> nth=1", timeout=30_000)

    card = page.locator(f"#results .card:has(.name:text-is('{horse.name}'))")
    assert card.get_attribute("data-label") == "neither"
    answer = card.locator(".answer").inner_text()
    assert answer == "No cat or dog", f"the headline of a neither card reads {answer!r}"
    looks = card.locator(".looks")
    assert looks.is_visible()
    assert looks.inner_text() == "Looks like: sorrel — a horse of a brownish orange to light brown color"
    shares = _percentages(card.locator(".probs").inner_text())
    assert set(shares) == {"cat", "dog", "neither"}
    assert abs(sum(shares.values()) - 100) < 0.05, shares
    assert shares["neither"] > 50 and int(card.locator(".bar").get_attribute("aria-valuenow")) > 50
    # Its heat map shows where it sees the sorrel (it once showed where the cat/dog head saw a "dog").
    card.locator(".heat-button").click()
    heat = card.locator("img.heat")
    heat.wait_for(timeout=60_000)
    assert "where it sees sorrel" in heat.get_attribute("alt") and heat.get_attribute("title") == "Where it sees sorrel"

    cat = page.locator(f"#results .card:has(.name:text-is('{cat_photo.name}'))")
    assert cat.get_attribute("data-label") == "cat"
    assert cat.locator(".answer").inner_text().startswith("cat · ")
    assert cat.locator(".looks").is_hidden()
    cat_shares = _percentages(cat.locator(".probs").inner_text())
    assert cat_shares["cat"] > 50 and abs(sum(cat_shares.values()) - 100) < 0.05, cat_shares
    page.wait_for_function(
        "document.getElementById('announce').textContent.includes('no cat or dog, looks like sorrel')"
    )


def _percentages(text: str) -> dict[str, float]:
    """``"cat 0.0% · dog 0.1% · neither 99.9%"`` → ``{"cat": 0.0, ...}``."""
    return {name: float(value) for name, value in re.findall(r"(\S+) (\d+(?:\.\d+)?)%", text)}


# In the page: a file of these bytes and this name dropped on the target, or pasted ([event, target, bytes, name]).
DROP_OR_PASTE = """([event, target, bytes, name]) => {
    const file = new File([new Uint8Array(bytes)], name, { type: "image/jpeg" });
    const transfer = new DataTransfer();
    transfer.items.add(file);
    const init = { bubbles: true, cancelable: true };
    const e = event === "drop"
        ? new DragEvent("drop", { ...init, dataTransfer: transfer })
        : new ClipboardEvent("paste", { ...init, clipboardData: transfer });
    document.querySelector(target).dispatchEvent(e);
}"""


def test_dropping_and_pasting_photos(page, dog_photo: Path) -> None:
    data = list(dog_photo.read_bytes())
    for event, target in (("drop", "#drop"), ("paste", "body")):
        page.evaluate(DROP_OR_PASTE, [event, target, data, f"{event}.jpg"])
    page.wait_for_selector("#results .card[data-state=done] >> nth=1", timeout=30_000)
    for name in ("drop.jpg", "paste.jpg"):
        assert page.locator(f"#results .card:has(.name:text-is('{name}'))").get_attribute("data-label") == "dog"


def test_the_drop_zone_stays_highlighted_while_dragged_across_its_own_button(page) -> None:
    """Dragged over "Choose photos" (or the hint, or the checkbox's row), the zone was left for its own child: its
    highlight went off and came back with the next dragover, flickering all the way across. It stays on now, and
    goes off once the drag leaves the zone. A link of the page is dragged: Chromium drags it as it would photos."""
    page.evaluate(
        """window.highlighted = [];
        new MutationObserver(() => highlighted.push(document.getElementById('drop').classList.contains('over')))
          .observe(document.getElementById('drop'), { attributes: true });"""
    )
    link, zone = page.locator("footer a").first.bounding_box(), page.locator("#drop").bounding_box()
    button = page.locator("label[for=file-input]").bounding_box()
    page.mouse.move(link["x"] + 5, link["y"] + 5)
    page.mouse.down()
    for x, y in (
        (zone["x"] + 20, zone["y"] + 20),
        (button["x"] + 10, button["y"] + 10),
        (zone["x"] + 20, zone["y"] + 20),
    ):
        page.mouse.move(x, y, steps=5)
    within = page.evaluate("highlighted.splice(0)")
    page.mouse.move(link["x"] + 5, link["y"] + 5, steps=5)
    page.mouse.up()
    assert within and all(within), within
    assert page.locator("#drop.over").count() == 0


def test_a_photo_dropped_beside_the_zone_is_classified_too(page, dog_photo: Path) -> None:
    """A photo dropped on the page but not on the dashed zone (on the results, on the heading) was thrown away
    without a word, though the guide says to drop photos on the page. It is classified as the zone's are, once."""
    data = list(dog_photo.read_bytes())
    page.evaluate(DROP_OR_PASTE, ["drop", "#results", data, "beside.jpg"])
    page.locator("#results .card[data-state=done]").wait_for(timeout=30_000)
    page.evaluate(DROP_OR_PASTE, ["drop", "#drop", data, "on.jpg"])  # the zone's drop comes up to the window once
    page.wait_for_selector("#results .card[data-state=done] >> nth=1", timeout=30_000)
    assert page.locator("#results .card .name").all_inner_texts() == ["on.jpg", "beside.jpg"]


def test_a_pasted_image_that_fails_is_said_by_the_name_on_its_card(page) -> None:
    """A pasted image has no name: its card says "pasted image", but a failed one was said as ": <why>" (the error
    paths used the file's empty name). Every path now names a photo alike."""
    page.evaluate(DROP_OR_PASTE, ["paste", "body", list(b"not an image at all"), ""])
    card = page.locator("#results .card[data-state=error]")
    card.wait_for(timeout=30_000)
    assert card.locator(".name").inner_text() == "pasted image"
    error = card.locator(".error").inner_text()
    assert error.startswith("'pasted image' is not an image"), error  # named in it, so said as it is
    said = f"{error.rstrip('.')}."
    page.wait_for_function("(said) => document.getElementById('announce').textContent === said", arg=said)


def _answer_colours(page, labels: tuple[str, ...] = ("cat", "dog", "neither")) -> dict[str, str]:
    """The computed colour of an answer of each label, drawn as the page's own answers are."""
    return page.evaluate(
        """(labels) => Object.fromEntries(labels.map((label) => {
            const p = document.createElement('p');
            p.className = `answer ${label}`;
            document.body.append(p);
            const colour = getComputedStyle(p).color;
            p.remove();
            return [label, colour];
        }))""",
        list(labels),
    )


# A CSS colour computed in the page (a var(--card), a manifest's hex): rgb(r, g, b) whichever way it is written.
COMPUTED_COLOUR = """(value) => {
    const div = document.createElement('div');
    div.style.background = value;
    document.body.append(div);
    const colour = getComputedStyle(div).backgroundColor;
    div.remove();
    return colour;
}"""


def _contrast(a: str, b: str) -> float:
    """WCAG's contrast ratio of two computed ``rgb(r, g, b)`` colours."""

    def luminance(colour: str) -> float:
        channels = [int(c) / 255 for c in re.findall(r"\d+", colour)[:3]]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_page_and_the_app_colour_the_answers_alike(browser, server: Server) -> None:
    """The page drew a cat magenta, a dog teal and neither ochre; the phone app, served beside it, brown, green
    and purple. The page now takes the app's; in the dark (the app's too) the same hues, lighter,
    readable on the card. The page's unsure (under --threshold) was neither's purple: it has a colour of its own,
    in both schemes."""
    every = ("cat", "dog", "neither", "unsure")
    context = browser.new_context(bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(server.url + "/app/")
        app = _answer_colours(page)
        page.goto(server.url + "/")
        light = _answer_colours(page, every)
        assert {label: light[label] for label in app} == app
        assert len(set(app.values())) == 3, app
        page.emulate_media(color_scheme="dark")
        dark = _answer_colours(page, every)
        assert dark != light, "the page in the dark kept the light scheme's colours"
        for scheme, colours in (("light", light), ("dark", dark)):
            page.emulate_media(color_scheme=scheme)
            assert len(set(colours.values())) == 4, (scheme, colours)  # unsure is not neither's colour, nor another's
            card = page.evaluate(COMPUTED_COLOUR, "var(--card)")
            assert all(_contrast(colour, card) >= 4.5 for colour in colours.values()), (scheme, colours, card)
    finally:
        context.close()


def test_forced_colours_keep_the_confidence_bar_and_the_apps_buttons(browser, server: Server, cat_photo: Path) -> None:
    """In forced colours (Windows' contrast themes) the browser paints every background the system's one: the
    page's confidence bar and its fill were both the page's white, so the bar was gone; the app's buttons, which
    have no border, read as plain text; a card's heat-map toggle looked the same on as off. The fill is now drawn in
    the text's colour, the buttons outlined, and the toggle, on, in the system's highlight colours."""
    context = browser.new_context(forced_colors="active", bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        page.set_input_files("#file-input", str(cat_photo))
        page.locator("#results .card[data-state=done]").wait_for(timeout=30_000)
        track, fill = page.evaluate(
            """[...document.querySelectorAll('#results .bar, #results .bar > span')]
                .map((e) => getComputedStyle(e).backgroundColor)"""
        )
        assert _contrast(track, fill) >= 3, (track, fill)  # WCAG's 3:1 for a graphic
        # A card's heat-map toggle says "on" by its fill: in forced colours, on and off were both the card's white.
        heat_button = page.get_by_role("button", name="Heat map", exact=True)
        heat_button.click()
        page.locator("#results img.heat").wait_for(timeout=60_000)
        card, on = page.evaluate(
            """[document.querySelector('#results .card'), document.querySelector('.heat-button[aria-pressed=true]')]
                .map((e) => getComputedStyle(e).backgroundColor)"""
        )
        assert _contrast(card, on) >= 3, (card, on)
        page.goto(server.url + "/app/")
        borders = page.evaluate(
            """['#pick', '#camera-start'].map((s) => getComputedStyle(document.querySelector(s)))
                .map((style) => `${style.borderTopStyle} ${style.borderTopWidth}`)"""
        )
        assert borders == ["solid 1px", "solid 1px"], "the app's buttons have no outline in forced colours"
    finally:
        context.close()


def test_asked_for_less_motion_the_confidence_bar_does_not_slide(browser, server: Server, cat_photo: Path) -> None:
    """The confidence bar slid to its width over 0.3 s even where the system asks for less motion
    (prefers-reduced-motion: reduce); it is drawn at its width at once there now."""
    context = browser.new_context(reduced_motion="reduce", bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        page.set_input_files("#file-input", str(cat_photo))
        page.locator("#results .card[data-state=done]").wait_for(timeout=30_000)
        slide = page.evaluate("getComputedStyle(document.querySelector('#results .bar > span')).transitionDuration")
        assert slide == "0s"
    finally:
        context.close()


# In a page: the top of the first line of text in the element with this id, in CSS pixels.
TEXT_TOP = """(id) => { const range = document.createRange();
    range.selectNodeContents(document.getElementById(id).firstChild); return range.getClientRects()[0].top; }"""


@pytest.mark.parametrize("device", ["Pixel 5", "Pixel 5 landscape"])
def test_the_apps_choose_photos_lines_up_with_the_camera_button(browser, playwright, server: Server, device) -> None:
    """The app's "Choose photos" (a label, so that it opens the file chooser) had its text at the top of its 48 px,
    0.8 px above "Start camera"'s beside it, which a button centres. It is centred now as the buttons are."""
    context = browser.new_context(**playwright.devices[device])
    try:
        page = context.new_page()
        page.goto(server.url + "/app/")
        pick, start = (page.locator(selector).bounding_box() for selector in ("#pick", "#camera-start"))
        assert pick["y"] == start["y"] and pick["height"] == start["height"], (pick, start)
        lines = [page.evaluate(TEXT_TOP, id) for id in ("pick", "camera-start")]
        assert abs(lines[0] - lines[1]) < 0.5, lines
    finally:
        context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_apps_choose_photos_shows_its_keyboard_focus_clearly(browser, server: Server, scheme: str) -> None:
    """The app's "Choose photos" (a label round a hidden file input) drew its keyboard focus as a yellow ring:
    1.7:1 on the light background, under WCAG's 3:1 for what shows the focus. It is the text's colour now, in both
    schemes."""
    context = browser.new_context(color_scheme=scheme, bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(server.url + "/app/")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "file-input"
        colour, style = page.evaluate(
            "(({ outlineColor, outlineStyle }) => [outlineColor, outlineStyle])"
            "(getComputedStyle(document.getElementById('pick')))"
        )
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert style == "solid" and _contrast(colour, background) >= 3, (colour, background)
    finally:
        context.close()


def test_the_apps_choose_photos_draws_no_focus_ring_after_a_click(browser, server: Server, cat_photo: Path) -> None:
    """The app's "Choose photos" drew its keyboard focus ring (:focus-within) after every click and tap too, a
    black ring round the button until something else was focused; now, as on the server's page, only for the
    keyboard (the keyboard's ring: the test above)."""
    context = browser.new_context(bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(server.url + "/app/")
        with page.expect_file_chooser() as chooser:
            page.click("#pick")
        chooser.value.set_files(str(cat_photo))
        assert page.evaluate("document.activeElement.id") == "file-input"  # the check tests something
        assert page.evaluate("getComputedStyle(document.getElementById('pick')).outlineStyle") == "none"
    finally:
        context.close()


@pytest.mark.parametrize("device", ["Pixel 5", "iPhone 13", "iPad Mini", None], ids=lambda device: device or "desktop")
def test_ctrl_v_and_dropping_are_offered_only_with_a_mouse_or_trackpad(
    browser, playwright, server: Server, device: str | None
) -> None:
    """A phone or tablet, touch only, was told "…or drop them here, or paste them (Ctrl+V / ⌘V).": it has no
    keyboard to paste with and nothing to drop from. The hint is now there only where a pointer is fine (a
    mouse, a trackpad: Playwright's desktop view) and gone from the phones' and tablet's."""
    context = browser.new_context(
        **(playwright.devices[device] if device else {"viewport": {"width": 1100, "height": 900}})
    )
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        hint = page.locator("#drop p").inner_text()
        assert ("Ctrl+V" in hint and "drop them here" in hint) == (device is None), hint
        assert hint.endswith("Several at once are fine."), hint
    finally:
        context.close()


# Every @media rule's query in the page's style sheets, as the browser wrote it back.
MEDIA_QUERIES = """() => [...document.styleSheets].flatMap((sheet) => [...sheet.cssRules])
    .filter((rule) => rule instanceof CSSMediaRule).flatMap((rule) => [...rule.media])"""


@pytest.mark.parametrize("path", ["/", "/app/"])
def test_media_queries_are_read_by_older_safari_too(browser, server: Server, path: str) -> None:
    """The page hid its Ctrl+V hint with "@media not (any-pointer: fine)": "not" before a feature is level-4
    syntax, which Safari before 16.4 drops as a query it cannot read, so an iPhone on iOS 16.3 was offered Ctrl+V.
    Every "not" (or "only") now goes before a media type, as level 3 requires ("not all and (…)"); the test above
    checks that the hint still goes on phones and tablets."""
    page = browser.new_page()
    try:
        page.goto(server.url + path)
        queries = page.evaluate(MEDIA_QUERIES)
        assert queries, "no @media rule found"
        level4 = [query for query in queries if re.match(r"(not|only)\s*\(", query)]
        assert not level4, level4
    finally:
        page.close()


def test_the_page_and_the_app_have_their_landmarks(browser, server: Server) -> None:
    """The page's header and footer were inside main, where they are no banner or contentinfo landmark: a screen
    reader's landmark list had main only. Both now sit beside main, on the page as in the app."""
    context = browser.new_context()
    try:
        page = context.new_page()
        for path in ("/", "/app/"):
            page.goto(server.url + path)
            assert page.get_by_role("banner").get_by_role("heading", name="catdog", exact=True).count() == 1, path
            assert page.get_by_role("main").count() == 1, path
            assert page.get_by_role("contentinfo").count() == 1, path
            assert page.get_by_role("main").get_by_role("button", name="Start camera").count() == 1, path
    finally:
        context.close()


@pytest.mark.parametrize("width", [1100, 375], ids=["desktop", "phone"])
def test_the_live_answer_s_caption_stands_apart_from_the_camera_buttons(page, width: int) -> None:
    """ "Live answer", the caption of the answer under it, sat against the camera's buttons (0 px apart), where it
    read as their caption. It now has room above it, on a desktop and a phone."""
    page.set_viewport_size({"width": width, "height": 900})
    buttons = page.locator("#camera-start").bounding_box()
    caption = page.locator("#live p.name").bounding_box()
    label = page.locator("#live-label").bounding_box()
    above, below = caption["y"] - (buttons["y"] + buttons["height"]), label["y"] - (caption["y"] + caption["height"])
    assert above >= 8 and above > below, (above, below)


def test_the_page_opened_at_an_address_with_a_password_works(browser, server: Server, cat_photo: Path) -> None:
    """Opened at http://user:pw@host/ (a server behind a password, say), the page's document kept the credentials
    in its address, fetch refused every API address resolved against it with a TypeError, and the page said
    "Cannot reach the server; retrying…" for ever. It now opens itself again at the address without them
    (location.href), and answers: opened again once, under the page's own security policy."""
    context = browser.new_context()  # the policy enforced: nothing here evaluates strings
    try:
        page = context.new_page()
        opened: list[str] = []
        page.on("framenavigated", lambda frame: opened.append(frame.url) if frame == page.main_frame else None)
        page.goto(server.url.replace("://", "://user:pw@") + "/")
        page.wait_for_selector("#model-status:has-text('Model:')", timeout=30_000)
        assert page.evaluate("document.URL") == server.url + "/"
        page.set_input_files("#file-input", str(cat_photo))
        page.locator("#results .card[data-state=done]").wait_for(timeout=30_000)
        assert opened == [server.url.replace("://", "://user:pw@") + "/", server.url + "/"], opened
    finally:
        context.close()


# shares.js run by Node, with a location as the URL standard has it (its href keeps the credentials, as other
# browsers' does; Chromium's leaves them out, so a real Chromium cannot show this).
REOPEN_IN_NODE = """
const vm = require("vm"), fs = require("fs");
const [script, opened] = process.argv.slice(1);
let reopenedAt = null;
const location = { href: opened, replace: (address) => { reopenedAt = address; } };
const context = vm.createContext({ URL, document: { URL: opened }, location });
vm.runInContext(fs.readFileSync(script, "utf8"), context);
console.log(JSON.stringify([context.catdogShares.reopenWithoutCredentials(), reopenedAt]));
"""


@pytest.mark.parametrize(
    ("opened", "reopened"),
    [
        ("http://user:pw@host:8000/app/?lanes=2#top", "http://host:8000/app/?lanes=2#top"),
        ("https://user@host/prefix/", "https://host/prefix/"),
        ("http://host:8000/", None),
    ],
    ids=["user and password", "user only", "none"],
)
def test_the_page_is_opened_again_without_credentials_not_at_the_same_address(opened: str, reopened: str | None):
    """reopenWithoutCredentials opened the page again at location.href: without the credentials in Chromium, but
    with them where location.href is the URL standard's, so the page reloaded itself for ever there. It now takes
    them out itself; an address without them is left alone."""
    node = shutil.which("node")
    if node is None:
        missing("Node.js is not installed (apt-get install nodejs)")
    shares = REPO / "src" / "catdog" / "serve" / "static" / "app" / "shares.js"
    done = subprocess.run([node, "-e", REOPEN_IN_NODE, str(shares), opened], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [reopened is not None, reopened]


def test_keyboard_reaches_every_control(page) -> None:
    reached = set()
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    assert {"file-input", "heatmap-toggle", "clear", "camera-start"} <= reached
    # Every input has a label a screen reader can read.
    unlabeled = page.evaluate(
        "[...document.querySelectorAll('input')].filter(i => !i.labels.length && !i.getAttribute('aria-label'))"
        ".map(i => i.id)"
    )
    assert unlabeled == []


def test_phone_sized_screen(browser, server: Server, cat_photo: Path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    page.goto(server.url + "/")
    page.set_input_files("#file-input", str(cat_photo))
    page.locator("#results .card[data-state=done]").wait_for(timeout=30_000)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    card = page.locator("#results .card").first.bounding_box()
    assert card["width"] <= 375
    # The heat maps' label wraps to two lines here: they once sat centred, the checkbox left alone halfway
    # between them. Its text now starts beside the box, on the box's line.
    box, lines = page.evaluate(
        """(() => {
            const input = document.getElementById('heatmap-toggle'), range = document.createRange();
            range.selectNodeContents(input.parentElement);
            range.setStartAfter(input);
            return [input.getBoundingClientRect().toJSON(), [...range.getClientRects()].map((r) => r.toJSON())];
        })()"""
    )
    assert len({round(line["top"]) for line in lines}) >= 2, "the label fits on one line: the check tests nothing"
    first = min(lines, key=lambda line: line["top"])
    assert first["left"] - box["right"] < 12 and first["top"] < box["top"] + box["height"] / 2 < first["bottom"]
    assert {round(line["left"]) for line in lines} == {round(first["left"])}, "the label's lines are not aligned"
    shot(page, "test_phone_sized_screen")
    context.close()


def test_an_error_shows_a_long_photo_name_whole(page, tmp_path: Path) -> None:
    """A photo's error quotes its name: a long one (a download's) ran past the card's edge, cut off there."""
    long_name = "a_photo_downloaded_from_a_chat_with_a_name_much_longer_than_a_card_is_wide.jpg"
    error = _error_for_text_given_as(page, tmp_path / long_name)
    shown, whole = error.evaluate("(error) => [error.clientWidth, error.scrollWidth]")
    assert whole <= shown, f"the error is {whole} px wide, {shown} px of it shown"


def test_live_camera_shows_a_label(page, server: Server) -> None:
    """Chromium's fake camera (a moving test pattern) streams frames; the page shows the live answer."""
    # With the camera off the controls start at the section's left edge: its left half was left blank.
    left = page.locator("#live-heading").bounding_box()["x"]
    assert page.locator("#camera-start").bounding_box()["x"] - left < 2
    before = _predict_requests(server)
    page.click("#camera-start")
    page.wait_for_function(
        "['cat', 'dog', 'No cat or dog', 'unsure'].includes(document.getElementById('live-label').textContent)",
        timeout=30_000,
    )
    page.wait_for_function("document.getElementById('live-info').textContent.includes('ms per frame')")
    page.wait_for_timeout(1500)
    assert page.evaluate("document.getElementById('video').videoWidth") > 0
    assert _predict_requests(server) - before >= 3, "live mode keeps sending frames"
    assert page.locator("#live-error").inner_text() == ""
    # A test pattern is no cat or dog: when the model says so, the live answer says it plainly too.
    # (One read of both: the next frame may change the answer between two reads.)
    label, text, looks = page.evaluate(
        "(() => { const l = document.getElementById('live-label'), k = document.getElementById('live-looks');"
        " return [l.dataset.label, l.textContent, k.hidden ? null : k.textContent]; })()"
    )
    if label == "neither":  # what it looks like is named only where the backbone sees it clearly (floor 0.3)
        assert text == "No cat or dog"
        assert looks is None or looks.startswith("Looks like: "), looks
    # Running, the preview takes the left half and the controls the right.
    video = page.locator("#video").bounding_box()
    assert video["x"] - left < 2 and page.locator("#camera-start").bounding_box()["x"] > video["x"] + video["width"]
    shot(page, "test_live_camera_running")
    page.click("#camera-stop")
    assert page.locator("#camera-start").bounding_box()["x"] - left < 2
    assert page.locator("#camera-start").is_enabled()
    assert page.evaluate("document.getElementById('video').srcObject") is None


def test_heat_map(page, server: Server, cat_photo: Path, dog_photo: Path) -> None:
    """A card's heat-map button is a toggle a screen reader can tell the state of: it was "Show heat map" with no
    aria-pressed (a plain button), then "Hide heat map" pressed, its name and state saying the opposite. Its name
    is now "Heat map" throughout (the photo's name its description), aria-pressed false, then true once shown."""
    page.set_input_files("#file-input", str(cat_photo))
    card = page.locator("#results .card[data-state=done]").first
    card.wait_for(timeout=30_000)
    button = card.get_by_role("button", name="Heat map", exact=True, pressed=False)
    assert button.get_attribute("aria-describedby") == card.locator(".name").get_attribute("id")
    button.focus()
    page.keyboard.press("Enter")
    card.locator("img.heat").wait_for(timeout=60_000)
    button = card.get_by_role("button", name="Heat map", exact=True, pressed=True)
    assert button.get_attribute("aria-pressed") == "true"
    # The keyboard user is still on the button (a disabled button dropped the focus to the page).
    assert page.evaluate("document.activeElement.classList.contains('heat-button')")
    page.keyboard.press("Enter")
    card.locator("img.heat").wait_for(state="detached")
    assert card.get_by_role("button", name="Heat map", exact=True, pressed=False).count() == 1

    # The checkbox shows the heat maps of the cards already there, not only of those to come.
    page.set_input_files("#file-input", str(dog_photo))
    page.wait_for_selector("#results .card[data-state=done] >> nth=1", timeout=30_000)
    page.check("#heatmap-toggle")
    page.wait_for_function("document.querySelectorAll('#results img.heat').length === 2", timeout=60_000, polling=200)
    page.uncheck("#heatmap-toggle")
    page.wait_for_function("document.querySelectorAll('#results img.heat').length === 0", timeout=10_000, polling=200)


def test_a_heat_map_s_colours_are_explained_on_its_card(page, cat_photo: Path) -> None:
    """A heat map laid a rainbow over the photo with nothing on the card to say what it meant, and its alt said
    "brighter mattered more" of colours (matplotlib's jet) whose red is darker than their cyan. A line under the
    photo says what it shows and which colour mattered most, while it is shown; the alt says the same."""
    page.set_input_files("#file-input", str(cat_photo))
    card = page.locator("#results .card[data-state=done]")
    card.wait_for(timeout=30_000)
    key = card.locator(".heat-key")
    assert key.count() == 1 and key.is_hidden()
    card.get_by_role("button", name="Heat map").click()
    card.locator("img.heat").wait_for(timeout=60_000)
    assert key.is_visible() and key.inner_text() == "Heat map: where it sees cat; red mattered most, blue least."
    assert card.locator("img.heat").get_attribute("alt").endswith("(red mattered most, blue least)")
    card.get_by_role("button", name="Heat map").click()
    card.locator("img.heat").wait_for(state="detached")
    assert key.is_hidden()


def test_a_heat_map_is_shown_whole(page, tmp_path: Path) -> None:
    """A heat map is of the model's view, the photo's middle square; the 4:3 box cut off its top and bottom
    eighths (where a horse's back was red). It is shown whole now, on the box's grey."""
    import io

    from PIL import Image

    green = tmp_path / "green.png"
    Image.new("RGB", (400, 300), (0, 160, 0)).save(green)
    page.set_input_files("#file-input", str(green))
    card = page.locator("#results .card[data-state=done]")
    card.wait_for(timeout=30_000)
    card.get_by_role("button", name="Heat map").click()
    card.locator("img.heat").wait_for(timeout=60_000)
    page.wait_for_function("document.querySelector('#results img.heat').complete")
    shown = Image.open(io.BytesIO(card.locator(".pic").screenshot())).convert("RGB")
    edge, middle = shown.getpixel((3, shown.height // 2)), shown.getpixel((shown.width // 2, shown.height // 2))
    grey = page.evaluate("getComputedStyle(document.querySelector('#results .pic')).backgroundColor")
    assert edge == tuple(int(v) for v in re.findall(r"\d+", grey)), (edge, grey)  # the box's, not the map's
    assert middle != edge  # the map over the middle


def test_a_failing_heat_map_is_said_with_the_batch_not_instead_of_it(page, cat_photo: Path) -> None:
    """With "Show heat maps" on, a heat map that failed was said in the one live region of photos in place of the
    batch's summary, so a screen reader never heard the photos' answers. Its failure is now part of the summary."""
    page.route("**/api/v1/explain", lambda route: route.fulfill(status=500, json={"error": "Heat maps are down here."}))
    page.check("#heatmap-toggle")
    page.set_input_files("#file-input", str(cat_photo))
    card = page.locator("#results .card[data-state=done]")
    card.locator(".error:has-text('Heat maps are down here.')").wait_for(timeout=30_000)
    percent = card.locator(".bar").get_attribute("aria-valuenow")
    said = f"{cat_photo.name}: cat, {percent} percent, no heat map: Heat maps are down here."
    page.wait_for_function("(said) => document.getElementById('announce').textContent === said", arg=said)


def test_a_heat_map_that_never_comes_holds_back_no_summary(page, cat_photo: Path) -> None:
    """With "Show heat maps" on, the batch's summary waited for every heat map, so one the server never answered
    (hung, or a proxy holding it) kept the photos' answers from a screen reader for ever. The summary now waits
    10 s at most; a heat map failing after that is said by itself."""
    held: list = []
    page.route("**/api/v1/explain", lambda route: held.append(route))  # unanswered until the test answers it
    page.clock.install()
    page.check("#heatmap-toggle")
    page.set_input_files("#file-input", str(cat_photo))
    card = page.locator("#results .card[data-state=done]")
    card.locator(".heat-button[aria-busy=true]:has-text('computing…')").wait_for(timeout=30_000)
    # The wait is shown beside the toggle's name, not in it.
    assert card.get_by_role("button", name="Heat map", exact=True, pressed=False).get_attribute("aria-busy") == "true"
    percent = card.locator(".bar").get_attribute("aria-valuenow")
    page.clock.run_for(10_000)
    said = f"{cat_photo.name}: cat, {percent} percent."
    page.wait_for_function("(said) => document.getElementById('announce').textContent === said", arg=said)
    held[0].fulfill(status=500, json={"error": "Heat maps are down here."})
    said += f" {cat_photo.name}: Heat maps are down here."  # added to the summary, not in place of it
    page.wait_for_function("(said) => document.getElementById('announce').textContent === said", arg=said)


def test_a_heat_map_failing_as_the_summary_is_said_is_not_wiped_by_it(page, cat_photo: Path) -> None:
    """A live region's words are written 50 ms after it is emptied (the same words are then said again): a heat map
    failing in between added its sentence to the emptied region, and the summary's words then took its place. The
    sentence now stays, after the summary. The page's clock is paused so that the failure comes in that gap."""
    held: list = []
    page.route("**/api/v1/explain", lambda route: held.append(route))  # unanswered until the test answers it
    page.clock.install()
    page.clock.pause_at(page.evaluate("Date.now()") + 1_000)  # no timer fires but those the test runs
    page.check("#heatmap-toggle")
    page.set_input_files("#file-input", str(cat_photo))
    card = page.locator("#results .card[data-state=done]")
    card.locator(".heat-button[aria-busy=true]:has-text('computing…')").wait_for(timeout=30_000)
    percent = card.locator(".bar").get_attribute("aria-valuenow")
    page.clock.run_for(10_000)  # the summary's wait for the heat map: the region is emptied, its words to come
    held[0].fulfill(status=500, json={"error": "Heat maps are down here."})
    card.locator(".error:has-text('Heat maps are down here.')").wait_for(timeout=30_000)
    page.clock.run_for(100)
    said = f"{cat_photo.name}: cat, {percent} percent. {cat_photo.name}: Heat maps are down here."
    assert page.locator("#announce").text_content() == said


def live_region(page, selector: str) -> dict[str, object]:
    """How Chromium's accessibility tree, which a screen reader reads, has the element's live region: its
    live, atomic and relevant properties, implicit ones included (role=status is atomic by the ARIA spec)."""
    cdp = page.context.new_cdp_session(page)
    try:
        root = cdp.send("DOM.getDocument")["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        ax = cdp.send("Accessibility.getPartialAXTree", {"nodeId": node, "fetchRelatives": False})["nodes"][0]
    finally:
        cdp.detach()
    wanted = ("live", "atomic", "relevant")
    return {prop["name"]: prop["value"]["value"] for prop in ax["properties"] if prop["name"] in wanted}


def test_a_heat_map_asked_for_later_adds_its_sentence_to_the_batch_s(page, cat_photo: Path, dog_photo: Path) -> None:
    """A heat map asked for by its button after the batch's summary, and failing, replaced the summary in the one
    live region of photos: a screen reader that had not read the batch's answers yet never heard them. Its sentence
    is now added to the summary, in an element of its own in a region that is not atomic, so only it is said."""
    page.route("**/api/v1/explain", lambda route: route.fulfill(status=500, json={"error": "Heat maps are down here."}))
    page.set_input_files("#file-input", [str(cat_photo), str(dog_photo)])
    page.wait_for_function("document.getElementById('announce').textContent.endsWith('percent.')", timeout=30_000)
    summary = page.locator("#announce").text_content()
    card = page.locator("#results .card[data-state=done]").first
    card.locator(".heat-button").click()
    card.locator(".error:has-text('Heat maps are down here.')").wait_for(timeout=30_000)
    name = card.locator(".name").inner_text()
    said = f"{summary} Computing the heat map of {name}… {name}: Heat maps are down here."
    page.wait_for_function("(said) => document.getElementById('announce').textContent === said", arg=said)
    # What a screen reader is told is the accessibility tree's: role=status is atomic unless it says otherwise.
    assert live_region(page, "#announce") == {"live": "polite", "atomic": False, "relevant": "additions text"}


def test_a_heat_map_being_computed_is_said_once(page, cat_photo: Path, dog_photo: Path, tmp_path: Path) -> None:
    """A heat map takes seconds; its button's "computing…" is hidden from screen readers (a toggle keeps its name),
    so a screen reader heard nothing until the map came. The wait is now said once, after the batch's summary: by
    the button, for its photo; by "Show heat maps", one sentence for all the cards it asks for."""
    another = tmp_path / "another.jpg"
    shutil.copy(cat_photo, another)
    held: list = []
    page.route("**/api/v1/explain", lambda route: held.append(route))  # unanswered: the maps stay computing
    page.set_input_files("#file-input", [str(cat_photo), str(dog_photo), str(another)])
    page.wait_for_function("document.getElementById('announce').textContent.endsWith('percent.')", timeout=30_000)
    summary = page.locator("#announce").text_content()
    first = page.locator("#results .card").first
    first.locator(".heat-button").click()
    _until_asked(page, held, 1)
    first.locator(".heat-button").click()  # pressed again while computing: nothing more is asked or said
    page.check("#heatmap-toggle")  # asks for the two other cards' maps
    _until_asked(page, held, 3)
    page.wait_for_timeout(300)  # each sentence is added as its wait starts: none more may come
    assert len(held) == 3
    name = first.locator(".name").inner_text()
    said = page.locator("#announce").text_content()
    assert said == f"{summary} Computing the heat map of {name}… Computing 2 heat maps…", said


def test_a_heat_map_failing_after_clear_is_not_said(page, cat_photo: Path) -> None:
    """A heat map asked for (its button, or "Show heat maps" past the summary's wait) that failed after "Clear"
    emptied the results was still said, "cat.jpg: Heat maps are down here.", of a photo no longer on the page.
    A cleared card's failure is not said."""
    held: list = []
    page.route("**/api/v1/explain", lambda route: held.append(route))  # unanswered until the test answers it
    page.set_input_files("#file-input", str(cat_photo))
    card = page.locator("#results .card[data-state=done]")
    card.locator(".heat-button").click()
    _until_asked(page, held, 1)
    page.click("#clear")
    page.evaluate(RECORD_ANNOUNCED)
    held[0].fulfill(status=500, json={"error": "Heat maps are down here."})
    # A second photo's answer, a round trip to the model, comes after the failure's reading of a short body.
    page.set_input_files("#file-input", str(cat_photo))
    page.wait_for_function("window.announced.some((text) => text.endsWith('percent.'))", timeout=30_000)
    announced = page.evaluate("window.announced")
    assert not [text for text in announced if "Heat maps are down here." in text], announced


def _predict_requests(server: Server) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "catdog_http_requests_total" and s.labels.get("route") == "/api/v1/predict":
                total += s.value
    return total


def test_the_api_documentation_page_works_offline(browser, server: Server, cat_photo: Path) -> None:
    """/docs once loaded Swagger UI from a CDN: a blank page without internet. It comes from catdog now, and
    lists the API's operations with nothing fetched from another origin. It had no Content-Security-Policy
    (the page and the app have one); under its own, "Try it out" still answers, a heat map included, and
    the browser reports no violation."""
    context = browser.new_context()  # the policy enforced: no bypass_csp here
    page = context.new_page()
    elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((server.url, "blob:")) else elsewhere.append(r.url))
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    try:
        policy = page.goto(server.url + "/docs").headers["content-security-policy"]
        assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1], policy
        page.wait_for_selector(".opblock", timeout=30_000)
        operations = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/api/v1/predict" in operations and "/api/v1/predict/batch" in operations, operations
        for path in ("/api/v1/predict", "/api/v1/explain"):  # "Try it out" with a photo
            block = page.locator(f".opblock:has(.opblock-summary-path[data-path='{path}'])")
            block.locator(".opblock-summary").click()
            block.locator("button.try-out__btn").click()
            block.locator("input[type=file]").set_input_files(str(cat_photo))
            block.locator("button.execute").click()
            block.locator(".live-responses-table .response .response-col_status").wait_for(timeout=60_000)
            assert block.locator(".live-responses-table .response .response-col_status").inner_text() == "200"
        assert '"label": "cat"' in page.locator(".live-responses-table .highlight-code").first.inner_text()
        heat_map = page.locator(".live-responses-table img")  # explain's PNG, shown from a blob: URL
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=heat_map.element_handle())
        assert not elsewhere, elsewhere
        assert not console, console  # a violation of the policy is reported here
        shot(page, "api-docs")
    finally:
        context.close()
    assert httpx.get(server.url + "/docs/not-a-file.js").status_code == 404


def test_the_page_stays_within_the_connection_limit(browser, tmp_path: Path, samples_dir: Path) -> None:
    """The page, its files and 16 photos sent at once are answered under --max-connections 12 without one 503 from the
    limit (uvicorn logs each). Chromium opens at most 6 connections to a server, but uvicorn's limit also counts
    requests in flight, and a request counts until its handler returns, after its answer: at 6 the page was refused
    (and asked again) as soon as a connection sent its next photo. The default, 384, is far above either."""
    photos = sorted((samples_dir / "cat").glob("*.jpg"))[:8] + sorted((samples_dir / "dog").glob("*.jpg"))[:8]
    with running("--max-connections", "12", log=tmp_path / "server.log") as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#model-status:has-text('Model:')")
        page.set_input_files("#file-input", [str(p) for p in photos])
        page.wait_for_selector(f"#results .card[data-state=done] >> nth={len(photos) - 1}", timeout=60_000)
        page.close()
        assert "Exceeded concurrency limit" not in server.log(), server.log()[-3000:]


def test_a_model_of_other_classes_is_not_asked_about_cats_and_dogs(
    browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A horse/cow model's page asked "Is it a cat, a dog, or neither?" above "answers cow, horse"."""
    from catdog.models import build_model, save_model_dir
    from catdog.preprocess import Preprocess

    monkeypatch.setenv("CATDOG_BACKEND", "torch")  # the server's: the page is tested, not an export of random weights
    model = build_model("catnet", 2, pretrained=False).eval()
    pre = Preprocess(image_size=64, crop_pct=1.0, interpolation="bilinear")
    config = {"architecture": "catnet", "classes": ["cow", "horse"], "preprocess": pre.to_dict(), "gate": None}
    save_model_dir(model, config, tmp_path / "horse-cow")
    with running("--model", str(tmp_path / "horse-cow"), log=tmp_path / "server.log") as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#model-status:has-text('answers cow, horse')")
        lead = page.locator("p.lead").inner_text()
        assert lead.startswith("Which is it: cow or horse?") and "a cat" not in lead, lead
        assert page.title() == "catdog — Which is it: cow or horse?"
        page.close()


@pytest.mark.parametrize("builtin", [True, False], ids=["built-in", "horse-cow"])
def test_unsure_is_no_answer_the_page_asks_about(
    browser, tmp_path: Path, builtin: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under --threshold the model's labels end in `unsure`: the built-in model's page then asked "Which is it:
    cat, dog, neither or unsure?", and a horse/cow model's "Which is it: cow, horse or unsure?"."""
    args = ["--threshold", "0.6"]
    if not builtin:
        from catdog.models import build_model, save_model_dir
        from catdog.preprocess import Preprocess

        monkeypatch.setenv("CATDOG_BACKEND", "torch")  # as above: no ONNX export of random weights

        pre = Preprocess(image_size=64, crop_pct=1.0, interpolation="bilinear")
        config = {"architecture": "catnet", "classes": ["cow", "horse"], "preprocess": pre.to_dict(), "gate": None}
        save_model_dir(build_model("catnet", 2, pretrained=False).eval(), config, tmp_path / "horse-cow")
        args += ["--model", str(tmp_path / "horse-cow")]
    question = "Is it a cat, a dog, or neither?" if builtin else "Which is it: cow or horse?"
    with running(*args, log=tmp_path / "server.log") as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#model-status:has-text('unsure.')")
        lead = page.locator("p.lead").inner_text()
        assert lead.startswith(question), lead
        page.close()


def test_the_page_waits_as_long_as_a_503_asks(page, cat_photo: Path) -> None:
    """On a 503 the page asked again after a fixed second, whatever Retry-After said, and said nothing meanwhile. It
    now waits what Retry-After says (within 1-30 s) and says so on the card, and says "Classifying…" again while
    the retry is on its way (it kept "trying again in 3 s" then). The first answer is a 503 with Retry-After: 3 put
    in by the browser (as a proxy in front of catdog might send); the retry is held, then goes to the server."""
    asked: list[float] = []
    held = []

    def busy_once(route) -> None:
        asked.append(time.monotonic())
        if len(asked) > 1:
            held.append(route)
            return
        route.fulfill(status=503, headers={"Retry-After": "3"}, json={"error": "The server is busy; try again."})

    page.route("**/api/v1/predict", busy_once)
    page.set_input_files("#file-input", str(cat_photo))
    page.wait_for_selector("#results .card .answer:has-text('trying again in 3 s')", timeout=5_000)
    page.wait_for_function(
        "() => document.querySelector('#results .card .answer').textContent === 'Classifying…'", timeout=10_000
    )
    for _ in range(100):  # the retry reaches the route handler only while Playwright is called: wait for it here
        if held:
            break
        page.wait_for_timeout(100)
    held[0].continue_()
    page.wait_for_selector("#results .card[data-state=done]", timeout=30_000)
    assert page.locator("#results .card").get_attribute("data-label") == "cat"
    assert len(asked) == 2 and asked[1] - asked[0] >= 2.8, asked


BODY_BACKGROUND = "getComputedStyle(document.body).backgroundColor"


def test_the_app_has_the_pages_dark_scheme_and_a_colour_for_unsure(browser, server: Server) -> None:
    """The phone app had no dark scheme (a white page on a phone set to dark) and drew `unsure` in the card's
    plain text colour, while the page has both. The app now answers in the page's colours in either scheme, unsure
    apart from the rest, each readable on the app's card."""
    every = ("cat", "dog", "neither", "unsure")
    backgrounds = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme, bypass_csp=True)
        try:
            page = context.new_page()
            page.goto(server.url + "/")
            on_the_page = _answer_colours(page, every)
            page.goto(server.url + "/app/")
            in_the_app = _answer_colours(page, every)
            card, backgrounds[scheme] = page.evaluate(COMPUTED_COLOUR, "var(--card)"), page.evaluate(BODY_BACKGROUND)
        finally:
            context.close()
        assert in_the_app == on_the_page, (scheme, in_the_app, on_the_page)
        assert len(set(in_the_app.values())) == 4, (scheme, in_the_app)
        assert all(_contrast(colour, card) >= 4.5 for colour in in_the_app.values()), (scheme, in_the_app, card)
    assert backgrounds["dark"] != backgrounds["light"], backgrounds
    assert _contrast(backgrounds["dark"], "rgb(255, 255, 255)") > 10, backgrounds  # dark, not a lighter grey


def test_the_installed_apps_splash_is_the_colour_the_app_opens_in(browser, server: Server) -> None:
    """The manifest's background_color (the installed app's splash screen) was the light scheme's, so a phone set
    to dark flashed a light screen before the dark app. The splash is now the app's own background in each scheme:
    background_color the light one, color_scheme_dark's the dark one (browsers without that member show the light
    one, the app's scheme unless the phone is set to dark). The header, the status bar's theme_color, stays the same
    blue in both."""
    manifest = httpx.get(server.url + "/app/manifest.webmanifest").json()
    dark = manifest.get("color_scheme_dark", {})  # what a browser shows in the dark: this, or background_color
    splash = {"light": manifest["background_color"], "dark": dark.get("background_color", manifest["background_color"])}
    for scheme, colour in splash.items():
        context = browser.new_context(color_scheme=scheme, bypass_csp=True)
        try:
            page = context.new_page()
            page.goto(server.url + "/app/")
            opens_in = page.evaluate(BODY_BACKGROUND)
            header = page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor")
            assert opens_in == page.evaluate(COMPUTED_COLOUR, colour), (scheme, opens_in, colour)
            assert header == page.evaluate(COMPUTED_COLOUR, manifest["theme_color"]), (scheme, header)
        finally:
            context.close()


def test_live_mode_waits_as_long_as_a_503_asks(page) -> None:
    """Live mode sent the next frame ~125 ms after a 503, whatever its Retry-After said: 8 frames a second at a
    server that is loading or busy. The next frame now waits what Retry-After says, as a photo's retry does."""
    asked: list[float] = []

    def busy_once(route) -> None:
        asked.append(time.monotonic())
        if len(asked) > 1:
            route.continue_()
            return
        route.fulfill(status=503, headers={"Retry-After": "3"}, json={"error": "The server is busy; try again."})

    page.route("**/api/v1/predict", busy_once)
    page.click("#camera-start")
    page.wait_for_selector("#live-error:has-text('The server is busy')", timeout=30_000)
    for _ in range(100):  # requests reach the route handler only while Playwright is called: wait for the next
        if len(asked) > 1:
            break
        page.wait_for_timeout(100)
    page.click("#camera-stop")
    assert len(asked) > 1 and asked[1] - asked[0] >= 2.8, asked


@pytest.mark.parametrize("code", [503, 429], ids=["503", "a proxy's 429"])
def test_live_mode_waits_a_minute_at_most_for_503s(browser, server: Server, code: int) -> None:
    """Live mode asked retryWait with no running total: a 503 without Retry-After (a proxy's, say) was waited 1 s
    per frame for ever, one with Retry-After: 30 every 30 s for ever. Its waits now add up as a photo's do (1, 2, 4,
    8, 16 s, then the 29 s left of the minute); after the minute the camera stops and says so in one sentence. A
    rate-limiting proxy's 429 was sent the next frame at once, 8 a second; it is waited for as a 503 is."""
    asked: list = []

    def unavailable(route) -> None:
        asked.append(route)
        route.fulfill(status=code, json={"error": f"Service unavailable (frame {len(asked)})."})

    context, page = _page_on_a_paused_clock(browser)
    context.grant_permissions(["camera"], origin=server.url)
    page.goto(server.url + "/")
    page.evaluate(RECORD_STREAMS)
    page.route("**/api/v1/predict", unavailable)
    page.click("#camera-start")
    for _ in range(300):  # the loop looks for the camera's first picture every 100 ms, on the paused clock
        if asked:
            break
        page.clock.run_for(100)
        page.wait_for_timeout(100)
    for count, seconds in enumerate([1, 2, 4, 8, 16, 29], start=1):
        _until_asked(page, asked, count)
        page.wait_for_selector(f"#live-error:has-text('(frame {count}).')", timeout=10_000)
        page.clock.run_for(seconds * 1000 - 500)
        page.wait_for_timeout(300)  # a frame sent too early would reach the route handler now
        assert len(asked) == count, f"a frame sent within {seconds - 0.5} s of a 503 it waits {seconds} s for"
        page.clock.run_for(500)
    said = "The server is still busy after 60 s of waiting; press Start camera to try again."
    page.wait_for_selector(f"#live-error:has-text('{said}')", timeout=10_000)
    page.clock.run_for(60_000)
    page.wait_for_timeout(500)  # a frame the page sent would reach the route handler now
    assert len(asked) == 7, f"{len(asked)} frames sent"
    assert page.evaluate(LIVE_STREAMS) == 0, "the camera is still on"
    assert page.locator("#camera-start").is_enabled()
    context.close()
    assert not page.errors, f"JavaScript errors on the page: {page.errors}"


def test_live_mode_stops_on_a_500(page) -> None:
    """A model that failed to load is a 500 now: live mode sent it a frame every 125 ms for as long as the camera
    was on (31 frames in 4 s against a real server of a broken config.json), each answered the same. A 500 now
    stops the camera, with the server's sentence kept."""
    asked: list = []

    def failed(route) -> None:
        asked.append(route)
        route.fulfill(status=500, json={"error": FAILED_TO_LOAD})

    page.route("**/api/v1/predict", failed)
    page.click("#camera-start")
    page.wait_for_selector("#live-info:has-text('Camera stopped.')", timeout=30_000)
    page.wait_for_timeout(1_000)  # 8 frames at 125 ms each, had the loop gone on
    assert len(asked) == 1, f"{len(asked)} frames sent"
    assert page.locator("#live-error").inner_text() == FAILED_TO_LOAD
    assert page.locator("#camera-start").is_enabled()


def _until_asked(page, asked: list, count: int, seconds: float = 30) -> None:
    """Wait until route handlers have seen ``count`` requests: they run only while Playwright is called."""
    for _ in range(int(seconds * 10)):
        if len(asked) >= count:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"{len(asked)} requests in {seconds:g} s, not {count}")


def run_clock_until_asked(page, asked: list, count: int, step_ms: int = 1_500, steps: int = 10) -> None:
    """Run a paused clock ``step_ms`` at a time until route handlers have seen ``count`` requests.

    The page sets its next ask only once it has read the last answer, which a loaded machine may do after the test's
    first run forward: that run then fired nothing, and the clock, paused, never asked again (a CI run waited 30 s)."""
    for _ in range(steps):
        page.clock.run_for(step_ms)
        for _ in range(20):  # route handlers run only while Playwright is called
            if len(asked) >= count:
                return
            page.wait_for_timeout(100)
    raise AssertionError(f"{len(asked)} requests after {steps} runs of the clock, not {count}")


# In the page: from now on, every text of the live region of photos, in window.announced.
RECORD_ANNOUNCED = """() => { window.announced = []; const region = document.getElementById('announce');
    new MutationObserver(() => region.textContent && window.announced.push(region.textContent))
        .observe(region, { childList: true }); }"""


def test_a_screen_reader_is_told_once_that_the_server_asks_to_wait(page, cat_photo: Path, dog_photo: Path) -> None:
    """A card's "The server asks to wait; trying again in N s…" is no live region: a screen reader heard
    "Classifying 2 photos…", then nothing until the batch was answered, up to a minute later. The live region now
    says once per batch that the server asked to wait: here both photos are first answered 503 (Retry-After: 1)."""
    asked: list[float] = []

    def busy_at_first(route) -> None:
        asked.append(time.monotonic())
        if len(asked) > 2:
            route.continue_()
        else:
            route.fulfill(status=503, headers={"Retry-After": "1"}, json={"error": "The server is busy; try again."})

    page.route("**/api/v1/predict", busy_at_first)
    page.evaluate(RECORD_ANNOUNCED)
    page.set_input_files("#file-input", [str(cat_photo), str(dog_photo)])
    page.wait_for_selector("#results .card[data-state=done] >> nth=1", timeout=30_000)
    page.wait_for_function("window.announced.some((text) => text.endsWith('percent.'))")
    assert len(asked) == 4, asked
    announced = page.evaluate("window.announced")
    assert announced[:2] == ["Classifying 2 photos…", "The server asks to wait; still classifying…"], announced
    assert len(announced) == 3, announced


@pytest.mark.parametrize("code", [503, 429], ids=["503", "a proxy's 429"])
def test_a_photo_waits_for_a_busy_server_a_minute_at_most(page, cat_photo: Path, code: int) -> None:
    """A photo's retries waited each 503's Retry-After, up to 20 times: 10 minutes at 30 s before the card said
    anything. The waits now add up to a minute at most; then the card says in one sentence that the server is
    still busy. Every answer here is a 503, with Retry-After: 30, then 25, then 25 (30 + 25 + 25 is over a minute),
    on the page's own clock, run forward by Playwright: the page asks 3 times, then stops. (Each wait has its own
    words, so the test runs the clock only once the page has read that 503.) A rate-limiting proxy's 429 was the
    card's error at once; it is waited for as a 503 is."""
    asked: list[float] = []

    def busy(route) -> None:
        asked.append(time.monotonic())
        wait = "30" if len(asked) == 1 else "25"
        route.fulfill(status=code, headers={"Retry-After": wait}, json={"error": "The server is busy; try again."})

    page.clock.install()
    page.route("**/api/v1/predict", busy)
    page.set_input_files("#file-input", str(cat_photo))
    card = page.locator("#results .card")
    for seconds in (30, 25):
        page.wait_for_selector(f"#results .card .answer:has-text('trying again in {seconds} s')", timeout=10_000)
        page.clock.run_for(seconds * 1000)
    page.wait_for_selector("#results .card[data-state=error]", timeout=10_000)
    assert card.locator(".error").inner_text() == "The server is still busy after 55 s of waiting; try again later."
    assert len(asked) == 3, asked


@pytest.mark.parametrize("first_frame", ["answered 503", "still out"])
def test_restarting_the_camera_leaves_one_live_loop(page, first_frame: str) -> None:
    """The camera stopped while live mode waited out a 503's Retry-After, or while a frame was still out, and
    started again: once that wait or answer was over the old loop went on beside the new one, twice the frames.
    Stopping now ends the loop, its wait and its request. Every frame but the first is held unanswered here, so one
    loop has one frame out and sends no other."""
    asked: list = []

    def frames(route) -> None:
        asked.append(route)
        if len(asked) == 1 and first_frame == "answered 503":
            route.fulfill(status=503, headers={"Retry-After": "2"}, json={"error": "The server is busy; try again."})

    page.route("**/api/v1/predict", frames)
    page.click("#camera-start")
    _until_asked(page, asked, 1)
    if first_frame == "answered 503":
        page.wait_for_selector("#live-error:has-text('The server is busy')", timeout=10_000)
    page.click("#camera-stop")
    page.click("#camera-start")
    _until_asked(page, asked, 2)
    if first_frame == "still out":
        asked[0].continue_()  # its answer comes after the restart
    page.wait_for_timeout(3_000)  # past the 503's 2 s, or the old frame's answer and the 125 ms between frames
    assert len(asked) == 2, f"{len(asked)} frames sent: more than one loop"
    page.click("#camera-stop")


def _page_on_a_paused_clock(browser):
    """A context and a page whose clock moves only when run forward by the test, not with the real seconds a
    loaded machine takes between two steps (a clock left to flow fired a 20 s wait within a test's 19)."""
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.clock.install(time=0)
    page.clock.pause_at(1_000)
    return context, page


@pytest.mark.parametrize(
    ("code", "retry_after", "waits"),
    [(503, "20", [20, 20, 20]), (503, None, [1, 2, 4, 8, 16, 29]), (429, "20", [20, 20, 20])],
    ids=["Retry-After 20", "no Retry-After", "a proxy's 429"],
)
def test_the_page_asks_whether_the_model_is_ready_as_a_503_asks(
    browser, server: Server, code: int, retry_after: str | None, waits: list[int]
) -> None:
    """The page asked whether the model was ready every 1.5 s, whatever a 503's Retry-After said, and forever.
    It now waits what Retry-After names (retryWait, as a photo does), a minute of waits at most, then says to
    reload the page, after the server's own reason. With Retry-After: 20 it asks at 0, 20, 40 and 60 s; the fourth
    503 would take the waits past a minute, so the page says so. A 503 without Retry-After (a proxy's) was asked
    again every second, 60 times; it is now asked after 1, 2, 4, 8, 16 s, then the 29 s left of the minute. A
    rate-limiting proxy's 429 stopped the check for good; it is asked again as a 503 is."""
    asked: list = []

    def loading(route) -> None:
        asked.append(route)
        # Each answer its own words: the status line then shows that the page has read this one (and set its wait).
        error = f"The model is still loading (ask {len(asked)})."
        headers = {"Retry-After": retry_after} if retry_after else {}
        route.fulfill(status=code, headers=headers, json={"error": error})

    context, page = _page_on_a_paused_clock(browser)
    page.route("**/api/v1/model", loading)
    page.goto(server.url + "/")
    for count, seconds in enumerate(waits, start=1):
        _until_asked(page, asked, count)
        page.wait_for_selector(f"#model-status:has-text('(ask {count}).')", timeout=10_000)
        page.clock.run_for(seconds * 1000 - 500)
        assert len(asked) == count, f"asked again within {seconds - 0.5} s of a 503 it waits {seconds} s for"
        page.clock.run_for(500)
    last = len(waits) + 1
    status = page.locator("#model-status")
    status.filter(has_text="reload").wait_for(timeout=10_000)
    assert status.inner_text() == (  # the server's reason kept
        f"The model is still loading (ask {last}). Still not ready after 60 s; reload the page to try again."
    )
    assert len(asked) == last, len(asked)
    context.close()
    assert not page.errors, f"JavaScript errors on the page: {page.errors}"


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (404, "<html><body>404 Not Found</body></html>", "The page finds no catdog API at /api/v1/model (HTTP 404): "
         "behind a proxy, check its path to catdog and catdog serve's --root-path."),
        (500, "", "The server answered HTTP 500 when asked about its model; its log says why."),
    ],
    ids=["a proxy's 404", "a 500 without a sentence"],
)  # fmt: skip
def test_the_page_stops_asking_whether_the_model_is_ready_on_a_404_or_500(
    browser, server: Server, status: int, body: str, said: str
) -> None:
    """The page asked whether the model was ready every 1.5 s for ever when that answered 404 (a reverse proxy
    with the wrong path or --root-path) or 500 (a broken server), and said only "The model is not ready (HTTP
    404)". Asking again changes neither: the page now asks once and says in one sentence what is wrong."""
    asked: list = []

    def broken(route) -> None:
        asked.append(route)
        route.fulfill(status=status, body=body, content_type="text/html")

    context, page = _page_on_a_paused_clock(browser)
    page.route("**/api/v1/model", broken)
    page.goto(server.url + "/")
    _until_asked(page, asked, 1)
    page.wait_for_selector(f"#model-status:has-text('HTTP {status}')", timeout=10_000)
    page.clock.run_for(60_000)
    page.wait_for_timeout(500)  # a request the page sent would reach the route handler now
    assert page.locator("#model-status").inner_text() == said
    assert len(asked) == 1, f"asked {len(asked)} times"
    context.close()
    assert not page.errors, f"JavaScript errors on the page: {page.errors}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_readiness_line_is_announced_and_keeps_the_option_whole_on_a_phone(
    browser, server: Server, scheme: str
) -> None:
    """The page's readiness line changes on its own (the model ready, not ready, failed), but was no live region,
    so a screen reader never said it; it is a status now. On a phone 360 px wide its 404 sentence broke inside
    "--root-path", leaving "--" at a line's end (at some widths, with some fonts); the option now stays whole."""
    context = browser.new_context(
        viewport={"width": 360, "height": 740}, device_scale_factor=2, color_scheme=scheme, bypass_csp=True
    )
    page = context.new_page()
    page.route("**/api/v1/model", lambda route: route.fulfill(status=404, body="Not Found", content_type="text/html"))
    page.goto(server.url + "/")
    status = page.locator("#model-status")
    status.filter(has_text="HTTP 404").wait_for(timeout=10_000)
    assert status.get_attribute("role") == "status"
    assert status.inner_text().endswith("catdog serve's --root-path.")
    shot(page, f"test_the_readiness_404_on_a_phone_{scheme}")
    # Where a line ends depends on the fonts: every width of a small phone's, 2 px apart (here 386-394 px broke it).
    broken = []
    for width in range(280, 430, 2):
        page.set_viewport_size({"width": width, "height": 740})
        if page.evaluate(LINES_OF, ["model-status", "--root-path"]) != 1:
            broken.append(width)
    assert not broken, f"--root-path broken across lines at widths {broken}"
    context.close()


def test_the_readiness_line_fits_a_phone_zoomed_to_200_percent(browser, server: Server) -> None:
    """On a 375 px phone zoomed to 200 % (187 CSS px), "Model: builtin (tf_efficientnet_lite0), …" ran 9 px past
    the screen's edge: the model's name is one word. It breaks where it must now."""
    context = browser.new_context(viewport={"width": 187, "height": 406}, device_scale_factor=4, bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#model-status:has-text('Model:')")
        sizes = page.evaluate("(e => [e.scrollWidth, e.clientWidth])(document.getElementById('model-status'))")
        assert sizes[0] <= sizes[1], sizes
    finally:
        context.close()


def test_the_page_asks_again_while_a_proxy_cannot_reach_the_server(browser, server: Server) -> None:
    """A proxy's 502 or 504 (catdog serve restarting behind it) stopped the page's readiness check for good, as a
    404 does, though asking again is what mends it. Both are now asked again after 1.5 s, as an unreachable
    server is, and the page shows the model once the proxy reaches it."""
    asked: list = []

    def through_a_proxy(route) -> None:
        asked.append(route)
        if len(asked) > 2:
            route.continue_()
            return
        status = (502, 504)[len(asked) - 1]
        route.fulfill(status=status, body=f"<html><body>{status}</body></html>", content_type="text/html")

    context, page = _page_on_a_paused_clock(browser)
    page.route("**/api/v1/model", through_a_proxy)
    page.goto(server.url + "/")
    for count, status in enumerate((502, 504), start=1):
        _until_asked(page, asked, count)
        said = f"The proxy cannot reach the server (HTTP {status}); retrying…"
        page.wait_for_selector(f"#model-status:has-text('{said}')", timeout=10_000)
        page.clock.run_for(1_500)
    page.wait_for_selector("#model-status:has-text('Model:')", timeout=30_000)
    assert len(asked) == 3, f"asked {len(asked)} times"
    context.close()
    assert not page.errors, f"JavaScript errors on the page: {page.errors}"


def test_the_readiness_line_is_said_again_only_when_it_changes(browser, server: Server) -> None:
    """The readiness line became a live region (role=status), but the page wrote it afresh at every ask, in the
    same words: a screen reader said "The proxy cannot reach the server…" again every 1.5 s for as long as the
    proxy could not. It is now replaced only when it says something new: here 502 three times, then the model."""
    asked: list = []

    def through_a_proxy(route) -> None:
        asked.append(route)
        if len(asked) > 3:
            route.continue_()
            return
        route.fulfill(status=502, body="<html><body>502</body></html>", content_type="text/html")

    context, page = _page_on_a_paused_clock(browser)
    page.route("**/api/v1/model", through_a_proxy)
    page.goto(server.url + "/")
    _until_asked(page, asked, 1)
    page.wait_for_selector("#model-status:has-text('HTTP 502')", timeout=10_000)
    page.evaluate(
        """() => { window.said = []; new MutationObserver(() => window.said.push(document.getElementById(
        'model-status').textContent)).observe(document.getElementById('model-status'), { childList: true }); }"""
    )
    for count in (2, 3, 4):
        run_clock_until_asked(page, asked, count)
    page.wait_for_selector("#model-status:has-text('Model:')", timeout=30_000)
    said = page.evaluate("window.said")
    assert len(said) == 1 and said[0].startswith("Model:"), said
    context.close()
    assert not page.errors, f"JavaScript errors on the page: {page.errors}"


def test_a_model_that_failed_to_load_is_said_once_on_the_page(browser, tmp_path: Path, cat_photo: Path) -> None:
    """A model that failed to load was a 503 without Retry-After: the page asked again every second for a minute,
    then said to reload the page, which cannot help. The server now answers 500 with what to do (restart with a
    model that loads; why is in its log); the page shows that sentence after one ask, and a photo's card at once."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{ not json")
    srv = Server("--model", str(model), log=tmp_path / "server.log")
    try:
        srv.wait("/readyz", status=500, timeout=60)
        asked: list = []
        context, page = _page_on_a_paused_clock(browser)
        page.route("**/api/v1/model", lambda route: (asked.append(route), route.continue_()))
        page.goto(srv.url + "/")
        status = page.locator("#model-status")
        status.filter(has_text="could not be loaded").wait_for(timeout=10_000)
        said = status.inner_text()
        assert said == FAILED_TO_LOAD, said
        page.clock.run_for(60_000)
        page.wait_for_timeout(500)
        assert len(asked) == 1, f"asked {len(asked)} times"
        page.set_input_files("#file-input", str(cat_photo))
        page.wait_for_selector("#results .card[data-state=error]", timeout=10_000)
        assert page.locator("#results .card .error").inner_text() == said
        context.close()
        assert not page.errors, f"JavaScript errors on the page: {page.errors}"
    finally:
        srv.stop()


def test_start_clicked_twice_while_the_camera_starts_opens_one_stream(page) -> None:
    """Start clicked again while the browser was still asking for the camera asked for a second stream; the first
    was never stopped, so the camera stayed on after Stop. A click while the camera starts now does nothing."""
    page.route("**/api/v1/predict", lambda route: None)  # frames held unanswered: this is about the camera
    page.evaluate(RECORD_STREAMS)
    # Both clicks before the browser answers the first: a user's double click on a slow permission prompt.
    page.locator("#camera-start").evaluate("button => { button.click(); button.click(); }")
    page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30_000)
    page.wait_for_timeout(500)  # a second stream, if one was asked for, comes by now
    asked = page.evaluate("window.streams.length")
    page.click("#camera-stop")
    assert (asked, page.evaluate(LIVE_STREAMS)) == (1, 0), "camera streams asked for, and still live after Stop"


def test_the_camera_started_again_shows_no_answer_of_the_last_session(page) -> None:
    """Started again, the live answer said "…" and "Camera on…" but its confidence bar still stood at the last
    session's answer (97 % here) until a frame was answered. It now starts empty too. The first frame is answered
    "cat", every frame after it held unanswered."""
    asked: list = []

    def frames(route) -> None:
        asked.append(route)
        if len(asked) == 1:
            probabilities = {"cat": 0.97, "dog": 0.02, "neither": 0.01}
            route.fulfill(json={"label": "cat", "confidence": 0.97, "probabilities": probabilities})

    page.route("**/api/v1/predict", frames)
    page.click("#camera-start")
    page.wait_for_selector("#live-label[data-label=cat]", timeout=30_000)
    assert page.get_attribute("#live-bar", "aria-valuenow") == "97"
    page.click("#camera-stop")
    page.click("#camera-start")
    page.wait_for_selector("#live-info:has-text('Camera on')", timeout=30_000)
    bar = page.evaluate(
        "[document.getElementById('live-bar').getAttribute('aria-valuenow'), "
        "document.querySelector('#live-bar span').style.width]"
    )
    assert (page.locator("#live-label").inner_text(), bar) == ("…", ["0", "0%"]), bar
    page.click("#camera-stop")


@pytest.mark.parametrize("hidden", ["while the camera runs", "while the browser asks for it"])
def test_in_the_background_the_camera_is_let_go_until_the_page_is_back(page, hidden: str) -> None:
    """Live mode went on in a background tab, the camera's light on and frames sent to the server, whether the
    camera ran when the page was hidden or was still asked for (its permission prompt answered late). The camera
    is now let go while the page is hidden, and taken again when it is back, as in the phone app: one stream.
    Taken again, it said "Camera stopped." until the first frame was answered (never, here); it now says it is on."""
    page.route("**/api/v1/predict", lambda route: None)  # frames held unanswered: this is about the camera
    page.evaluate(RECORD_STREAMS, hidden == "while the browser asks for it")
    page.click("#camera-start")
    if hidden == "while the camera runs":
        page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30_000)
        page.evaluate(SET_HIDDEN, True)
    else:
        page.evaluate(SET_HIDDEN, True)
        page.evaluate("window.answerCamera()")
        page.wait_for_function("window.streams.length === 1", timeout=30_000)
    page.wait_for_timeout(500)  # the page has had the stream for a while
    assert page.evaluate(LIVE_STREAMS) == 0, "a camera live while the page is in the background"
    page.evaluate(SET_HIDDEN, False)
    page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30_000)
    assert (page.evaluate("window.streams.length"), page.evaluate(LIVE_STREAMS)) == (2, 1)
    said = (page.locator("#live-label").inner_text(), page.locator("#live-info").inner_text())
    assert said == ("…", "Camera on: classifying the first frame…"), said
    page.click("#camera-stop")
    assert page.evaluate(LIVE_STREAMS) == 0, "a camera live after Stop"


def test_a_camera_the_system_ends_stops_live_mode_with_a_sentence(page) -> None:
    """A webcam the system ends (another app takes it, it is unplugged) left live mode sending the last picture,
    or black ones, to the server and showing their answers, with nothing said. Live mode now stops and says so, as
    the phone app does, and sends no more frames."""
    asked: list = []
    page.route("**/api/v1/predict", lambda route: (asked.append(route), route.continue_()))
    page.click("#camera-start")
    _until_asked(page, asked, 2)
    page.evaluate("document.getElementById('video').srcObject.getVideoTracks()[0].dispatchEvent(new Event('ended'))")
    assert page.locator("#live-error").inner_text() == CAMERA_ENDED  # the phone app's sentence
    assert page.locator("#camera-start").is_enabled() and page.evaluate("document.getElementById('video').hidden")
    page.wait_for_timeout(300)  # the route handlers see what was sent before the camera ended
    sent = len(asked)
    page.wait_for_timeout(1_000)  # 8 frames a second, were live mode still on
    assert len(asked) == sent, f"{len(asked) - sent} frames sent after the camera ended"


def test_a_camera_the_system_interrupts_pauses_live_mode_until_it_is_back(page) -> None:
    """A camera the system interrupts without ending it (iOS: a phone call, another app taking the camera) fires
    `mute`, then `unmute`; live mode went on sending its black or frozen frames and showing their answers, with
    nothing said. It now sends none while the camera is muted, says why, and goes on once it is back."""
    # When each frame was sent (the browser's resource timing: a request's start, from its fetch() call).
    sent = """() => performance.getEntriesByType('resource')
        .filter((entry) => entry.name.endsWith('/api/v1/predict')).map((entry) => entry.startTime)"""
    frames: list = []  # their requests: the third is held, and answered only once the camera is interrupted

    def third_held(route) -> None:
        frames.append(route)
        if len(frames) != 3:
            route.continue_()

    page.evaluate("performance.setResourceTimingBufferSize(10_000)")
    page.route("**/api/v1/predict", third_held)
    page.click("#camera-start")
    _until_asked(page, frames, 3)
    track = "document.getElementById('video').srcObject.getVideoTracks()[0]"
    muted_at = page.evaluate(f"() => {{ {track}.dispatchEvent(new Event('mute')); return performance.now(); }}")
    assert page.locator("#live-error").inner_text() == CAMERA_INTERRUPTED  # the phone app's sentence
    # The last answer stays, dimmed, and the line under it says it is from before (not "classifying the first
    # frame…" or the last frame's speed).
    assert page.locator("#live-info").inner_text() == LIVE_PAUSED
    assert page.evaluate("getComputedStyle(document.getElementById('live-label')).opacity") == "0.4"
    frames[2].continue_()  # a frame sent before the mute, answered after it: however slow the server
    page.wait_for_function(f"({sent})().length >= 3", timeout=30_000, polling=100)
    page.wait_for_timeout(1_000)  # 8 frames a second, were live mode still sending
    assert page.locator("#live-error").inner_text() == CAMERA_INTERRUPTED, "an answer's error line replaced it"
    assert page.locator("#live-info").inner_text() == LIVE_PAUSED, "a frame sent before the mute was shown"
    unmuted_at = page.evaluate(f"() => {{ {track}.dispatchEvent(new Event('unmute')); return performance.now(); }}")
    assert page.locator("#live-error").inner_text() == ""
    page.wait_for_function(f"({sent})().filter((t) => t > {unmuted_at}).length >= 2", timeout=30_000, polling=100)
    page.locator("#live-info", has_text="ms per frame").wait_for(timeout=30_000)
    assert page.evaluate("getComputedStyle(document.getElementById('live-label')).opacity") == "1"
    while_muted = [t for t in page.evaluate(sent) if muted_at < t < unmuted_at]
    assert not while_muted, f"{len(while_muted)} frames sent while the camera was interrupted"
    # Stopped while interrupted, the camera does not go on when it is back: the sentence saying it would goes.
    page.evaluate(f"{track}.dispatchEvent(new Event('mute'))")
    page.click("#camera-stop")
    assert page.locator("#live-error").inner_text() == "", "a stopped camera still said its answers would go on"


def test_the_paused_line_needs_an_answer_and_the_dimming_lasts_until_a_new_one(page) -> None:
    """Interrupted before its first answer (a camera that starts muted), the page said "Paused: the answer shown is
    from before the camera was interrupted." with no answer shown; at unmute it showed the old answer at full
    brightness until the next frame's. The line now needs an answer, and the old one stays dimmed until a new one
    comes."""
    frames: list = []
    holding = [True]  # while true, each frame's request waits until the test lets it go
    page.route("**/api/v1/predict", lambda route: (frames.append(route), holding[0] or route.continue_()))
    track = "document.getElementById('video').srcObject.getVideoTracks()[0]"
    opacity = "getComputedStyle(document.getElementById('live-label')).opacity"
    page.click("#camera-start")
    _until_asked(page, frames, 1)
    page.evaluate(f"{track}.dispatchEvent(new Event('mute'))")
    assert page.locator("#live-error").inner_text() == CAMERA_INTERRUPTED
    assert page.locator("#live-info").inner_text() == "", "the paused line said with no answer shown"
    page.evaluate(f"{track}.dispatchEvent(new Event('unmute'))")
    holding[0] = False
    frames[0].continue_()
    page.locator("#live-info", has_text="ms per frame").wait_for(timeout=30_000)
    holding[0], out = True, len(frames)
    _until_asked(page, frames, out + 1)  # a frame held: no new answer until the test lets it go
    page.evaluate(f"{track}.dispatchEvent(new Event('mute'))")
    assert page.locator("#live-info").inner_text() == LIVE_PAUSED
    page.evaluate(f"{track}.dispatchEvent(new Event('unmute'))")
    assert page.evaluate(opacity) == "0.4", "the answer from before the interruption shown as if new"
    holding[0] = False
    frames[-1].continue_()
    page.locator("#live-info", has_text="ms per frame").wait_for(timeout=30_000)
    assert page.evaluate(opacity) == "1"
    page.click("#camera-stop")


def test_a_frame_sent_before_an_interruption_is_no_new_answer_after_it(page) -> None:
    """A frame sent before the camera was interrupted (`mute`) and answered after it was back (`unmute`) was shown
    as the new answer: the old answer's dimming ended on a picture from before (the phone app's fault too). Such a
    frame is now no answer: the dimming lasts until a frame sent since the unmute is answered."""
    frames: list = []
    holding = [False]  # while true, each frame's request waits until the test lets it go
    page.route("**/api/v1/predict", lambda route: (frames.append(route), holding[0] or route.continue_()))
    track = "document.getElementById('video').srcObject.getVideoTracks()[0]"
    opacity = "getComputedStyle(document.getElementById('live-label')).opacity"
    page.click("#camera-start")
    page.locator("#live-info", has_text="ms per frame").wait_for(timeout=30_000)
    holding[0], out = True, len(frames)
    _until_asked(page, frames, out + 1)  # held: a frame sent before the interruption
    page.evaluate(f"{track}.dispatchEvent(new Event('mute'))")
    page.evaluate(f"{track}.dispatchEvent(new Event('unmute'))")
    frames[out].continue_()
    _until_asked(page, frames, out + 2)  # one frame at a time: the old frame's answer has been read
    assert page.evaluate(opacity) == "0.4", "a frame sent before the interruption ended its dimming"
    assert page.locator("#live-info").inner_text() == "Camera back: classifying…"
    holding[0] = False
    frames[out + 1].continue_()
    page.locator("#live-info", has_text="ms per frame").wait_for(timeout=30_000)
    assert page.evaluate(opacity) == "1"
    page.click("#camera-stop")


def test_a_frame_whose_request_fails_while_interrupted_leaves_the_sentence(page) -> None:
    """A frame sent before the camera was interrupted whose request failed after it (the server gone) put "The
    server cannot be reached ..." over "The camera is interrupted ..." while the camera was still interrupted: the
    page kept the sentence from a frame's answer, not from a failed request."""
    frames: list = []
    page.route("**/api/v1/predict", lambda route: frames.append(route))  # each held until the test ends it
    # window.settled counts the requests settled: its callback runs just before the page's own, in one go.
    page.evaluate("""() => {
        const fetchOnce = window.fetch;
        window.settled = 0;
        window.fetch = (...args) => {
            const answer = fetchOnce(...args);
            answer.finally(() => { window.settled += 1; }).catch(() => {});
            return answer;
        };
    }""")
    page.click("#camera-start")
    _until_asked(page, frames, 1)
    page.evaluate("document.getElementById('video').srcObject.getVideoTracks()[0].dispatchEvent(new Event('mute'))")
    frames[0].abort()
    page.wait_for_function("window.settled >= 1", timeout=30_000, polling=100)
    assert page.locator("#live-error").inner_text() == CAMERA_INTERRUPTED, "a failed request's line replaced it"
    page.click("#camera-stop")


def test_a_camera_another_app_took_while_the_page_was_hidden_is_said_plainly(page) -> None:
    """The page lets the camera go while it is hidden, so another app can take the webcam meanwhile; taking it
    again on return then failed with "The camera cannot be started (NotReadableError).", an error's name and
    nothing to do. The page now says what the phone app says, in one sentence (app/shares.js)."""
    page.route("**/api/v1/predict", lambda route: None)  # frames held unanswered: this is about the camera
    page.click("#camera-start")
    page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30_000)
    page.evaluate(SET_HIDDEN, True)
    # Another app has the webcam now: the browser's next answer is the error it gives then.
    page.evaluate("""() => {
        navigator.mediaDevices.getUserMedia = async () => {
            throw new DOMException("Could not start video source", "NotReadableError");
        };
    }""")
    page.evaluate(SET_HIDDEN, False)
    error = page.locator("#live-error")
    error.filter(has_text="camera").wait_for(timeout=10_000)
    assert error.inner_text() == "The camera is in use by another app: close it, then try again."
    assert page.locator("#camera-start").is_enabled() and page.evaluate("document.getElementById('video').hidden")


def test_the_camera_let_go_or_ended_leaves_the_keyboard_focus_where_it_was(page) -> None:
    """Stopping the camera moved the keyboard focus to Start, and starting it to Stop, whoever did it: with the
    camera let go and taken again as the page was hidden and shown, or ended by the system, the focus jumped from
    wherever the person was (a screen reader then reads Stop camera). Only a focus on the button disabled moves on
    to the other one now."""
    page.route("**/api/v1/predict", lambda route: None)  # frames held unanswered: this is about the camera
    focused = "document.activeElement.id"
    page.focus("#camera-start")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30_000)
    assert page.evaluate(focused) == "camera-stop"  # the keyboard goes on from Stop

    page.focus("#clear")
    page.evaluate(SET_HIDDEN, True)
    assert page.evaluate(focused) == "clear"
    page.evaluate(SET_HIDDEN, False)
    page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30_000)
    assert page.evaluate(focused) == "clear"

    page.evaluate("document.getElementById('video').srcObject.getVideoTracks()[0].dispatchEvent(new Event('ended'))")
    assert page.locator("#live-error").inner_text().startswith("The camera stopped")
    assert page.evaluate(focused) == "clear"

    page.focus("#camera-start")
    page.keyboard.press("Enter")
    page.wait_for_function("document.activeElement.id === 'camera-stop'", timeout=30_000)
    page.keyboard.press("Enter")
    assert page.evaluate(focused) == "camera-start"  # and from Start again, once stopped


def test_an_onnx_file_served_offers_no_heat_maps(
    browser, onnx_model_file: Path, cat_photo: Path, tmp_path: Path
) -> None:
    """`catdog serve --model model.onnx` offered "Show heat maps" and a "Show heat map" button on every card, and
    each only said "Grad-CAM needs the PyTorch model": an .onnx file holds none. What was offered while the page
    waited for the model (a photo's button, the checkbox ticked) is taken back: a hidden checkbox left ticked
    asked for every photo's heat map, and each card showed its failure."""
    with running("--model", str(onnx_model_file), log=tmp_path / "server.log") as server:
        assert httpx.get(server.url + "/api/v1/model").json()["heat_maps"] is False
        context = browser.new_context(bypass_csp=True)
        page = context.new_page()
        explained: list[str] = []
        page.on("request", lambda request: "/api/v1/explain" in request.url and explained.append(request.url))
        held: list = []
        page.route("**/api/v1/model", lambda route: held.append(route))  # the page waits for the model meanwhile
        try:
            page.goto(server.url + "/")
            _until_asked(page, held, 1)
            page.set_input_files("#file-input", str(cat_photo))
            card = page.locator("#results .card[data-state=done]")
            card.wait_for(timeout=30_000)
            assert card.get_attribute("data-label") == "cat"
            assert card.locator(".heat-button").is_visible()  # offered before the page knew
            held.pop().continue_()
            page.wait_for_selector("#model-status:has-text('Model:')")
            assert card.locator(".heat-button").is_hidden()
            assert page.locator("label:has(#heatmap-toggle)").is_hidden()

            page.reload()
            _until_asked(page, held, 1)
            page.check("#heatmap-toggle")
            held.pop().continue_()
            page.wait_for_selector("#model-status:has-text('Model:')")
            assert not page.is_checked("#heatmap-toggle")
            page.set_input_files("#file-input", str(cat_photo))
            card.wait_for(timeout=30_000)
            # The batch's summary waits for the heat maps asked for: none now ("..., no heat map: Grad-CAM needs ...").
            page.wait_for_function("(name) => document.getElementById('announce').textContent.startsWith(name)",
                                   arg=f"{cat_photo.name}: ")  # fmt: skip
            assert page.text_content("#announce").endswith(" percent.")
            assert card.locator(".heat-button").is_hidden() and card.locator(".error").is_hidden()
            assert explained == []
        finally:
            context.close()
