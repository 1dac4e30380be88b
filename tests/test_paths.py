"""Nothing from a request, a dataset or a plan file escapes its directory.

- The server serves its own page and nothing else: ``../``, ``%2e%2e``, encoded slashes and
  absolute paths against ``/``, a would-be static folder and the API all get 4xx without the file.
- Uploaded file names (``../../x``, absolute, Windows-style) are only echoed, never used as paths.
- Symbolic links in a dataset that point outside it are not followed, in any layout.
- A quarantine plan whose entries point outside the dataset moves nothing outside it.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import httpx
import pytest

from catdog.data import discover
from catdog.data.check import PLAN_NAME, finish_pending

from conftest import REPO, image_bytes
from hostile import shared_server, unhandled_errors

SECRET = "catdog-secret-7f3a"  # content of a file outside every served folder


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest):
    srv = shared_server(request)
    yield srv
    assert not unhandled_errors(srv.log()), srv.log()[-5000:]


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (no client-side normalisation of ../ or %2e)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0
    return status, response


TRAVERSALS = [
    "/../../../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/../../pyproject.toml",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/index.html",
    "/index.html/../../pyproject.toml",
    "//etc/passwd",
    "/etc/passwd",
    "/api/v1/../../../pyproject.toml",
    "/api/v1/%2e%2e/%2e%2e/pyproject.toml",
    "/docs/../../pyproject.toml",
    "/pyproject.toml",
    "/src/catdog/serve/app.py",
    "/%00/etc/passwd",
    "/....//....//etc/passwd",
    "/%252e%252e/%252e%252e/etc/passwd",
    "/..\\..\\..\\etc\\passwd",
    "http://127.0.0.1/../../etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_no_file_outside_the_page_is_served(server, target: str) -> None:
    status, response = raw_get(server.url, target)
    assert 400 <= status < 500, (target, response[:300])
    assert b"root:" not in response and b"[project]" not in response and b"import " not in response


def test_the_secret_file_next_to_the_server_is_unreachable(server, tmp_path: Path) -> None:
    """A file planted beside the package and beside the working directory is never returned."""
    planted = [REPO / "catdog-secret.txt", REPO / "src" / "catdog" / "serve" / "static" / "catdog-secret.txt"]
    try:
        for path in planted:
            path.write_text(SECRET)
        for target in (
            "/catdog-secret.txt",
            "/static/catdog-secret.txt",
            "/../catdog-secret.txt",
            "/%2e%2e/catdog-secret.txt",
            "/static/../catdog-secret.txt",
            f"/{REPO}/catdog-secret.txt",
        ):
            status, response = raw_get(server.url, target)
            assert status >= 400 and SECRET.encode() not in response, (target, status)
    finally:
        for path in planted:
            path.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "name", ["../../pwned.jpg", "/tmp/pwned.jpg", "..\\..\\pwned.jpg", "a/../../../pwned.jpg", ".", "..", "/"]
)
def test_upload_names_are_only_echoed(server, tmp_path: Path, name: str) -> None:
    name = name.replace("/tmp/", f"{tmp_path}/")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        one = client.post("/api/v1/predict", files={"file": (name, image_bytes("JPEG", (96, 80)))})
        batch = client.post("/api/v1/predict/batch", files=[("files", (name, image_bytes("PNG", (96, 80))))])
    assert one.status_code == 200 and batch.status_code == 200, (one.text, batch.text)
    for echoed in (one.json()["filename"], batch.json()[0]["filename"]):
        assert "/" not in echoed and "\\" not in echoed and echoed  # a base name at most; only ever echoed
    for where in (tmp_path, REPO, REPO.parent):
        assert not (where / "pwned.jpg").exists()


# -- datasets ---------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the dataset holding photos that must never be picked up."""
    folder = tmp_path / "outside"
    folder.mkdir()
    for i in range(3):
        (folder / f"cat.{100 + i}.jpg").write_bytes(image_bytes("JPEG", (40 + i, 40)))
    (folder / "secret.jpg").write_bytes(image_bytes("JPEG", (33, 33)))
    return folder


def test_folder_layout_ignores_links_out(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "data"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        (root / label / f"{label}.1.jpg").write_bytes(image_bytes())
    (root / "cat" / "link.jpg").symlink_to(outside / "secret.jpg")  # a file link
    (root / "cat" / "linked-folder").symlink_to(outside)  # a folder link inside a class
    (root / "fox").symlink_to(outside)  # a whole class folder that is a link
    dataset = discover(root)
    paths = [item.path for item in dataset.files]
    assert sorted(p.name for p in paths) == ["cat.1.jpg", "dog.1.jpg"], paths
    assert dataset.classes == ["cat", "dog"]
    assert all(not p.is_symlink() and root.resolve() in p.resolve().parents for p in paths)


def test_flat_layout_ignores_links_out(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    for name in ("cat.1.jpg", "dog.1.jpg", "dog.2.jpg"):
        (root / name).write_bytes(image_bytes())
    (root / "cat.2.jpg").symlink_to(outside / "secret.jpg")
    (root / "cat.3.jpg").symlink_to(outside / "cat.100.jpg")
    dataset = discover(root)
    assert dataset.layout == "flat"
    assert sorted(item.path.name for item in dataset.files) == ["cat.1.jpg", "dog.1.jpg", "dog.2.jpg"]


def test_quarantine_plan_cannot_move_files_from_or_to_outside(tmp_path: Path, outside: Path) -> None:
    """A plan file is input too: entries with ../ or absolute paths are skipped, nothing leaves its folder."""
    root, dest = tmp_path / "data", tmp_path / "quarantine"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "bad.jpg").write_bytes(b"not an image")
    dest.mkdir()
    moves = [
        {"path": "cat/bad.jpg", "reason": "unusable"},
        {"path": "../outside/secret.jpg", "reason": "hostile"},
        {"path": str(outside / "cat.100.jpg"), "reason": "hostile"},
        {"path": "cat/../../outside/cat.101.jpg", "reason": "hostile"},
    ]
    (dest / PLAN_NAME).write_text(json.dumps({"root": str(root.resolve()), "moves": moves}))
    done = finish_pending(dest)
    assert [d["path"] for d in done] == ["cat/bad.jpg"]
    assert (dest / "cat" / "bad.jpg").exists() and not (root / "cat" / "bad.jpg").exists()
    assert sorted(os.listdir(outside)) == ["cat.100.jpg", "cat.101.jpg", "cat.102.jpg", "secret.jpg"]
    assert not (tmp_path / "outside" / "secret.jpg").is_symlink()
