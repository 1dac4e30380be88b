"""SIGKILL and a full disk lose nothing: real subprocesses killed mid-work, then rerun.

- the decoded-image cache (catdog.data.prepare) killed while it builds: the rerun completes and
  every cached row equals catdog.preprocess.to_uint8 of its file;
- ``catdog train`` killed while it checkpoints after every step: the checkpoint loads, ``--resume``
  finishes the run, the model directory loads;
- ``catdog export`` killed while it writes: the target is absent or a complete, loadable ONNX file;
- a full disk (a real 3 MiB tmpfs) during a model save or a training run: a clear error and the
  previous file intact.

(``data check --quarantine`` under SIGKILL is tested in test_data_check.py.)
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from catdog.models import build_model, load_model_dir, save_model_dir
from catdog.preprocess import Preprocess, to_uint8

from conftest import REPO, run_catdog
from hostile import one_sentence

PRE = Preprocess(image_size=64)


def catdog_proc(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "catdog", *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process ended ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the process finished before it was killed"


@pytest.fixture
def small_dataset(tmp_path: Path, dev_dir: Path) -> Path:
    """600 dev photos in cat/ and dog/ (links would be skipped by discover, so real copies)."""
    root = tmp_path / "data"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(2000, 2300):
            shutil.copy(dev_dir / f"{label}.{i}.jpg", root / label)
    return root


# -- the decoded-image cache ------------------------------------------------------------------

PREPARE = """
import sys
from catdog.data import prepare
from catdog.preprocess import Preprocess
prepare(sys.argv[1], Preprocess(image_size=64), sys.argv[2], workers=2)
"""


def test_cache_build_killed_then_resumed(small_dataset: Path, tmp_path: Path) -> None:
    from catdog.data import prepare

    cache = tmp_path / "cache"
    pixels = cache / "pixels" / PRE.cache_key() / "pixels.u8"
    proc = subprocess.Popen([sys.executable, "-c", PREPARE, str(small_dataset), str(cache)])
    # Kill as soon as the first decoded rows are on disk: mid-build, before the first index commit.
    wait_for(lambda: pixels.exists() and pixels.stat().st_size > 0, proc, what="the first cached rows")
    kill(proc)
    index = pixels.parent / "index.json"
    rows_before = len(json.loads(index.read_text())["rows"]) if index.exists() else 0
    assert rows_before < 600, "the kill came too late to test anything"

    data = prepare(small_dataset, PRE, cache, workers=2)
    assert len(data.paths) == 600 and not data.unreadable
    pixels_array = data.cache.array()
    for path, row in zip(data.paths, data.rows):
        assert np.array_equal(pixels_array[row], to_uint8(path, PRE)), path


# -- training checkpoints ---------------------------------------------------------------------


@pytest.fixture
def tiny_dataset(tmp_path: Path, dev_dir: Path) -> Path:
    """48 dev photos in cat/ and dog/: 44 to train on, 2 whole steps of 16 per epoch."""
    root = tmp_path / "tiny"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(3000, 3024):
            shutil.copy(dev_dir / f"{label}.{i}.jpg", root / label)
    return root


def train_args(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "train", str(data), "--out", str(out), "--model", "seed-cnn", "--epochs", "4", "--image-size", "64",
        "--batch-size", "16", "--checkpoint-seconds", "0", "--workers", "0", "--cache-dir", str(cache), *extra,
    ]  # fmt: skip


def checkpoint_epoch(checkpoint: Path) -> int:
    """The epochs a checkpoint has finished (-1 while there is none, or while it is being replaced)."""
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["state"]["epoch"]
    except (OSError, RuntimeError, EOFError, KeyError):
        return -1


@pytest.mark.slow  # ~45 s on 2 cores: a training run, killed, then resumed
def test_train_killed_while_checkpointing_resumes(tiny_dataset: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    checkpoint = out / "checkpoint.pt"
    proc = catdog_proc(*train_args(tiny_dataset, out, cache), log=tmp_path / "train.log")
    # A checkpoint after every step: once the first epoch is done, kill while they are being written.
    wait_for(lambda: checkpoint_epoch(checkpoint) >= 1, proc, what="a checkpoint after the first epoch")
    time.sleep(0.3)
    kill(proc)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state"]  # complete, not half-written
    assert 1 <= saved["epoch"] < 4 and saved["history"], saved["epoch"]
    assert not (out / "model.safetensors").exists()

    done = run_catdog(*train_args(tiny_dataset, out, cache, "--resume"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # It went on from the checkpoint, not from the start: its position, and only the epochs after it.
    assert f"resumed at epoch {saved['epoch'] + 1}, step {saved['step']} of " in done.stderr, done.stderr[-3000:]
    trained = [int(epoch) for epoch in re.findall(r"epoch (\d+): train loss", done.stderr)]
    assert trained == list(range(saved["epoch"] + 1, 5)), trained
    model, config = load_model_dir(out)
    assert config["classes"] == ["cat", "dog"]
    assert not checkpoint.exists(), "a finished run leaves no checkpoint behind"
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[: len(saved["history"])] == saved["history"], "the epochs before the kill were not kept"
    assert [h["epoch"] for h in history if not h.get("partial")][-1] == 4, history


@pytest.mark.slow  # ~30 s: a training run, killed at its first checkpoint
def test_resuming_a_checkpoint_of_other_shapes_is_refused_and_keeps_it(tiny_dataset: Path, tmp_path: Path) -> None:
    """A run started by a catdog whose net had other shapes (catnet's stem was 24 channels wide): one
    sentence, and the checkpoint stays for the catdog that can finish it."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    checkpoint = out / "checkpoint.pt"
    proc = catdog_proc(*train_args(tiny_dataset, out, cache), log=tmp_path / "train.log")
    wait_for(checkpoint.exists, proc, what="the first checkpoint")
    time.sleep(0.3)
    kill(proc)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    first_conv = saved["model"]["0.weight"]
    saved["model"]["0.weight"] = first_conv[:16].clone()  # 16 filters where this catdog builds 32
    torch.save(saved, checkpoint)
    before = checkpoint.read_bytes()

    done = run_catdog(*train_args(tiny_dataset, out, cache, "--resume"), timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    message = done.stderr.strip().splitlines()[-1]  # after the run's log lines
    assert message.startswith("error: ") and one_sentence(message.removeprefix("error: "), "checkpoint.pt"), message
    assert checkpoint.read_bytes() == before and not (out / "model.safetensors").exists()


# -- export -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_killed_leaves_no_broken_file(tmp_path: Path, samples_dir: Path) -> None:
    import onnxruntime as ort

    target = tmp_path / "out" / "builtin.onnx"
    target.parent.mkdir()
    args = ("export", "--out", str(target), "--check-data", str(samples_dir), "--check-images", "8")
    proc = catdog_proc(*args, log=tmp_path / "export.log")
    # Kill while the temporary file is being written (the riskiest moment), or right before the rename.
    wait_for(lambda: any(p.name.startswith(".builtin.onnx") for p in target.parent.iterdir()), proc,
             what="the export's temporary file")  # fmt: skip
    kill(proc)
    if target.exists():
        ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    done = run_catdog(*args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert "classes" in session.get_modelmeta().custom_metadata_map


# -- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 3 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_during_a_model_save_keeps_the_previous_one(small_disk: Path) -> None:
    model = build_model("seed-cnn", 2)
    model(torch.zeros(1, 3, 64, 64))  # materialise the lazy layers
    config = {"architecture": "seed-cnn", "classes": ["cat", "dog"], "preprocess": PRE.to_dict()}
    out = small_disk / "model"
    save_model_dir(model, config, out)  # ~2 MB: fits once, not twice
    before = (out / "model.safetensors").read_bytes()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(OSError) as err:
        save_model_dir(model, config, out)
    assert err.value.errno == errno.ENOSPC
    assert (out / "model.safetensors").read_bytes() == before
    load_model_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"], "a temporary file was left"


@pytest.mark.slow  # a training run, ~15 s
def test_train_on_a_full_disk_says_so_in_one_sentence(small_disk: Path, tmp_path: Path, tiny_dataset: Path) -> None:
    out = small_disk / "run"
    done = run_catdog(*train_args(tiny_dataset, out, tmp_path / "cache"), timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # The error, after the run's log lines (it may wrap at the console's width).
    message = " ".join(done.stderr[done.stderr.rindex("error: ") :].split()).removeprefix("error: ")
    assert one_sentence(message) and "space" in message.lower(), message
    assert not [p for p in small_disk.rglob("*.tmp")], "a temporary file was left on the full disk"


def test_atomic_files_get_ordinary_permissions(tmp_path: Path) -> None:
    """Files written atomically are readable like any other file (mkstemp alone makes them 0600)."""
    from catdog.fsutil import atomic_write_text

    target = tmp_path / "config.json"
    old = os.umask(0o022)
    try:
        atomic_write_text(target, "{}")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644
