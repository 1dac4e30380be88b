"""From a dataset folder to torch Datasets over the decoded-image cache."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from catdog.data.cache import PixelCache
from catdog.data.hashing import HashIndex
from catdog.data.layout import Dataset, DatasetError, composed, discover
from catdog.data.split import split_indices
from catdog.images import DEFAULT_MAX_PIXELS, ImageError, read_file, with_name
from catdog.preprocess import Preprocess


@dataclass
class PreparedData:
    """A discovered dataset whose images are all in the pixel cache (or known to be unusable)."""

    dataset: Dataset
    cache: PixelCache
    paths: list[Path]
    labels: list[int]
    hashes: list[str]
    rows: list[int]  # cache row of each usable file
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def fingerprint(self) -> str:
        """One hash of every (label, content hash) pair: identifies the training data."""
        from catdog.data.hashing import content_hash

        text = "\n".join(sorted(f"{self.classes[y]} {h}" for y, h in zip(self.labels, self.hashes)))
        return content_hash(text.encode())

    def split(self, val_fraction: float = 0.1, test_fraction: float = 0.0) -> dict[str, list[int]]:
        return split_indices(self.hashes, self.labels, val_fraction=val_fraction, test_fraction=test_fraction)


def prepare(
    root: str | os.PathLike,
    pre: Preprocess,
    cache_dir: str | os.PathLike,
    *,
    classes: list[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> PreparedData:
    """Discover, hash and cache every image under ``root``.

    ``classes``: the class order of an existing model; files of other classes are an error.
    """
    dataset = discover(root, image_files_only=True)
    class_index = {name: i for i, name in enumerate(dataset.classes)}
    if classes is not None:
        class_index = {composed(name): i for i, name in enumerate(classes)}  # as discover spells the labels
        unknown = sorted(set(dataset.classes) - set(class_index))
        if unknown:
            raise DatasetError(f"'{root}' has classes the model does not know: {', '.join(unknown)}.")
        dataset = replace(dataset, classes=list(classes))  # what was left out or skipped stays listed
    paths = [item.path for item in dataset.files]
    hashes = HashIndex(cache_dir).hashes(paths, workers)
    cache = PixelCache(cache_dir, pre, max_pixels=max_pixels)
    readable = [(p, h) for p, h in zip(paths, hashes) if h is not None]
    cache.build([p for p, _ in readable], [h for _, h in readable], workers=workers, progress=progress)

    out = PreparedData(dataset, cache, [], [], [], [])
    for item, digest in zip(dataset.files, hashes):
        if digest is None:
            out.unreadable.append((item.path, _why_unreadable(item.path)))
        elif digest in cache.errors:
            out.unreadable.append((item.path, with_name(cache.errors[digest], item.path)))
        else:
            out.paths.append(item.path)
            out.labels.append(class_index[item.label])
            out.hashes.append(digest)
            out.rows.append(cache.rows[digest])
    return out


def _why_unreadable(path: Path) -> str:
    """Why the hash index could not read a file, in the reader's sentence: train said "'x.jpg' cannot be read."
    and no more, where data check says "(permission denied)"."""
    try:
        read_file(path)
    except ImageError as err:
        return str(err)
    return f"'{path}' cannot be read."  # readable again: it changed while it was read


class CachedImages(torch.utils.data.Dataset):
    """``(uint8 CHW tensor, label)`` pairs read from the pixel cache, with an optional transform.

    The memory map is opened lazily in each process, so DataLoader workers share the page
    cache instead of pickling pixels.
    """

    def __init__(
        self,
        data: PreparedData,
        indices: list[int],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.file = data.cache.pixels_file
        self.side = data.cache.side
        self.n_rows = max(data.cache.rows.values(), default=-1) + 1
        self.rows = [data.rows[i] for i in indices]
        self.labels = [data.labels[i] for i in indices]
        self.transform = transform
        self._pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self) -> np.ndarray:
        """The whole pixel cache as a read-only ``(rows, side, side, 3)`` memory map (opened once per process)."""
        if self._pixels is None:
            self._pixels = np.memmap(self.file, dtype=np.uint8, mode="r", shape=(self.n_rows, self.side, self.side, 3))
        return self._pixels

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.array(self.pixels()[self.rows[i]])).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[i]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pixels"] = None
        return state


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    sampler: torch.utils.data.Sampler | None = None,
    workers: int | None = None,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader over all cores (workers stay alive across epochs)."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        generator=generator,
    )
