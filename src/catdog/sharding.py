"""The old home of ``torchrun`` sharding, kept so that scripts importing ``catdog.sharding`` keep working.

The code is in :mod:`catdog.inference.sharding` and :mod:`catdog.inference.cores`.
"""

from catdog.inference.cores import local_share_of_cores, world
from catdog.inference.sharding import predict_sharded

__all__ = ["local_share_of_cores", "predict_sharded", "world"]
