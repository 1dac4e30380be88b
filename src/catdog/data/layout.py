"""Finding labelled images in the dataset layouts of DESIGN.md.

- flat, Kaggle style: ``cat.123.jpg``, ``dog.7.jpg`` (label = the name's leading letters);
- one folder per class: ``cat/``, ``Dogs/`` ... (files found recursively inside each);
- Microsoft PetImages: ``PetImages/Cat``, ``PetImages/Dog`` (a single wrapper folder is skipped).

Labels are normalised (``Cats`` → ``cat``) and classes are the sorted normalised names. A folder
of photos that show neither class (``neither/``, also ``other/``, ``none/``, ``negatives/``,
``background/`` ...) is the class ``neither``: examples of what a model must turn away, none of the
model's classes (``catdog train`` fits the `neither` gate with them, or a from-scratch net learns them as
its `neither` output; ``evaluate`` reports on them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from catdog.errors import DatasetError
from catdog.images import IMAGE_EXTENSIONS

__all__ = ["NEITHER", "Dataset", "DatasetError", "LabelledFile", "discover", "normalize_label"]

NEITHER = "neither"
# Normalised folder names that mean "no cat and no dog here" (after normalize_label's plural rule).
_NEITHER_NAMES = frozenset(
    {"neither", "other", "none", "negative", "background", "nothing", "not_cat_or_dog", "no_pet", "non_pet", "unknown"}
)

_FLAT_NAME = re.compile(r"^(?P<label>[A-Za-z][A-Za-z ]*?)[._\- ]?\d+(?:[._\- ]\w+)*\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: str


@dataclass(frozen=True)
class Dataset:
    """Every labelled file found under ``root`` and the class order."""

    root: Path
    layout: str  # "flat", "folders" or "petimages"
    files: list[LabelledFile]
    classes: list[str]

    @property
    def model_classes(self) -> list[str]:
        """The classes a model learns: every class but ``neither``."""
        return [name for name in self.classes if name != NEITHER]

    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in self.classes}
        for item in self.files:
            out[item.label] += 1
        return out


def normalize_label(name: str) -> str:
    """``'Cats'`` → ``'cat'``, ``'Golden Retrievers'`` → ``'golden_retriever'``."""
    label = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if label.endswith("ies") and len(label) > 4:
        label = label[:-3] + "y"
    elif label.endswith("s") and not label.endswith(("ss", "us", "is")) and len(label) > 3:
        label = label[:-1]
    return NEITHER if label in _NEITHER_NAMES else label


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name.startswith("__MACOSX")


def _files_under(folder: Path) -> list[Path]:
    """Every regular, non-hidden file below ``folder``, sorted, without following links out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(Path(d)))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not _is_hidden(path) and path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def _class_folders(root: Path) -> list[Path]:
    # A linked folder may point anywhere on the machine: not followed, like links further down.
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not _is_hidden(p))


def discover(root: str | os.PathLike, *, image_files_only: bool = False) -> Dataset:
    """Find labelled files under ``root`` in any supported layout.

    ``image_files_only`` keeps only files with an image extension inside class folders
    (training wants that); ``data check`` keeps every file so it can report strays.
    Raises :class:`DatasetError` for a missing, empty or unlabelled folder.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"Dataset folder '{root}' does not exist.")
    if not root.is_dir():
        raise DatasetError(f"'{root}' is a file; give the folder that holds the images.")

    layout = "folders"
    folders = _class_folders(root)
    flat_images = [
        p for p in sorted(root.iterdir()) if p.is_file() and not p.is_symlink() and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    # PetImages, or any single wrapper folder around the class folders.
    if len(folders) == 1 and not flat_images and _class_folders(folders[0]):
        layout = "petimages" if folders[0].name.lower() == "petimages" else "folders"
        folders = _class_folders(folders[0])

    files: list[LabelledFile] = []
    if flat_images and len(flat_images) >= len(folders):
        layout = "flat"
        for path in flat_images:
            match = _FLAT_NAME.match(path.name)
            if match and not _is_hidden(path):
                files.append(LabelledFile(path, normalize_label(match["label"])))
        if not files:
            raise DatasetError(
                f"The images in '{root}' carry no label: name them like 'cat.1.jpg' or use one folder per class."
            )
    else:
        for folder in folders:
            label = normalize_label(folder.name)
            for path in _files_under(folder):
                if image_files_only and path.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                files.append(LabelledFile(path, label))

    if not files:
        raise DatasetError(
            f"No images found in '{root}': expected 'cat.1.jpg'-style files or one folder per class (cat/, dog/)."
        )
    classes = sorted({item.label for item in files})
    return Dataset(root=root, layout=layout, files=files, classes=classes)
