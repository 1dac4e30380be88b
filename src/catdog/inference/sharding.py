"""Large prediction jobs over several processes or machines: ``torchrun --nproc_per_node N -m catdog predict ...``.

torchrun sets ``RANK``/``WORLD_SIZE``; each rank predicts every ``WORLD_SIZE``-th file, the
results are gathered over a gloo process group (CPU, works across machines too) and rank 0
puts them back in input order.
"""

from __future__ import annotations

from collections.abc import Iterable

from catdog.inference.cores import world
from catdog.inference.predictor import Prediction, Predictor


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
