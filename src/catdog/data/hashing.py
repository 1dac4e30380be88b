"""Content hashes of dataset files, remembered by what a stat says of them so reruns don't reread."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from catdog.fsutil import atomic_write_text


def content_hash(data: bytes) -> str:
    """The identity of a file's bytes everywhere in catdog (cache keys, splits, duplicates)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_hash(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


class HashIndex:
    """A JSON map ``path -> [size, mtime_ns, ctime_ns, inode, hash]`` kept in the cache folder.

    Size and mtime alone missed a file replaced under the same name: ``cp -p``, ``rsync -t`` or a restore from a
    backup keep the mtime, and a broken copy of the same size was still "fine" from the cache. The change time
    cannot be set back, and a replaced file is a new inode, as git's index checks them.
    """

    def __init__(self, cache_dir: str | os.PathLike | None) -> None:
        self.file = Path(cache_dir) / "hashes.json" if cache_dir else None
        self.entries: dict[str, list] = {}
        if self.file and self.file.exists():
            try:
                self.entries = json.loads(self.file.read_text())
            except (OSError, ValueError):
                self.entries = {}  # a damaged index only costs a rehash

    def hashes(self, paths: list[Path], workers: int | None = None) -> list[str | None]:
        """Hash of each file (None for one that cannot be read), rehashing only changed files."""
        keys = [os.path.abspath(p) for p in paths]  # abspath: no per-file syscalls, unlike resolve()
        results: list[str | None] = [None] * len(paths)
        todo = []
        for i, key in enumerate(keys):
            try:
                stat = os.stat(key)
            except OSError:
                continue
            known = self.entries.get(key)
            if known and known[:-1] == _identity(stat):
                results[i] = known[-1]
            else:
                todo.append((i, key, stat))

        def work(item):
            i, key, stat = item
            try:
                return i, key, stat, file_hash(key)
            except OSError:
                return i, key, stat, None

        if todo:
            with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
                for i, key, stat, digest in pool.map(work, todo):
                    results[i] = digest
                    if digest is not None:
                        self.entries[key] = [*_identity(stat), digest]
            self.save()
        return results

    def save(self) -> None:
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.file, json.dumps(self.entries))
        except OSError:
            pass  # the index is only a speed-up


def _identity(stat: os.stat_result) -> list[int]:
    """What changes when a file's content may have: an index of older entries ([size, mtime, hash]) never matches."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
