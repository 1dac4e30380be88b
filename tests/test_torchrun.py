"""``torchrun -m catdog train``, as a practitioner meets it: refusals, a process that dies, Ctrl-C, two machines.

Real torchrun processes (gloo, on the CPU). The runs that train are ``slow``; a refusal stops before training.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_train import copy_dev_subset

from conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


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
    with an "unexpected RuntimeError ... Connection closed by peer" that asked to be reported."""
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
    assert errors(other) == [], other[-3000:]
