"""What catdog keeps in its cache directory, how much room it takes, and clearing it (``catdog cache``).

Everything there can be rebuilt from the photos and the weights: decoded images (one set per input
size, 5-9 GB for 23,000 photos), backbone features, ONNX exports of models, data check results and
file hashes. Only these known entries are counted and removed, so a cache directory set by mistake to
a folder that holds other files (``--cache-dir ~``) loses nothing but catdog's own.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

# The cache's top-level entries, in the order shown, and what each holds.
ENTRIES = {
    "pixels": "decoded images",
    "features": "backbone features",
    "onnx": "ONNX exports of models",
    "check": "data check results",
    "hashes.json": "file hashes",
    "synthetic-graphics": "generated test pictures",
}


@dataclass(frozen=True)
class CachePart:
    """One cached item: an entry's subfolder (one preprocessing, one feature set) or a file."""

    path: str  # relative to the cache directory
    holds: str
    files: int
    size_bytes: int

    def to_dict(self) -> dict:
        return {"path": self.path, "holds": self.holds, "files": self.files, "size_bytes": self.size_bytes}


def cache_parts(cache_dir: str | os.PathLike) -> list[CachePart]:
    """The cache's items with their size; an entry with subfolders (pixels/, features/) item by item."""
    root = Path(cache_dir)
    parts = []
    for entry, holds in ENTRIES.items():
        path = root / entry
        if not path.exists():
            continue
        items = sorted(path.iterdir()) if path.is_dir() and entry in ("pixels", "features") else [path]
        parts += [CachePart(str(item.relative_to(root)), holds, *_usage(item)) for item in items]
    return parts


def clear_cache(cache_dir: str | os.PathLike) -> list[CachePart]:
    """Remove catdog's entries from ``cache_dir`` (and nothing else); what was removed."""
    removed = cache_parts(cache_dir)
    for entry in ENTRIES:
        path = Path(cache_dir) / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return removed


def _usage(path: Path) -> tuple[int, int]:
    """``(files, bytes)`` under ``path``, links not followed."""
    if not path.is_dir() or path.is_symlink():
        return 1, path.lstat().st_size
    files = size = 0
    for folder, _, names in os.walk(path):
        for name in names:
            files += 1
            size += (Path(folder) / name).lstat().st_size
    return files, size
