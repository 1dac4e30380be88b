"""Datasets: layouts, content hashes, the deterministic split, the decoded-image cache, loaders.

The torch-backed parts load on first use, so that importing the light parts (layouts,
errors) stays fast for the command line.
"""

from catdog.data.layout import NEITHER, Dataset, DatasetError, LabelledFile, discover, normalize_label
from catdog.data.split import split_indices

_LAZY = {
    "PixelCache": "catdog.data.cache",
    "CachedImages": "catdog.data.dataset",
    "PreparedData": "catdog.data.dataset",
    "make_loader": "catdog.data.dataset",
    "prepare": "catdog.data.dataset",
}

__all__ = ["NEITHER", "Dataset", "DatasetError", "LabelledFile", "discover", "normalize_label", "split_indices", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'catdog.data' has no attribute {name!r}")
