"""The JSON API called by a page of another site (CORS), in Chromium against a real ``catdog serve``.

A web developer puts a cat/dog check into their own site's page, whose script calls catdog on another origin.
Without ``--cors-origin`` the browser lets that page read no answer (the safe default); with it, the origins named
read every answer, errors included, and no other origin does.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import test_browser

from conftest import run_catdog_in_process
from serving import Server, running

browser = test_browser.browser  # that module's Chromium, a fixture here too
playwright = test_browser.playwright  # the browser fixture's own

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("builtin_model")]

# What the other site's script does: one photo as a form, the same as a raw image/jpeg body (which the browser
# asks the server about first: a preflight), and a text file, whose 415 and its sentence the page must read too.
CALLS = """async ([api, photo]) => {
  const bytes = Uint8Array.from(atob(photo), (c) => c.charCodeAt(0));
  const jpeg = new Blob([bytes], { type: "image/jpeg" });
  const form = new FormData();
  form.append("file", jpeg, "cat.jpg");
  const calls = {
    multipart: { method: "POST", body: form },
    raw: { method: "POST", body: jpeg, headers: { "Content-Type": "image/jpeg" } },
    text: { method: "POST", body: "not a photo", headers: { "Content-Type": "image/jpeg" } },
  };
  const out = {};
  for (const [name, init] of Object.entries(calls)) {
    try {
      const res = await fetch(api + "/api/v1/predict", init);
      out[name] = [res.status, await res.json()];
    } catch (err) {
      out[name] = String(err);
    }
  }
  return out;
}"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request in the test's output
        pass


@contextmanager
def other_site(folder: Path) -> Iterator[str]:
    """A static site on its own port (its own origin) with one empty page: the integrator's site."""
    (folder / "index.html").write_text("<!doctype html><title>Another site</title><p>Pets welcome.</p>")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two other sites: the one catdog is told to allow, and one it is not."""
    folders = tmp_path_factory.mktemp("allowed"), tmp_path_factory.mktemp("other")
    with other_site(folders[0]) as allowed, other_site(folders[1]) as other:
        yield allowed, other


def calls_from(browser, site: str, server: Server, photo: bytes) -> dict:
    page = browser.new_page()
    try:
        page.goto(site + "/")
        return page.evaluate(CALLS, [server.url, base64.b64encode(photo).decode()])
    finally:
        page.close()


def test_by_default_no_other_site_reads_an_answer(browser, sites, tmp_path: Path, cat_photo: Path) -> None:
    """The safe default: the browser gives another site's script no answer. It still sends the form (a "simple"
    request, answered but unreadable), as the docs say; the raw bodies it asks about first, and sends none."""
    allowed, _ = sites
    with running(log=tmp_path / "server.log") as server:
        out = calls_from(browser, allowed, server, cat_photo.read_bytes())
        preflight = httpx.options(
            server.url + "/api/v1/predict",
            headers={"Origin": allowed, "Access-Control-Request-Method": "POST"},
        )
        counted = httpx.get(server.url + "/metrics").text
    assert out == {name: "TypeError: Failed to fetch" for name in ("multipart", "raw", "text")}, out
    assert "access-control-allow-origin" not in preflight.headers
    assert 'method="POST",route="/api/v1/predict",status="200"} 1.0' in counted  # the form, answered
    assert 'method="POST",route="/api/v1/predict",status="415"}' not in counted  # the text file, never sent
    # 2 preflights and the one above: answered what may be done there (Allow), which no other site may read
    assert 'method="OPTIONS",route="/api/v1/predict",status="204"} 3.0' in counted
    assert preflight.status_code == 204 and preflight.headers["allow"] == "OPTIONS, POST"


def test_cors_origin_lets_that_site_read_answers_and_errors(browser, sites, tmp_path: Path, cat_photo: Path) -> None:
    """--cors-origin SITE: its script reads the Prediction (multipart, and a raw body after its preflight) and the
    JSON error of a text file; another site still reads nothing. The headers a client needs are readable too."""
    allowed, other = sites
    with running("--cors-origin", allowed + "/", log=tmp_path / "server.log") as server:
        out = calls_from(browser, allowed, server, cat_photo.read_bytes())
        refused = calls_from(browser, other, server, cat_photo.read_bytes())
        error = httpx.post(server.url + "/api/v1/predict", content=b"x", headers={"Origin": allowed})  # a 415
    for name in ("multipart", "raw"):
        status, prediction = out[name]
        assert status == 200 and prediction["label"] == "cat", out
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-5, prediction
    assert out["text"] == [415, {"error": "'upload' is not an image: its content is text."}], out
    assert refused == {name: "TypeError: Failed to fetch" for name in ("multipart", "raw", "text")}, refused
    assert error.status_code == 415 and error.headers["access-control-allow-origin"] == allowed
    assert {"retry-after", "x-explained"} <= set(error.headers["access-control-expose-headers"].lower().split(", "))


@pytest.mark.parametrize("origin", ["example.com", "ftp://example.com", "https://example.com/shop", "https://"])
def test_an_origin_that_is_not_one_is_one_sentence(origin: str) -> None:
    result = run_catdog_in_process("serve", "--cors-origin", origin)
    assert result.returncode == 2, result.stderr
    assert f"--cors-origin '{origin}' is not an origin; give one like https://example.com" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_private_network_preflight_is_answered_for_the_sites_named(sites, tmp_path: Path) -> None:
    """Chrome before 142 asked before a public site's page called a server on the LAN (Private Network Access):
    the preflight carries ``Access-Control-Request-Private-Network: true`` and needs
    ``Access-Control-Allow-Private-Network: true`` back (Chrome 142 on asks the user instead: the test below).
    Starlette refused it as "Disallowed CORS private-network" (400) for the sites --cors-origin names; they are now
    answered, and another site still is not allowed."""
    allowed, other = sites
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Private-Network": "true"}
    url = "/api/v1/predict"
    with running("--cors-origin", allowed, log=tmp_path / "server.log") as server:
        answer = httpx.options(server.url + url, headers={"Origin": allowed} | asked)
        refused = httpx.options(server.url + url, headers={"Origin": other} | asked)
    assert answer.status_code == 200, (answer.status_code, answer.text)
    assert answer.headers["access-control-allow-private-network"] == "true"
    assert answer.headers["access-control-allow-origin"] == allowed
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers, refused.headers
    with running(log=tmp_path / "server-default.log") as server:
        default = httpx.options(server.url + url, headers={"Origin": allowed} | asked)
    assert "access-control-allow-private-network" not in default.headers, default.headers


def test_a_public_site_reads_catdog_on_the_lan_once_the_user_lets_it(
    browser, sites, tmp_path: Path, cat_photo: Path
) -> None:
    """What Chromium does today (Local Network Access, Chrome 142 on) when a public site's page calls catdog on a
    local address: it asks the user, and the page reads the answers once the user allows it and --cors-origin names
    the site. It passes with ``allow_private_network`` off too: Chromium 156 sends no
    ``Access-Control-Request-Private-Network``. Chromium is told that the site's port is on the public internet
    (--ip-address-space-overrides); catdog is on loopback."""
    allowed, _ = sites
    public = f"--ip-address-space-overrides=127.0.0.1:{allowed.rsplit(':', 1)[1]}=public"
    with running("--cors-origin", allowed, log=tmp_path / "server.log") as server:
        chromium = browser.browser_type.launch(executable_path=str(test_browser.CHROMIUM), args=[public])
        try:
            refused = calls_from(chromium.new_context(), allowed, server, cat_photo.read_bytes())
            let = chromium.new_context()
            let.grant_permissions(["local-network-access"])
            out = calls_from(let, allowed, server, cat_photo.read_bytes())
        finally:
            chromium.close()
    assert refused == {name: "TypeError: Failed to fetch" for name in ("multipart", "raw", "text")}, refused
    for name in ("multipart", "raw"):
        status, prediction = out[name]
        assert status == 200 and prediction["label"] == "cat", out
