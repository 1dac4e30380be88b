"""Deterministic train/val/test split by content hash.

Each file's place depends only on the hash of its own bytes, so adding or removing files
never moves an existing file to another split, identical copies always land together (no
leak of a duplicate from train into val), and every class is split at the same fraction.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from catdog.errors import CatdogError


def hash_fraction(digest: str, salt: str = "") -> float:
    """A uniform number in [0, 1) derived from a content hash."""
    if salt:
        from catdog.data.hashing import content_hash

        digest = content_hash((salt + digest).encode())
    return int(digest[:12], 16) / float(16**12)


def split_indices(
    hashes: list[str],
    labels: list[int],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    salt: str = "",
) -> dict[str, list[int]]:
    """Indices of the train, val and test files.

    A file goes to val when its hash fraction is below ``val_fraction``, to test when below
    ``val_fraction + test_fraction``, to train otherwise. So that tiny classes are still
    validated, a class with at least two distinct images and no val image gives its
    lowest-fraction image to val.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise CatdogError("val and test fractions must be in [0, 1) and sum to less than 1.")
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    fractions = [hash_fraction(h, salt) for h in hashes]
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, (fraction, label) in enumerate(zip(fractions, labels)):
        if fraction < val_fraction:
            out["val"].append(i)
        elif fraction < val_fraction + test_fraction:
            out["test"].append(i)
        else:
            out["train"].append(i)
        by_class[label].append(i)
    if val_fraction > 0:
        in_val = set(out["val"])
        for members in by_class.values():
            distinct = {hashes[i] for i in members}
            if len(distinct) >= 2 and not in_val.intersection(members):
                lowest = min((i for i in members if i in set(out["train"])), key=lambda i: fractions[i], default=None)
                if lowest is not None:
                    same = [i for i in members if hashes[i] == hashes[lowest]]
                    out["train"] = [i for i in out["train"] if i not in same]
                    out["val"].extend(same)
    return {name: sorted(idx) for name, idx in out.items()}


def files_in_part(
    label_of: dict[str, str],
    classes: list[str],
    part: str,
    *,
    val_fraction: float,
    test_fraction: float = 0.0,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, str]:
    """The files of ``label_of`` (path → label) that :func:`split_indices` puts in ``part``, as ``catdog train``
    splits a folder; files that cannot be read are in no part. ``cache_dir`` keeps the content hashes."""
    from catdog.data.hashing import HashIndex

    paths = list(label_of)
    hashes = HashIndex(cache_dir).hashes([Path(p) for p in paths])
    readable = [i for i, digest in enumerate(hashes) if digest is not None]
    parts = split_indices(
        [hashes[i] for i in readable],
        [classes.index(label_of[paths[i]]) for i in readable],
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    return {paths[readable[j]]: label_of[paths[readable[j]]] for j in parts[part]}
