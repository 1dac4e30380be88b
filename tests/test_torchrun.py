"""``torchrun -m catdog train``, as a practitioner meets it: refusals, a process that dies, Ctrl-C, two machines.

Real torchrun processes (gloo, on the CPU). The runs that train are ``slow``; a refusal stops before training.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from test_train import copy_dev_subset

from conftest import REPO, checkpoint_position

ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
KEEPS = "keeps the run: add --resume to the same command to go on."


def torchrun(*args: str, nodes: str = "--standalone") -> list[str]:
    """The command line of ``torchrun --nproc_per_node 2 -m catdog ARGS`` (``nodes``: its rendezvous options)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *nodes.split(),
        "--nproc_per_node",
        "2",
        "-m",
        "catdog",
        *args,
    ]


def errors(stderr: str) -> list[str]:
    """catdog's sentences in a torchrun run's stderr (torchrun's own report follows them)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def small_dev(tmp_path_factory: pytest.TempPathFactory, dev_dir: Path) -> Path:
    """40 real photos (20 cats, 20 dogs)."""
    return copy_dev_subset(dev_dir, tmp_path_factory.mktemp("data") / "small", 20)


def test_a_refusal_is_said_once_not_by_every_process(tmp_path: Path) -> None:
    """Every rank met the same missing folder, and each printed it: 8 processes, 8 sentences."""
    missing = tmp_path / "no-such-folder"
    done = subprocess.run(
        torchrun("train", str(missing), "--out", str(tmp_path / "m"), "--image-size", "64"),
        capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    assert done.returncode != 0
    assert errors(done.stderr) == [f"error: Dataset folder '{missing}' does not exist."], done.stderr[-3000:]


@pytest.mark.slow
def test_a_folder_only_one_machine_lacks_is_named_by_rank_0(small_dev: Path, tmp_path: Path) -> None:
    """Two "machines" (two torchrun commands, --nnodes 2) on this one, the data folder given relative to where each
    runs: the second has none. That rank alone said so, on its machine; rank 0 stopped in its next collective
    with an "unexpected RuntimeError ... Connection closed by peer" that asked to be reported. (Then, with only
    rank 0 printing refusals, the second machine's terminal said nothing.)"""
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "data").symlink_to(small_dev)
    (tmp_path / "other").mkdir()
    port = free_port()
    runs = []
    for node, where in ((0, "head"), (1, "other")):
        nodes = f"--nnodes 2 --node-rank {node} --rdzv-endpoint localhost:{port}"
        cmd = torchrun("train", "data", "--out", str(tmp_path / "m"), "--image-size", "64", nodes=nodes)
        cmd[cmd.index("--nproc_per_node") + 1] = "1"
        runs.append(subprocess.Popen(cmd, cwd=tmp_path / where, stderr=subprocess.PIPE, text=True, env=ENV))
    head, other = (run.communicate(timeout=300)[1] for run in runs)
    assert runs[0].returncode != 0 and runs[1].returncode != 0
    said = f"error: On {socket.gethostname()} (rank 1 of 2): Dataset folder 'data' does not exist."
    assert errors(head) == [said], head[-3000:]
    # The other machine's own terminal says why it stopped, too: there no other process said so.
    assert errors(other) == ["error: rank 1: Dataset folder 'data' does not exist."], other[-3000:]


@pytest.mark.slow
def test_a_batch_the_processes_do_not_divide_is_said(small_dev: Path, tmp_path: Path) -> None:
    """--batch-size 15 over 2 processes trained 14 photos a step (7 each) without a word."""
    out = tmp_path / "m"
    cmd = torchrun("train", str(small_dev), "--out", str(out), "--image-size", "64", "--batch-size", "15")
    done = subprocess.run([*cmd, "--epochs", "1"], capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    said = "--batch-size 15 over 2 processes trains 14 photos a step (7 each); give a multiple of 2 to train 15"
    assert (done.stdout + done.stderr).count(said) == 1, done.stderr[-3000:]
    metrics = json.loads((out / "config.json").read_text())["metrics"]
    assert (metrics["batch_per_process"], metrics["batch"]) == (7, 14)


def training(small_dev: Path, out: Path, *extra: str) -> list[str]:
    """A torchrun training run of short epochs (about a second each), checkpointed every step."""
    cmd = torchrun("train", str(small_dev), "--out", str(out), "--image-size", "64", "--batch-size", "8")
    return cmd + ["--epochs", "8", "--patience", "8", "--checkpoint-seconds", "0", "--seed", "3", *extra]


def start_training(small_dev: Path, out: Path) -> subprocess.Popen:
    """:func:`training` started in its own process group."""
    cmd = training(small_dev, out)
    # A terminal's Ctrl-C, not a background shell's ignored SIGINT (see test_train.py's test_ctrl_c_says_how_to_go_on).
    return subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def wait_for_checkpoint(run: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.pt").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.poll() is None and (out / "checkpoint.pt").exists(), "no checkpoint while the run trained"
    time.sleep(2)  # into the steps after it


def workers(run: subprocess.Popen) -> list[int]:
    """The pids of the catdog processes torchrun started (its children)."""
    found = subprocess.run(["pgrep", "-P", str(run.pid)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


@pytest.mark.slow
def test_a_killed_process_leaves_a_run_that_resumes(small_dev: Path, tmp_path: Path) -> None:
    """SIGKILL of one worker: rank 0 called its network error a catdog bug to report (status 70), or, stopped by
    torchrun first, said nothing of the checkpoint."""
    out = tmp_path / "m"
    run = start_training(small_dev, out)
    try:
        wait_for_checkpoint(run, out)
        os.kill(max(workers(run)), signal.SIGKILL)  # the later-started worker: rank 1
        stderr = run.communicate(timeout=120)[1]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    # Rank 0 meets rank 1's end in a collective, or is stopped first by torchrun's SIGTERM: either way once said,
    # with the checkpoint it keeps.
    said = errors(stderr)
    assert len(said) == 1 and said[0].endswith(f"'{out}' {KEEPS}"), stderr[-3000:]
    assert said[0].startswith(("error: Another process of this torchrun run stopped", "error: Stopped by SIGTERM;"))

    resumed = subprocess.run(training(small_dev, out, "--resume"), capture_output=True, text=True, timeout=600, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at epoch" in resumed.stderr
    assert (out / "model.safetensors").exists() and not (out / "checkpoint.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "said"),
    [
        # A terminal's Ctrl-C reaches torchrun and every worker: rank 0, waiting in a collective, met the other
        # rank leaving it first and said another process had stopped.
        (lambda run: os.killpg(run.pid, signal.SIGINT), "Interrupted"),
        # A scheduler stops a job with SIGTERM to torchrun, which sends it on to every worker: they ended without
        # a word, the checkpoint they kept unsaid.
        (lambda run: run.send_signal(signal.SIGTERM), "Stopped by SIGTERM"),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stopped_run_says_once_how_to_go_on(
    stop: Callable[[subprocess.Popen], None], said: str, small_dev: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m"
    run = start_training(small_dev, out)
    try:
        wait_for_checkpoint(run, out)
        stop(run)
        stderr = run.communicate(timeout=120)[1]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert errors(stderr) == [f"error: {said}; '{out}' {KEEPS}"], stderr[-3000:]


@pytest.mark.slow
def test_the_documented_two_machine_command_trains(small_dev: Path, tmp_path: Path) -> None:
    """docs/training.md's line for two machines, run as two "machines" on this one (one process each). Without
    --node-rank both took themselves for node 0 and waited for each other until torchrun gave up."""
    docs = (REPO / "docs" / "training.md").read_text()
    line = next(line for line in docs.splitlines() if line.startswith("torchrun --nnodes 2"))
    port, model, cache = free_port(), tmp_path / "model", tmp_path / "shared-cache"
    line = line.replace("head:29400", f"localhost:{port}").replace("--nproc_per_node 8", "--nproc_per_node 1")
    line = line.replace("DATA_DIR", str(small_dev)).replace("MODEL", str(model)).replace("/shared/cache", str(cache))
    words = line.split()
    assert words[0] == "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", *words[1:], "--image-size", "64", "--epochs", "1"]
    runs = []
    for node in ("0", "1"):  # the same command on the other machine, but for --node-rank
        if "--node-rank" in cmd:
            cmd[cmd.index("--node-rank") + 1] = node
        runs.append(subprocess.Popen(list(cmd), cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=ENV))
    try:
        stderr = [run.communicate(timeout=240)[1] for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
    assert [run.returncode for run in runs] == [0, 0], stderr[0][-2000:] + stderr[1][-2000:]
    assert (model / "model.safetensors").exists()
    assert "saved " in stderr[0] and "saved " not in stderr[1]  # node 0 holds rank 0, which logs and writes
    assert (cache / "pixels").is_dir()  # the --cache-dir given


@pytest.mark.slow
def test_an_epoch_resumed_mid_way_has_the_training_figures_of_one_not_stopped(dev_dir: Path, tmp_path: Path) -> None:
    """The checkpoint held rank 0's running sums alone, and on --resume every process took them up: the resumed
    epoch's training loss and accuracy counted rank 0's photos before the checkpoint once for each process. The
    checkpoint now holds every process's sums, and the epoch's figures are those of a run never stopped."""
    data = copy_dev_subset(dev_dir, tmp_path / "data", 150)  # 34 steps of 4 photos a process: seconds to stop in
    common = ["--model", "catnet", "--epochs", "1", "--seed", "3", "--deterministic"]
    common += ["--cache-dir", str(tmp_path / "cache"), "--checkpoint-seconds", "0"]

    def command(out: Path, *extra: str) -> list[str]:
        return torchrun(
            "train", str(data), "--out", str(out), "--image-size", "64", "--batch-size", "8", *common, *extra
        )

    whole = tmp_path / "whole"
    done = subprocess.run(command(whole), capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]

    stopped = tmp_path / "stopped"
    run = subprocess.Popen(command(stopped), stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline:
            position = checkpoint_position(stopped)
            if position is not None and position[0] == 0 and position[1] >= 5:
                break
            time.sleep(0.05)
        assert run.poll() is None, "the run ended before it could be stopped mid-epoch"
        for pid in workers(run):  # torchrun starts its workers in sessions of their own: killpg misses them
            os.kill(pid, signal.SIGKILL)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    epoch, step = checkpoint_position(stopped)
    assert epoch == 0 and step > 0, (epoch, step)  # the resumed epoch began before the stop

    resumed = subprocess.run(command(stopped, "--resume"), capture_output=True, text=True, timeout=600, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed at epoch 1, step {step} of" in resumed.stderr

    def figures(out: Path) -> dict:
        row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
        return {key: row[key] for key in ("train_loss", "train_accuracy")}

    got, expected = figures(stopped), figures(whole)
    assert got == pytest.approx(expected, abs=2e-5), (got, expected, step)
