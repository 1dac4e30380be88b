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
    (root / "album.jpg").symlink_to(outside)  # a folder link named like a photo: once named twice in skipped
    dataset = discover(root)
    paths = [item.path for item in dataset.files]
    assert sorted(p.name for p in paths) == ["cat.1.jpg", "dog.1.jpg"], paths
    assert dataset.classes == ["cat", "dog"]
    assert all(not p.is_symlink() and root.resolve() in p.resolve().parents for p in paths)
    # Not followed, but not without a word either: each link is listed as not read, with why.
    assert sorted(p.relative_to(root).as_posix() for p, why in dataset.skipped if "symbolic link" in why) == [
        "album.jpg", "cat/link.jpg", "cat/linked-folder", "fox"
    ]  # fmt: skip


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


def test_links_alone_are_named_in_the_error_and_listed_by_data_check(tmp_path: Path, outside: Path) -> None:
    """A folder of links (as DVC or git-annex leave them) once read "No images found" and nothing more."""
    from conftest import run_catdog_in_process  # the command's answer is tested, not its process

    root = tmp_path / "links"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        (root / label / f"{label}.1.jpg").symlink_to(outside / "cat.100.jpg")
    done = run_catdog_in_process("data", "check", str(root))
    assert done.returncode == 2 and "2 symbolic links not followed" in done.stderr and "hard links" in done.stderr
    assert "Traceback" not in done.stderr

    (root / "cat" / "real.jpg").write_bytes(image_bytes())
    (root / "dog" / "real.jpg").write_bytes(image_bytes("PNG"))
    done = run_catdog_in_process("data", "check", "--json", str(root))
    report = json.loads(done.stdout)
    assert done.returncode == 1 and not report["clean"]
    assert sorted(item["path"] for item in report["not_read"]) == ["cat/cat.1.jpg", "dog/dog.1.jpg"]


def _unprivileged() -> list[str]:
    """A command prefix under which folder permissions hold (root reads every folder: drop that right)."""
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def test_a_folder_that_cannot_be_read_is_said_not_skipped(tmp_path: Path, samples_dir: Path) -> None:
    """predict and data check once passed over a folder they could not list without a word (exit 0), or said
    it "holds no image files"; each now says it cannot be read, and goes on with the rest."""
    import shutil
    import subprocess
    import sys

    root = tmp_path / "photos"
    for label in ("cat", "dog"):
        (root / label / "locked").mkdir(parents=True)
        shutil.copy(samples_dir / label / f"{label}.1.jpg", root / label / f"{label}.1.jpg")
        shutil.copy(samples_dir / label / f"{label}.2.jpg", root / label / "locked" / f"{label}.2.jpg")
        (root / label / "locked").chmod(0)
    # A hidden folder is skipped unread, locked or not (predict once walked into it, then said it cannot be read).
    (root / "cat" / ".Trash-1000").mkdir()
    (root / "cat" / ".Trash-1000").chmod(0)
    try:

        def catdog(*args: str) -> subprocess.CompletedProcess:
            command = [*_unprivileged(), sys.executable, "-m", "catdog", *args]
            return subprocess.run(command, capture_output=True, text=True, timeout=300)

        done = catdog("predict", "--json", str(root))
        answers = json.loads(done.stdout)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert {a["path"]: a.get("label") for a in answers if "label" in a} == {
            str(root / "cat" / "cat.1.jpg"): "cat", str(root / "dog" / "dog.1.jpg"): "dog"
        }  # fmt: skip
        errors = sorted(a["error"] for a in answers if "error" in a)
        assert errors == [
            f"Folder '{root / label / 'locked'}' cannot be read (Permission denied)." for label in ("cat", "dog")
        ]

        done = catdog("data", "check", "--json", str(root / "cat" / ".."))
        report = json.loads(done.stdout)
        assert done.returncode == 1 and report["files"] == 2
        assert [(item["path"], item["reason"]) for item in report["not_read"]] == [
            (f"{label}/locked", "a folder that cannot be read (Permission denied)") for label in ("cat", "dog")
        ]
        # Nothing else to read: the error says why there are no images.
        (tmp_path / "only").mkdir()
        (root / "cat" / "locked").rename(tmp_path / "only" / "cat")
        done = catdog("data", "check", str(tmp_path / "only"))
        assert done.returncode == 2 and "(1 folder that cannot be read, e.g." in done.stderr, done.stderr
    finally:
        for locked in (
            root / "dog" / "locked",
            tmp_path / "only" / "cat",
            root / "cat" / "locked",
            root / "cat" / ".Trash-1000",
        ):
            if locked.exists():
                locked.chmod(0o755)


def test_a_glob_through_linked_folders_ends(tmp_path: Path, samples_dir: Path) -> None:
    """``photos/**/*.jpg`` with two links back up the tree ran for ever (glob.glob follows linked folders, and
    each link doubles the walk); like a folder, a glob does not descend into links."""
    import shutil

    from conftest import run_catdog

    (tmp_path / "photos" / "a").mkdir(parents=True)
    shutil.copy(samples_dir / "cat" / "cat.1.jpg", tmp_path / "photos" / "a" / "cat.1.jpg")
    (tmp_path / "photos" / "a" / "up").symlink_to("..")
    (tmp_path / "photos" / "a" / "top").symlink_to("../..")
    shutil.copy(samples_dir / "cat" / "cat.2.jpg", tmp_path / "photos" / ".hidden.jpg")
    done = run_catdog("predict", "--json", "photos/**/*.jpg", "photos/**", "photos/.*.jpg", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    # 'photos/**' is everything below, as glob.glob has it (pathlib's alone names folders); a hidden file
    # only when asked for by name; the cat found twice is answered once.
    found = [(a["path"], a["label"]) for a in json.loads(done.stdout)]
    assert found == [("photos/a/cat.1.jpg", "cat"), ("photos/.hidden.jpg", "cat")]


@pytest.mark.parametrize("name", ["[", "[/a]", "[red]photos", "[bold]"])
def test_an_error_naming_a_path_in_square_brackets_prints_it_as_it_is(tmp_path: Path, name: str) -> None:
    """A refusal's sentence went through rich markup: 'catdog data check "[/a]"' ended in a MarkupError traceback
    instead of its sentence, and '[red]photos' lost its name. A sentence is printed as text."""
    from conftest import run_catdog_in_process

    missing = tmp_path / name / "photos"
    done = run_catdog_in_process("data", "check", str(missing))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: Dataset folder '{missing}' does not exist.", done.stderr


def test_a_file_that_cannot_be_read_says_why(tmp_path: Path, samples_dir: Path) -> None:
    """A photo without read permission (copied from another user's disk) was "'cat/locked.jpg' cannot be read." to
    train, with no reason, and "(Permission denied)" to data check where audit said "(permission denied)". Each now
    gives the reader's one sentence."""
    import shutil
    import subprocess
    import sys

    root = tmp_path / "data"
    shutil.copytree(samples_dir, root)
    locked = root / "cat" / "locked.jpg"
    shutil.copy(samples_dir / "cat" / "cat.1.jpg", locked)
    locked.chmod(0)
    why = f"'{locked}' cannot be read (permission denied)."
    env = {**os.environ, "CATDOG_CACHE_DIR": str(tmp_path / "cache")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*_unprivileged(), *args], capture_output=True, text=True, timeout=300, env=env)

    done = run(sys.executable, "-m", "catdog", "data", "check", "--json", str(root))
    [unusable] = json.loads(done.stdout)["unusable"]
    assert unusable["reason"] == "'cat/locked.jpg' cannot be read (permission denied).", done.stdout
    script = (
        "import sys; from catdog.data import prepare; from catdog.preprocess import Preprocess; "
        "print(prepare(sys.argv[1], Preprocess(image_size=32), sys.argv[2]).unreadable[0][1])"
    )
    done = run(sys.executable, "-c", script, str(root), str(tmp_path / "cache"))
    assert done.stdout.strip() == why, done.stderr


def test_a_link_up_its_own_tree_is_told_to_be_removed_not_copied(tmp_path: Path) -> None:
    """'loop -> ..' in a class folder (a link back up the tree) was told "copy the file or folder, or make a hard
    link", which would copy the dataset into itself. A link to a folder that holds it is told to be removed; a
    link elsewhere is told to be copied, as before."""
    from catdog.data.layout import LINK, LOOP

    root = tmp_path / "data"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        (root / label / f"{label}.1.jpg").write_bytes(image_bytes())
    (tmp_path / "elsewhere").mkdir()
    (root / "dog" / "loop").symlink_to("..")
    (root / "cat" / "self").symlink_to(root / "cat")
    (root / "cat" / "away").symlink_to(tmp_path / "elsewhere")
    skipped = {path.relative_to(root).as_posix(): why for path, why in discover(root).skipped}
    assert skipped == {"dog/loop": LOOP, "cat/self": LOOP, "cat/away": LINK}
    assert LOOP.endswith("remove the link")
