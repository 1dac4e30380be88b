"""Datasets: layouts, content hashes, the deterministic split, the decoded-image cache, loaders."""

from catdog.data.cache import PixelCache
from catdog.data.dataset import CachedImages, PreparedData, make_loader, prepare
from catdog.data.layout import Dataset, DatasetError, LabelledFile, discover, normalize_label
from catdog.data.split import split_indices

__all__ = [
    "CachedImages",
    "Dataset",
    "DatasetError",
    "LabelledFile",
    "PixelCache",
    "PreparedData",
    "discover",
    "make_loader",
    "normalize_label",
    "prepare",
    "split_indices",
]
