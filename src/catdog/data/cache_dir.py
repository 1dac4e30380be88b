"""What catdog keeps in its cache directory, how much room it takes, and clearing it (``catdog cache``).

Everything there can be rebuilt from the photos and the weights: decoded images (one set per input
size, 5-9 GB for 23,000 photos), backbone features, ONNX exports of models, data check results and
file hashes. Only the files catdog writes in these known entries are counted and removed, so a cache
directory set by mistake to a folder that holds other files (``--cache-dir ~``, a project with its own
``features/``) loses nothing but catdog's own.
"""

from __future__ import annotations

import contextlib
import os
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
# The files catdog writes under each folder entry (globs relative to it): only these are counted and removed,
# so a user's own files in a folder of the same name (a project's features/, say) stay where they are.
ENTRY_FILES = {
    "pixels": ("*/pixels.u8", "*/index.json", "*/.lock", "*/.*.tmp"),
    "features": ("*/features.f16", "*/features.f32", "*/index.json", "*/.lock", "*/.*.tmp"),
    "onnx": ("*.onnx", "*.lock", ".*.tmp"),
    "check": ("facts-v*.json", ".*.tmp"),
    "synthetic-graphics": ("graphics/*.png",),
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
        by_item: dict[Path, list[Path]] = {}
        for file in catdog_files(root, entry):
            item = file.parent if entry in ("pixels", "features") else root / entry
            by_item.setdefault(item, []).append(file)
        for item, files in sorted(by_item.items()):
            size = sum(file.lstat().st_size for file in files)
            parts.append(CachePart(item.relative_to(root).as_posix(), holds, len(files), size))
    return parts


def clear_cache(cache_dir: str | os.PathLike) -> tuple[list[CachePart], int]:
    """Remove catdog's files from ``cache_dir`` (and nothing else); ``(what was removed, other files kept)``.

    Folders left empty go too; a folder that still holds files catdog did not write stays, with them.
    """
    root = Path(cache_dir)
    removed = cache_parts(root)
    for entry in ENTRIES:
        for file in catdog_files(root, entry):
            file.unlink(missing_ok=True)
    kept = 0
    for entry in ENTRIES:
        path = root / entry
        if path.is_dir() and not path.is_symlink():
            for folder, _, names in sorted(os.walk(path), reverse=True):  # deepest first
                kept += len(names)
                with contextlib.suppress(OSError):  # not empty: it holds someone else's files
                    Path(folder).rmdir()
    return removed, kept


def catdog_files(root: Path, entry: str) -> list[Path]:
    """The files catdog wrote under ``root / entry``, links neither followed nor counted."""
    path = root / entry
    if entry not in ENTRY_FILES:  # a file entry
        return [path] if path.is_file() and not path.is_symlink() else []
    if not path.is_dir() or path.is_symlink():
        return []
    found = set()
    for pattern in ENTRY_FILES[entry]:
        for file in path.glob(pattern):
            inside = file.relative_to(path).parents
            linked = any((path / folder).is_symlink() for folder in inside if folder != Path("."))
            if file.is_file() and not file.is_symlink() and not linked:
                found.add(file)
    return sorted(found)


def other_files(cache_dir: str | os.PathLike) -> list[str]:
    """What ``cache_dir`` holds that catdog did not write, relative to it: the files in catdog's own entries that
    it did not write, and each other top-level file or folder by its name alone (not walked: a cache directory set
    to ``~`` would take minutes)."""
    root = Path(cache_dir)
    if not root.is_dir():
        return []
    ours = {file for entry in ENTRIES for file in catdog_files(root, entry)}
    found = []
    for child in root.iterdir():
        if child.name in ENTRIES and child.is_dir() and not child.is_symlink():
            found += [Path(folder, name) for folder, _, names in os.walk(child) for name in names]
        elif child not in ours:
            found.append(child)
    return sorted(path.relative_to(root).as_posix() for path in found if path not in ours)
