"""``catdog serve --root-path /catdog`` behind a real nginx that serves it under ``/catdog/``, as the docs say.

The page once fetched ``/api/v1/...`` from the host's root, outside the prefix: behind such a proxy it never
reached the model. Playwright drives Debian's Chromium against nginx; nginx forwards to a real ``catdog serve``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import test_browser

from conftest import missing, run_catdog_in_process
from serving import Server, error_of, free_port, running

browser = test_browser.browser  # that module's Chromium, a fixture here too
playwright = test_browser.playwright  # the browser fixture's own
shot = test_browser.shot
PREFIX = "/catdog"
ONE_PHOTO = 10_000_000 + 64 * 1024  # catdog's body limit for one photo at --max-file-mb 10 (limits.py)

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("builtin_model")]


def nginx_config(folder: Path, port: int, upstream: int) -> str:
    """The configuration of docs/predict-and-serve.md ("Under a path of your site"), on ``port``."""
    # Started as root (CI), nginx's workers run as nobody, who cannot write under pytest's private folders.
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
daemon off;
{user}
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{}}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location {PREFIX}/ {{
            proxy_pass http://127.0.0.1:{upstream}/;
            proxy_set_header Host $host;
            client_max_body_size {ONE_PHOTO};
            proxy_read_timeout 35s;
        }}
        location {PREFIX}/api/v1/predict/batch {{
            proxy_pass http://127.0.0.1:{upstream}/api/v1/predict/batch;
            proxy_set_header Host $host;
            client_max_body_size {32 * ONE_PHOTO};
            proxy_read_timeout 35s;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running("--root-path", PREFIX + "/", log=tmp_path_factory.mktemp("serve") / "server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, server: Server):
    """nginx in front of ``server``; yields the address of catdog under it (``http://127.0.0.1:PORT/catdog``)."""
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        missing("nginx is not installed (apt-get install nginx-light)")
    folder = tmp_path_factory.mktemp("nginx")
    port = free_port()
    (folder / "nginx.conf").write_text(nginx_config(folder, port, server.port))
    proc = subprocess.Popen([nginx, "-c", str(folder / "nginx.conf"), "-p", str(folder)], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}{PREFIX}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url + "/readyz", timeout=2)
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"nginx did not start: {proc.communicate()[1].decode(errors='replace')}") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_the_page_the_api_docs_and_the_app_work_under_a_path(browser, site: str, cat_photo: Path) -> None:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, bypass_csp=True)
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((site + "/", "blob:")) else outside.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        page.goto(site + "/")
        page.wait_for_selector("#model-status:has-text('Model:')", timeout=30_000)
        page.set_input_files("#file-input", str(cat_photo))
        page.locator("#results .card .answer.cat").first.wait_for(timeout=30_000)
        shot(page, "under-a-path")

        page.goto(site + "/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        assert "/api/v1/predict" in page.locator(".opblock-summary-path").all_inner_texts()
        # "Try it out" sends to the servers the schema names: the prefix, not the host's root.
        assert page.locator(".servers select").input_value() == PREFIX

        page.goto(site + "/app")  # the address the docs give, redirected into the prefix
        page.evaluate("window.catdogApp.ready")  # its model and runtime fetched under the prefix
        page.set_input_files("#file-input", str(cat_photo))
        page.locator("#results .card[data-label=cat]").wait_for(timeout=60_000)
        assert page.url == site + "/app/"
    finally:
        context.close()
    assert not outside, f"requests outside {PREFIX}/: {outside}"
    assert not errors, f"JavaScript errors on the page: {errors}"

    redirect = httpx.get(site + "/app?backend=wasm")
    assert redirect.status_code == 308 and str(redirect.next_request.url) == site + "/app/?backend=wasm"
    with cat_photo.open("rb") as photo:
        answer = httpx.post(site + "/api/v1/predict", files={"file": photo}, timeout=30)
    assert answer.status_code == 200 and answer.json()["label"] == "cat"


def test_limits_hold_under_a_root_path(site: str, server: Server) -> None:
    """Under --root-path every path catdog sees starts with the prefix: its upload limits once let them all by."""
    # 10 GB announced, none sent: refused from the headers, at once (without the limits it waited for them).
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000000\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"
        )
        status_line = sock.recv(200).split(b"\r\n")[0]
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", status_line
    too_big = {"file": ("big.jpg", b"\xff" * (ONE_PHOTO + 1000), "image/jpeg")}
    # Through nginx, set as the docs say, its own limit answers first (a body catdog refuses before reading it
    # all made nginx answer 502 Bad Gateway).
    proxied = httpx.post(site + "/api/v1/predict", files=too_big, timeout=30)
    assert proxied.status_code == 413, proxied.text


def test_a_root_path_that_is_not_a_path_is_refused() -> None:
    done = run_catdog_in_process("serve", "--root-path", "catdog?x", "--port", str(free_port()))
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: --root-path 'catdog?x' is not a URL path; give one like /catdog."
    ), done.stderr


def test_a_trailing_slash_on_an_api_path_is_answered_under_a_root_path(
    site: str, server: Server, cat_photo: Path
) -> None:
    """As at the root (test_serve.py): ``/catdog/api/v1/predict/`` is answered, not redirected; through nginx and
    straight to catdog, which sees the prefix in every path."""
    photo = cat_photo.read_bytes()
    for url in (site, server.url):
        answer = httpx.post(url + "/api/v1/predict/", content=photo, timeout=30)
        assert answer.status_code == 200 and answer.json()["label"] == "cat", (url, answer.status_code, answer.text)
        batch = httpx.post(url + "/api/v1/predict/batch/", files={"files": ("a.jpg", photo)}, timeout=30)
        assert batch.status_code == 200 and batch.json()[0]["label"] == "cat", (url, batch.status_code, batch.text)


def test_every_404_names_the_path_asked_through_the_proxy(site: str) -> None:
    """A 404 names the path as asked: the API's named the prefix, but /app/'s and /docs/' named their route's own
    path ("/app/nothing.js"), which nobody asked for through the proxy. All four kinds now say the same."""
    for path in ("/api/v1/nothing/", "/app/nothing.js", "/app/vendor/nothing.wasm", "/docs/nothing.css"):
        nothing = httpx.get(site + path, timeout=30)
        assert (nothing.status_code, error_of(nothing)) == (404, f"Nothing is served at {PREFIX}{path}."), path
