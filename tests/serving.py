"""A real ``catdog serve`` in a subprocess on a free port, for the web service and browser tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m catdog serve ARGS`` on 127.0.0.1; stdout+stderr go to a log file."""

    def __init__(self, *args: str, log: Path) -> None:
        self.port = free_port()
        scheme = "https" if "--ssl-certfile" in args else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "catdog", "serve", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, path: str = "/readyz", status: int = 200, timeout: float = 240) -> None:
        """Wait until ``GET path`` answers ``status`` (the model loads in the background)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"catdog serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                # verify=False: a test's own certificate, checked by the test that made it
                if httpx.get(self.url + path, timeout=2, verify=False).status_code == status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{self.url}{path} did not answer {status} within {timeout} s:\n{self.log()}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        self.terminate()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


@contextmanager
def running(*args: str, log: Path) -> Iterator[Server]:
    """A :class:`Server` that is ready (its model loaded), stopped on leaving."""
    srv = Server(*args, log=log)
    try:
        srv.wait()
        yield srv
    finally:
        srv.stop()


EC_KEY = ("ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def self_signed(folder: Path, key: tuple[str, ...] = EC_KEY) -> tuple[Path, Path]:
    """A certificate for laptop.test and 127.0.0.1 and its key (openssl's ``-newkey`` arguments), in ``folder``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        from conftest import missing

        missing("openssl is not installed (apt-get install openssl)")
    cert, private = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", *key, "-nodes", "-days", "2", "-keyout", str(private), "-out", str(cert),
         "-subj", "/CN=laptop.test", "-addext", "subjectAltName=DNS:laptop.test,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, private


def error_of(response: httpx.Response) -> str:
    """The one-sentence error every failure carries, as JSON."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message.endswith("."), message
    assert "Traceback" not in message
    return message


# What a model that failed to load is answered, on every path that needs it: why is for the server's log alone.
FAILED_TO_LOAD = "The model could not be loaded (catdog serve's log says why); restart it with a model that loads."

# In a page: on how many lines the text `needle` of the element `id` is laid out (0 where it is not there).
LINES_OF = """([id, needle]) => {
    const walker = document.createTreeWalker(document.getElementById(id), NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const at = node.data.indexOf(needle);
        if (at < 0) continue;
        const range = document.createRange();
        range.setStart(node, at);
        range.setEnd(node, at + needle.length);
        return new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size;
    }
    return 0;
}"""

# In a page: each live region (what a screen reader says when its text changes), by its id, or by its tag and
# class where it has none (a card's).
LIVE_REGIONS = """() => [...document.querySelectorAll(
    '[aria-live]:not([aria-live=off]), [role=status], [role=alert], [role=log], [role=marquee], [role=timer]'
)].map((region) => region.id || `${region.tagName.toLowerCase()}.${region.className}`)"""

# What the page and the phone app say when the system ends their camera (app/shares.js).
CAMERA_ENDED = "The camera stopped (another app may have taken it, or it was unplugged): start it again."
# What they say while the system interrupts their camera without ending it (a call, another app: iOS mutes it).
CAMERA_INTERRUPTED = "The camera is interrupted (a call, or another app using it): live answers go on when it is back."
# Under the last live answer, dimmed, meanwhile (the page and the app alike).
LIVE_PAUSED = "Paused: the answer shown is from before the camera was interrupted."

# In a page: every camera stream the browser hands out, kept in window.streams (to count them, and which are live).
# Given true, the browser answers only once the test calls window.answerCamera(), as when a person answers its
# permission prompt late; later asks are answered at once.
RECORD_STREAMS = """(held) => {
    window.streams = [];
    const ask = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    const answered = held ? new Promise((resolve) => { window.answerCamera = resolve; }) : null;
    navigator.mediaDevices.getUserMedia = async (constraints) => {
        await answered;
        const stream = await ask(constraints);
        window.streams.push(stream);
        return stream;
    };
}"""
LIVE_STREAMS = "() => window.streams.filter((s) => s.getTracks().some((t) => t.readyState === 'live')).length"

# In a page: hides it (true) or shows it again (false), as when a person switches to another app or tab and back.
SET_HIDDEN = """(hidden) => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
    document.dispatchEvent(new Event("visibilitychange"));
}"""
