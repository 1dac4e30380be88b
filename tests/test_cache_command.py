"""`catdog cache`: what catdog's cache directory holds, and clearing it without touching anything else.

The commands run in this process (run_catdog_in_process) but beside a server: a subprocess each started Python again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from catdog.data import prepare
from catdog.inference.model_cache import KEPT_EXPORTS, cached_export, export_path, prune_exports
from catdog.preprocess import Preprocess

from conftest import run_catdog, run_catdog_in_process
from serving import running


def _bytes_under(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum((Path(folder) / name).stat().st_size for folder, _, names in os.walk(path) for name in names)


def test_cache_shows_and_clears_only_what_catdog_cached(samples_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # Filled as a user's commands fill it: a data check (its results, file hashes), decoded images for training.
    assert run_catdog_in_process("data", "check", str(samples_dir), "--cache-dir", str(cache)).returncode == 0
    prepare(samples_dir, Preprocess(image_size=64), cache)
    # A cache directory set to a folder that also holds the user's own files.
    (cache / "notes.txt").write_text("mine")
    (cache / "photos").mkdir()
    (cache / "photos" / "cat.jpg").write_bytes((samples_dir / "cat" / "cat.1.jpg").read_bytes())

    shown = run_catdog_in_process("cache", "--json", "--cache-dir", str(cache))
    assert shown.returncode == 0, shown.stderr
    listing = json.loads(shown.stdout)
    sizes = {part["path"]: part["size_bytes"] for part in listing["parts"]}
    pixels = next(p.name for p in (cache / "pixels").iterdir())
    assert set(sizes) == {"check", "hashes.json", f"pixels/{pixels}"}
    assert all(size == _bytes_under(cache / path) > 0 for path, size in sizes.items())
    assert listing["size_bytes"] == sum(sizes.values()) and not listing["cleared"]

    table = run_catdog_in_process("cache", "--cache-dir", str(cache))
    assert table.returncode == 0 and str(cache) in table.stdout and f"pixels/{pixels}" in table.stdout

    # The user's own files in folders that happen to have the names of catdog's entries.
    theirs = {"features/thesis.txt": b"thesis", "pixels/holiday.jpg": b"photo", "check/bank.pdf": b"pdf"}
    for name, content in theirs.items():
        (cache / name).parent.mkdir(exist_ok=True)
        (cache / name).write_bytes(content)
    relisted = json.loads(run_catdog_in_process("cache", "--json", "--cache-dir", str(cache)).stdout)
    assert relisted["parts"] == listing["parts"]

    cleared = run_catdog_in_process("cache", "--clear", "--cache-dir", str(cache))
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.startswith("Cleared catdog's cache") and "freed" in cleared.stdout
    assert "3 other files in its folders were not catdog's and stay" in cleared.stdout
    assert sorted(p.name for p in cache.iterdir()) == ["check", "features", "notes.txt", "photos", "pixels"]
    assert {name: (cache / name).read_bytes() for name in theirs} == theirs
    assert [p.name for p in (cache / "pixels").iterdir()] == ["holiday.jpg"]  # catdog's subfolder went
    assert (cache / "photos" / "cat.jpg").stat().st_size == (samples_dir / "cat" / "cat.1.jpg").stat().st_size
    (cache / "features" / "thesis.txt").unlink()
    (cache / "check" / "bank.pdf").unlink()
    # It once said "1 other files ... were".
    again = run_catdog_in_process("cache", "--clear", "--cache-dir", str(cache))
    assert "; 1 other file in its folders was not catdog's and stays." in again.stdout, again.stdout
    after = json.loads(run_catdog_in_process("cache", "--json", "--cache-dir", str(cache)).stdout)
    assert after["parts"] == [] and after["size_bytes"] == 0

    # Rebuilt when next needed.
    assert run_catdog_in_process("data", "check", str(samples_dir), "--cache-dir", str(cache)).returncode == 0
    assert (cache / "check").is_dir()


def test_cache_refuses_a_file_as_its_directory(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "cache.txt"
    not_a_folder.write_text("x")
    result = run_catdog_in_process("cache", "--clear", "--cache-dir", str(not_a_folder))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    said = f"error: The cache directory '{not_a_folder}' is a file, not a folder."
    assert result.stderr.strip().splitlines() == [said]
    assert not_a_folder.read_text() == "x"


@pytest.mark.slow
def test_a_server_survives_its_cache_being_cleared(cache_dir: Path, tmp_path: Path, cat_photo: Path) -> None:
    """``catdog serve`` hands the phone app its model from the cache; cleared under it, the model is exported again."""
    with running(log=tmp_path / "server.log") as server:
        first = httpx.get(server.url + "/app/model.onnx", timeout=300)
        assert first.status_code == 200 and len(first.content) > 1_000_000
        assert any((cache_dir / "onnx").glob("builtin-*.onnx"))
        cleared = run_catdog("cache", "--clear")  # the same $CATDOG_CACHE_DIR as the server's
        assert cleared.returncode == 0 and not (cache_dir / "onnx").exists()
        again = httpx.get(server.url + "/app/model.onnx", timeout=300)
        assert again.status_code == 200 and len(again.content) == len(first.content)
        answer = httpx.post(server.url + "/api/v1/predict", files={"file": (cat_photo.name, cat_photo.read_bytes())})
        assert answer.status_code == 200 and answer.json()["label"] == "cat"  # and its own model still answers


def test_only_the_most_recently_used_model_exports_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each trained model leaves an ONNX export in the cache; the least recently used go, used ones stay."""
    monkeypatch.setenv("CATDOG_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"the bytes that name one model")
    reused = export_path("model", [weights])  # the oldest export of all, then used again
    folder = reused.parent
    folder.mkdir(parents=True)
    made = [reused] + [folder / f"{name}-{index:020x}.onnx" for index, name in enumerate(["model", "builtin"] * 12)]
    for age, export in enumerate(made):  # made[1] the most recently used, ``reused`` the least
        export.write_bytes(b"onnx")
        export.with_suffix(".lock").touch()
        stamp = 1e9 - (100 if export == reused else age)
        os.utime(export, (stamp, stamp))
    features = folder / "tf_efficientnet_lite0-224px-0123456789ab.onnx"  # a backbone's, not a model's
    features.write_bytes(b"onnx")
    os.utime(features, (1, 1))

    def must_not_export():
        raise AssertionError("an export in the cache was made again")

    assert cached_export("model", [weights], must_not_export) == reused
    removed = prune_exports(folder)

    kept = [reused, *made[1:KEPT_EXPORTS]]
    assert removed == sorted(set(made) - set(kept), key=made.index)
    assert sorted(folder.glob("*.onnx")) == sorted([*kept, features])
    assert sorted(folder.glob("*.lock")) == sorted(export.with_suffix(".lock") for export in kept)


def test_one_item_reads_as_one(samples_dir: Path, tmp_path: Path) -> None:
    """A cache of one item read "in 1 items" and "(1 items)". The command the listing suggests clears the cache
    listed: given --cache-dir, it said "catdog cache --clear", which cleared the default cache instead."""
    cache = tmp_path / "Bob's cache"
    assert run_catdog_in_process("data", "check", str(samples_dir), "--cache-dir", str(cache)).returncode == 0
    (cache / "hashes.json").unlink()  # the check's results alone are left
    shown = run_catdog_in_process("cache", "--cache-dir", str(cache))
    assert " in 1 item (catdog cache --clear" in shown.stdout, shown.stdout
    suggested = re.search(r"\((catdog cache --clear.*) frees it all\)", shown.stdout)
    assert suggested and shlex.split(suggested[1]) == ["catdog", "cache", "--clear", "--cache-dir", str(cache)]
    cleared = run_catdog_in_process("cache", "--clear", "--cache-dir", str(cache))
    assert " freed (1 item)." in cleared.stdout, cleared.stdout


def test_cache_refuses_a_closed_standard_output_before_clearing(samples_dir: Path, tmp_path: Path) -> None:
    """``catdog cache >&-`` exited 0 having printed nothing, and with --clear cleared the cache unlisted; it is
    refused before anything is cleared, in the sentence every other command says."""
    cache = tmp_path / "cache"
    assert run_catdog_in_process("data", "check", str(samples_dir), "--cache-dir", str(cache)).returncode == 0
    before = sorted(cache.rglob("*"))
    for options in ([], ["--json"], ["--clear"]):
        command = [sys.executable, "-m", "catdog", "cache", *options, "--cache-dir", str(cache)]
        done = subprocess.run(["bash", "-c", '"$@" >&-', "bash", *command], capture_output=True, text=True, timeout=300)
        example = "cache.json" if options == ["--json"] else "cache.txt"
        lost = f"Standard output is closed, so the cache's contents would be lost: print them somewhere (> {example})."
        assert (done.returncode, done.stderr) == (2, f"error: {lost}\n"), (options, done)
    assert sorted(cache.rglob("*")) == before


def test_a_cache_with_nothing_of_catdog_s_says_what_it_holds(tmp_path: Path) -> None:
    """A cache folder holding only a stray file read "0 B in 0 items", as did one that does not exist: each now
    says what it is, and a listing names the files that are not catdog's (which --clear leaves)."""
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    (stray / "pixels").mkdir()
    (stray / "pixels" / "holiday.jpg").write_bytes(b"photo")
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.mkdir()
    said = {folder: run_catdog_in_process("cache", "--cache-dir", str(folder)) for folder in (stray, missing, empty)}
    assert all(done.returncode == 0 for done in said.values()), said
    assert said[stray].stdout == (
        f"catdog's cache: {stray} holds nothing catdog cached, only 2 files or folders that are not catdog's "
        "('notes.txt', 'pixels/holiday.jpg').\n"
    )
    assert said[missing].stdout.startswith(f"catdog's cache: {missing} does not exist yet: nothing is cached")
    assert said[empty].stdout == f"catdog's cache: {empty} is empty: nothing is cached.\n"
    listing = json.loads(run_catdog_in_process("cache", "--json", "--cache-dir", str(stray)).stdout)
    assert (listing["parts"], listing["other_files"]) == ([], ["notes.txt", "pixels/holiday.jpg"]), listing
    (stray / "hashes.json").write_text("{}")
    listed = run_catdog_in_process("cache", "--cache-dir", str(stray)).stdout
    assert listed.splitlines()[-1] == (
        "  and 2 files or folders that are not catdog's ('notes.txt', 'pixels/holiday.jpg'): --clear leaves them"
    ), listed


def test_the_command_suggested_for_a_cache_named_with_a_backslash_pastes_whole(
    cat_photo: Path, dog_photo: Path, tmp_path: Path
) -> None:
    """Since a backslash that reads as an escape is printed doubled, the command in single quotes read
    'c\\\\new cache': pasted, it named another folder. A word whose backslash is doubled is written in double
    quotes, where the shell reads the two as one."""
    data, cache = tmp_path / "pets", tmp_path / "c\\new cache"
    for photo in (cat_photo, dog_photo):
        (data / photo.parent.name).mkdir(parents=True)
        shutil.copy(photo, data / photo.parent.name)
    assert run_catdog_in_process("data", "check", str(data), "--cache-dir", str(cache)).returncode == 0
    listed = run_catdog_in_process("cache", "--cache-dir", str(cache)).stdout
    suggested = re.search(r"\((catdog cache --clear.*) frees it all\)", listed)
    assert suggested and shlex.split(suggested[1]) == ["catdog", "cache", "--clear", "--cache-dir", str(cache)], listed


def test_a_fourth_file_that_is_not_catdog_s_is_named_not_counted(tmp_path: Path) -> None:
    """The cache listing named three files that are not catdog's and counted the rest, "1 more" included, unlike
    every other list catdog prints (fsutil.first_few): one left over is named."""
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (tmp_path / name).write_text("mine")
    said = run_catdog_in_process("cache", "--cache-dir", str(tmp_path)).stdout
    assert said.endswith("only 4 files or folders that are not catdog's ('a.txt', 'b.txt', 'c.txt', 'd.txt').\n"), said
    (tmp_path / "e.txt").write_text("mine")
    said = run_catdog_in_process("cache", "--cache-dir", str(tmp_path)).stdout
    assert said.endswith("not catdog's ('a.txt', 'b.txt', 'c.txt', 2 more).\n"), said
