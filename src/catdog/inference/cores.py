"""How many processes share this machine, and so how many cores one of them may use (torchrun-aware)."""

from __future__ import annotations

import os


def world() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment; ``(0, 1)`` for a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def machine_cores() -> int:
    """The cores this process may run on: all of them, whatever torchrun's other processes do."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def local_share_of_cores() -> int:
    """Cores per process when torchrun starts several on one machine (so they do not oversubscribe)."""
    return max(1, machine_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
