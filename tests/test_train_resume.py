"""Long training tests: exact resumption after SIGKILL, and torchrun DDP against a single process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_train import copy_dev_subset

from conftest import checkpoint_position, run_catdog

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_dev(tmp_path_factory: pytest.TempPathFactory, dev_dir: Path) -> Path:
    return copy_dev_subset(dev_dir, tmp_path_factory.mktemp("data") / "small", 20)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def val_losses(model_dir: Path) -> list[float]:
    return [json.loads(line)["val_loss"] for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


def train_losses(model_dir: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


# With --ema the moving average of the weights is in the checkpoint too, and the kept weights are that average.
@pytest.mark.parametrize("extra", [[], ["--ema", "0.9"]], ids=["plain", "ema"])
def test_resume_after_sigkill_mid_epoch_gives_the_same_weights(
    extra: list[str], small_dev: Path, tmp_path: Path
) -> None:
    common = ["--model", "catnet", "--image-size", "64", "--epochs", "3", "--batch-size", "8", "--seed", "3", *extra]
    common += ["--deterministic", "--checkpoint-seconds", "0", "--cache-dir", str(tmp_path / "cache")]
    whole = tmp_path / "whole"
    done = run_catdog("train", str(small_dev), "--out", str(whole), *common)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "catdog", "train", str(small_dev), "--out", str(killed), *common]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            position = checkpoint_position(killed)
            if position is not None and position >= (1, 2):  # the middle of the second epoch
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert not (killed / "model.safetensors").exists()
    epoch, step = checkpoint_position(killed)
    assert (epoch, step) < (3, 0)

    resumed = run_catdog("train", str(small_dev), "--out", str(killed), *common, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at epoch" in resumed.stderr
    expected, got = weights(whole), weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert val_losses(killed) == val_losses(whole)
    assert not (killed / "checkpoint.pt").exists()


# Two processes split each global batch in two; DDP averages their gradients, which equals the
# single process's gradient up to float summation order. Tolerance on the final weights: 1e-4.
DDP_TOLERANCE = 1e-4


def test_torchrun_two_processes_match_one(small_dev: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    common = ["--model", "tf_efficientnet_lite0", "--freeze", "backbone", "--epochs", "4", "--batch-size", "16"]
    common += ["--lr", "3e-3", "--seed", "5", "--deterministic", "--cache-dir", str(cache)]
    single = tmp_path / "single"
    done = run_catdog("train", str(small_dev), "--out", str(single), *common)
    assert done.returncode == 0, done.stderr

    multi = tmp_path / "multi"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "catdog", "train", str(small_dev), "--out", str(multi), *common]
    ddp = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    output = ddp.stdout + ddp.stderr
    assert output.count("saved ") == 1  # only rank 0 logs
    assert "with 2 processes" in output
    written = sorted(p.name for p in multi.iterdir())
    assert written == ["config.json", "curves.png", "metrics.jsonl", "model.safetensors"]

    expected, got = weights(single), weights(multi)
    for name in ("head.weight", "head.bias"):
        difference = (expected[name] - got[name]).abs().max().item()
        assert difference <= DDP_TOLERANCE, (name, difference)
    for a, b in zip(val_losses(single), val_losses(multi), strict=True):
        assert a == pytest.approx(b, abs=1e-3)
    # The training figures are every process's, as the validation ones (they were rank 0's alone).
    for a, b in zip(train_losses(single), train_losses(multi), strict=True):
        assert a == pytest.approx(b, abs=1e-3)
    run = json.loads((multi / "config.json").read_text())["metrics"]
    assert (run["processes"], run["batch_per_process"], run["batch"]) == (2, 8, 16)
    config = json.loads((multi / "config.json").read_text())
    assert config["data"]["val_images"] == json.loads((single / "config.json").read_text())["data"]["val_images"]


def _long_training(samples_dir: Path, out: Path) -> subprocess.Popen:
    """A `catdog train` of 200 epochs into ``out``, its standard error piped, for a test to Ctrl-C."""
    args = [sys.executable, "-m", "catdog", "train", str(samples_dir), "--out", str(out), "--image-size", "64"]
    # A shell that runs the suite in the background (`bash .ci/run &`) ignores SIGINT, and so would the run it
    # starts (Python keeps an inherited SIG_IGN): it trained on for minutes. A terminal's Ctrl-C is what is tested.
    return subprocess.Popen(
        [*args, "--epochs", "200", "--patience", "200"], stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


@pytest.mark.slow
def test_ctrl_c_says_how_to_go_on(samples_dir: Path, tmp_path: Path) -> None:
    """Ctrl-C once printed only "Interrupted.": the checkpoint it leaves and --resume went unsaid."""
    out = tmp_path / "model"
    proc = _long_training(samples_dir, out)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"error: Interrupted; '{out}' keeps the run: add --resume to the same command to go on."
    )


@pytest.mark.slow
def test_ctrl_c_before_the_first_checkpoint_says_nothing_is_kept(samples_dir: Path, tmp_path: Path) -> None:
    """Ctrl-C before the first checkpoint printed a bare "Interrupted.": whether to --resume went unsaid."""
    out = tmp_path / "model"
    proc = _long_training(samples_dir, out)
    assert proc.stderr is not None
    first_line = proc.stderr.readline()  # the model's name: training has begun, its first epoch is seconds away
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, first_line + stderr
    assert not (out / "checkpoint.pt").exists()
    assert stderr.strip().splitlines()[-1] == (
        "error: Interrupted; no checkpoint had been written yet, so nothing of this run is kept: "
        "run the same command again to start over."
    )
