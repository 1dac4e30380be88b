"""Large prediction jobs over several processes or machines: ``torchrun --nproc_per_node N -m catdog predict ...``.

torchrun sets ``RANK``/``WORLD_SIZE``; each rank predicts every ``WORLD_SIZE``-th file, the
results are gathered over a gloo process group (CPU, works across machines too) and rank 0
puts them back in input order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from catdog.predict import Prediction, Predictor


def world() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment; ``(0, 1)`` for a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def local_share_of_cores() -> int:
    """Cores per process when torchrun starts several on one machine (so they do not oversubscribe)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def predict_sharded(predictor: Predictor, files: list[str], *, batch_size: int = 32) -> Iterable[Prediction] | None:
    """All predictions in input order on rank 0 (``None`` on the other ranks); a plain run streams them."""
    rank, size = world()
    if size == 1:
        return predictor.predict_paths(files, batch_size=batch_size)  # streamed: results as they come
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:
        dist.init_process_group("gloo")
    try:
        mine = list(predictor.predict_paths(files[rank::size], batch_size=batch_size))
        gathered: list[list[Prediction]] | None = [[] for _ in range(size)] if rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
    finally:
        if own:
            dist.destroy_process_group()
    if rank != 0:
        return None
    merged: list[Prediction] = [None] * len(files)  # type: ignore[list-item]
    for r, part in enumerate(gathered):
        merged[r::size] = part
    return merged
