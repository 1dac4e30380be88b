"""The decoded-image cache: uint8 squares in a memory-mapped file, keyed by content.

Layout under ``<cache_dir>/pixels/<preprocess key>/``:

- ``pixels.u8`` — rows of ``side * side * 3`` bytes (HWC), appended as images are decoded;
- ``index.json`` — ``{"rows": {content_hash: row}, "errors": {content_hash: message}}``.

A row is found by the hash of the file's bytes, so a changed file is a miss (and is
decoded again) and a renamed or copied file is a hit. The index is rewritten atomically
after every chunk, and rows past the index are ignored, so a build killed at any point
resumes where it stopped and never serves a half-written image.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from catdog.fsutil import atomic_write_text, file_lock
from catdog.images import DEFAULT_MAX_PIXELS, ImageError, without_name
from catdog.preprocess import Preprocess, to_uint8

CHUNK = 1024  # images decoded between two index commits
# From this many images on, decoding runs in processes: threads share one interpreter lock, and
# on 16 cores they decoded about a quarter as fast as processes; below it, starting processes costs more.
PROCESSES_FROM = 2000


class PixelCache:
    """Decoded uint8 squares for one preprocessing setting."""

    def __init__(self, cache_dir: str | os.PathLike, pre: Preprocess, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.pre = pre
        self.side = pre.resize_size
        self.row_bytes = self.side * self.side * 3
        self.max_pixels = max_pixels
        self.dir = Path(cache_dir) / "pixels" / pre.cache_key()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pixels_file = self.dir / "pixels.u8"
        self.index_file = self.dir / "index.json"
        self.rows: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self._load_index()

    def _load_index(self) -> None:
        if self.index_file.exists():
            try:
                data = json.loads(self.index_file.read_text())
                self.rows, self.errors = dict(data["rows"]), dict(data["errors"])
                # An older catdog kept the sentence naming the file first read ("'a/x.jpg' is ..."), which named it
                # for every copy: those are decoded again, and kept as sentences about content (without_name).
                self.errors = {digest: error for digest, error in self.errors.items() if not error.startswith("'")}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):  # damaged: only costs a rebuild
                self.rows, self.errors = {}, {}
        n_rows = max(self.rows.values(), default=-1) + 1
        if self.pixels_file.exists() and self.pixels_file.stat().st_size < n_rows * self.row_bytes:
            # The pixels were lost or cut short behind the index's back: start over.
            self.rows, self.errors = {}, {}

    def _save_index(self) -> None:
        atomic_write_text(self.index_file, json.dumps({"side": self.side, "rows": self.rows, "errors": self.errors}))

    def missing(self, hashes: list[str]) -> list[str]:
        return [h for h in dict.fromkeys(hashes) if h not in self.rows and h not in self.errors]

    def build(
        self,
        paths: list[Path],
        hashes: list[str],
        *,
        workers: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Decode every file whose hash is not cached yet; bad files are remembered with their error."""
        # One builder at a time (several torchrun ranks may share a cache folder).
        with file_lock(self.dir / ".lock"):
            self._load_index()  # another process may have filled it while we waited
            todo: dict[str, Path] = {}
            for path, digest in zip(paths, hashes):
                if digest not in self.rows and digest not in self.errors and digest not in todo:
                    todo[digest] = path
            if not todo:
                return
            # Each file gets its row now; the decoders write it in place (a file that fails leaves a hole).
            first_row = max(self.rows.values(), default=-1) + 1
            jobs = [(digest, str(path), first_row + i) for i, (digest, path) in enumerate(todo.items())]
            with open(self.pixels_file, "ab") as _:
                pass
            with open(self.pixels_file, "r+b") as out:
                out.truncate(first_row * self.row_bytes)  # drop rows a killed build left unindexed
                decode = functools.partial(_decode_into, (str(self.pixels_file), self.pre, self.max_pixels))
                with self._decoders(workers, len(jobs)) as pool:
                    for start in range(0, len(jobs), CHUNK):
                        chunk = jobs[start : start + CHUNK]
                        errors = pool.map(decode, [(path, row) for _, path, row in chunk], chunksize=8)
                        new_rows = {}
                        for (digest, _, row), error in zip(chunk, list(errors)):
                            if error is None:
                                new_rows[digest] = row
                            else:
                                self.errors[digest] = error
                        os.fsync(out.fileno())  # the decoders' writes reach the disk before the index names them
                        self.rows.update(new_rows)
                        self._save_index()
                        if progress:
                            progress(len(chunk))

    @staticmethod
    def _decoders(workers: int | None, images: int) -> Executor:
        """Threads, or for many images forked processes (as DataLoader workers: nothing to re-import)."""
        workers = workers or os.cpu_count() or 1
        if workers > 1 and images >= PROCESSES_FROM:
            return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        return ThreadPoolExecutor(workers)

    def array(self) -> np.ndarray:
        """All cached squares as a read-only ``(rows, side, side, 3)`` memory map."""
        n_rows = max(self.rows.values(), default=-1) + 1
        if n_rows == 0:
            return np.zeros((0, self.side, self.side, 3), dtype=np.uint8)
        return np.memmap(self.pixels_file, dtype=np.uint8, mode="r", shape=(n_rows, self.side, self.side, 3))

    def row_of(self, digest: str) -> int | None:
        return self.rows.get(digest)


def _decode_into(target: tuple[str, Preprocess, int], job: tuple[str, int]) -> str | None:
    """Decode one file into its row of ``pixels.u8``; the error's sentence if it cannot be used."""
    pixels_file, pre, max_pixels = target
    path, row = job
    try:
        pixels = to_uint8(path, pre, max_pixels=max_pixels)
    except ImageError as err:
        return without_name(str(err), path)  # kept by content hash: a copy elsewhere is named where it is
    fd = os.open(pixels_file, os.O_WRONLY)
    try:
        os.pwrite(fd, pixels.tobytes(), row * pixels.nbytes)
    finally:
        os.close(fd)
    return None
