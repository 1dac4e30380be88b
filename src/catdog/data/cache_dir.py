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


@dataclass(frozen=True)
class CacheContents:
    """What a cache directory holds, from one walk of it."""

    parts: list[CachePart]  # catdog's items, with their size
    catdog_files: list[Path]  # the files of those items: what --clear removes
    other_files: list[str]  # what catdog did not write, relative to the cache directory: what --clear leaves


def cache_contents(cache_dir: str | os.PathLike) -> CacheContents:
    """The cache's items with their size (an entry with subfolders, pixels/ and features/, item by item) and what
    else it holds: the files in catdog's own entries that it did not write, and each other top-level file or
    folder by its name alone (not walked: a cache directory set to ``~`` would take minutes)."""
    root = Path(cache_dir)
    if not root.is_dir():
        return CacheContents([], [], [])
    parts: list[CachePart] = []
    ours: list[Path] = []
    others = [child for child in root.iterdir() if child.name not in ENTRIES]
    for entry, holds in ENTRIES.items():
        files, theirs = _entry_files(root, entry)
        parts += _parts_of(root, entry, holds, files)
        ours += files
        others += theirs
    return CacheContents(parts, ours, sorted(path.relative_to(root).as_posix() for path in others))


def _parts_of(root: Path, entry: str, holds: str, files: list[Path]) -> list[CachePart]:
    """``files``, catdog's under ``root / entry``, as the items shown: one per subfolder of pixels/ and features/."""
    by_item: dict[Path, list[Path]] = {}
    for file in files:
        item = file.parent if entry in ("pixels", "features") else root / entry
        by_item.setdefault(item, []).append(file)
    return [
        CachePart(item.relative_to(root).as_posix(), holds, len(files), sum(file.lstat().st_size for file in files))
        for item, files in sorted(by_item.items())
    ]


def _entry_files(root: Path, entry: str) -> tuple[list[Path], list[Path]]:
    """``(catdog's files, the others)`` under ``root / entry``, in one walk that follows no link: a file, link or
    folder not of catdog's kind in the entry's place is one of the others, by its name alone."""
    path = root / entry
    if path.is_dir() and not path.is_symlink():
        ours, others = [], []
        for folder, _, names in os.walk(path):
            for name in names:
                file = Path(folder, name)
                written = _written_by_catdog(file.relative_to(path), ENTRY_FILES.get(entry, ()))
                (ours if written and file.is_file() and not file.is_symlink() else others).append(file)
        return sorted(ours), others
    if entry not in ENTRY_FILES and path.is_file() and not path.is_symlink():  # a file entry
        return [path], []
    return [], [path] if path.is_symlink() or path.exists() else []


def _written_by_catdog(relative: Path, patterns: tuple[str, ...]) -> bool:
    """Whether a file at ``relative`` (to its entry) has a name catdog writes there: one of ``patterns``, matched as
    glob matches them, one folder level for each ``/`` (``Path.match`` alone matches from the right, at any depth)."""
    return any(len(relative.parts) == pattern.count("/") + 1 and relative.match(pattern) for pattern in patterns)


def clear_cache(cache_dir: str | os.PathLike) -> tuple[list[CachePart], int]:
    """Remove catdog's files from ``cache_dir`` (and nothing else); ``(what was removed, other files kept)``.

    Folders left empty go too; a folder that still holds files catdog did not write stays, with them.
    """
    root = Path(cache_dir)
    contents = cache_contents(root)
    for file in contents.catdog_files:
        file.unlink(missing_ok=True)
    kept = 0
    for entry in ENTRIES:
        path = root / entry
        if path.is_dir() and not path.is_symlink():
            for folder, _, names in sorted(os.walk(path), reverse=True):  # deepest first
                kept += len(names)
                with contextlib.suppress(OSError):  # not empty: it holds someone else's files
                    Path(folder).rmdir()
    return contents.parts, kept
