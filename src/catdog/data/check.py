"""``catdog data check``: what is wrong with a dataset, and moving the bad files out of it.

One pass over every file found under the dataset folder (stray non-images included) reads the
header and decodes a small version of each image in a thread pool (Pillow releases the GIL while
decoding). What a file's content says is cached by its content hash, so a rerun only stats files.

Reported:
- photos per class, and the photos of a `neither` folder (``neither/``, ``other/`` ...) as a count of
  their own: examples of what is not a cat or a dog, never a class a model learns;
- unusable files, each with the one-sentence reason from :mod:`catdog.images`;
- exact duplicates (same content hash) and near-duplicates (64-bit perceptual hashes within
  ``near_distance`` bits, grouped), within a class and across classes (a label conflict);
- images whose extension does not name their content (a PNG called ``.jpg``);
- images the layout gives no label (:attr:`catdog.data.layout.Dataset.left_out`), which no model would see;
- notes that do not make a dataset unclean: unusual pixel modes, tiny images, small classes, photos whose name
  says another class than their folder (``cats/dog.1.jpg``: the folder's class is used), blank images
  (one colour: their perceptual hashes say nothing, so they are no near-duplicates of anything) and files that are
  no image and have no image extension (``.json`` sidecars, ``.MOV``, ``Thumbs.db``), which no command reads.

Quarantine moves (never deletes) the unusable files and all but one copy of each duplicate group
into another folder, keeping relative paths. A group that spans several classes is a label
conflict: nobody knows which label is right, so every copy is moved for a person to decide.
The moves are written to a plan file first, so a run killed half-way is completed by the next.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np

from catdog.data.hashing import HashIndex, content_hash
from catdog.data.layout import NEITHER, Dataset, discover, label_in_name, normalize_label
from catdog.errors import CatdogError
from catdog.fsutil import (
    atomic_write_text,
    catdog_command,
    counted,
    default_cache_dir,
    first_few,
    links_or_folders,
    listed,
    shown,
)
from catdog.images import (
    FRAMES_COUNTED,
    IMAGE_EXTENSIONS,
    ImageError,
    decode,
    extension_matches,
    read_file,
    read_info,
    sniff_format,
    usual_extension,
    with_name,
    without_name,
)

# Sides below this many pixels make an image "tiny": 32 px is where a photo stops showing a
# recognisable animal, and it is far below any input size our models use (128-224 px).
TINY_SIDE = 32
# A class of fewer usable photos than this is too few to learn from, and most often a stray folder: a French
# Chats/ beside Cats/ became a class `chat` of one photo, which a model trained on it would answer.
SMALL_CLASS = 10
# A side this many times the other makes a panorama (a phone's are 3:1 to 10:1, a 21:9 ultrawide 2.3:1): every
# model sees a centre square of a photo, so of a panorama only its middle, where the animal may not be.
PANORAMA_RATIO = 3
# A camera's raw photos (Adobe, Canon, Nikon, Sony, Fujifilm, Olympus, Panasonic, Pentax, Samsung): Pillow reads at
# most the small TIFF preview some hold (a DNG's, a NEF's), never the photo.
RAW_EXTENSIONS = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".pef", ".srw"}
)
# More small classes than this are one row of the summary (a class named each, and the rest counted).
SMALL_CLASSES_SHOWN = 3
# Near-duplicate threshold in bits of the 64-bit pHash (pHash distances are always even).
# Chosen on the 23,000-image dev set: all 22 pairs at <= 4 bits are the same photo (re-encoded,
# resized or with a caption added); of the 12 pairs at 6-8 bits, 11 are different animals with
# a similar layout, and there are 139 pairs at 10 bits, 1,277 at 12.
NEAR_DISTANCE = 4
# pHash sets a bit for each of 64 DCT coefficients above their median: 32 on every photo of the dev set. A picture
# without detail (one colour: a blank frame, a lens cap) has them all at 0 but one, so 0 or 1 bit set, and any two
# such pictures were within a bit of each other: a black frame under cat/ and a white one under dog/ were one photo,
# a label conflict. A hash with fewer bits set says nothing of the picture: it takes no part in near-duplicates.
MIN_HASH_BITS = 8
# pHash looks at a 32x32 grey thumbnail, so decoding JPEGs at >= 64 px (DCT scaling) loses nothing.
HASH_DECODE_SIDE = 64
# Bump when what is cached per content hash changes.
FACTS_VERSION = 3
# A picture is grey when no pixel's channels are further apart than this: a black-and-white JPEG saved in colour
# decodes 0 apart, and of 800 dev-set photos the least colourful is 23 apart.
GREY_SPREAD = 8

MODE_NAMES = {
    "1": "1-bit black and white",
    "L": "grayscale",
    "LA": "grayscale with alpha",
    "La": "grayscale with alpha",
    "P": "palette",
    "PA": "palette with alpha",
    "RGBA": "RGB with alpha",
    "RGBa": "RGB with alpha",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
    "I": "32-bit integer",
    "I;16": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I;16L": "16-bit grayscale",
    "I;16N": "16-bit grayscale",
    "F": "32-bit float",
}

PLAN_NAME = ".catdog-quarantine-plan.json"
NEITHER_CAPTION = "neither (examples of what is not a cat or a dog)"
UNUSED_NEITHER_CAPTION = "neither (not used: only a cat/dog model learns what is neither)"  # as `train` says


@dataclass(frozen=True)
class Facts:
    """What one file's content says; cached by content hash, so nothing here depends on its path."""

    format: str | None = None  # Pillow's name for usable images, sniffed content otherwise
    width: int = 0
    height: int = 0
    mode: str = ""
    phash: str | None = None  # 16 hex digits
    error: str | None = None  # one sentence starting "The image ..."
    frames: int = 1  # an animated GIF's or a multi-page TIFF's pictures, of which the first alone is used
    grey: bool = False  # no colour in the picture, whatever its mode (a phone saves a black-and-white edit as RGB)


def inspect_bytes(data: bytes) -> Facts:
    """Header, perceptual hash and any decoding error of one file's content."""
    try:
        info = read_info(data)
        image = decode(data, min_size=HASH_DECODE_SIDE)
    except ImageError as err:
        return Facts(format=sniff_format(data[:64]), error=str(err))
    grey = int(np.ptp(np.asarray(image), axis=2).max()) <= GREY_SPREAD  # decoded as RGB, whatever the mode
    return Facts(
        info.format, info.width, info.height, info.mode, str(imagehash.phash(image)), frames=info.frames, grey=grey
    )


class FactsCache:
    """``hash -> Facts`` in one JSON file under the cache folder."""

    def __init__(self, cache_dir: Path) -> None:
        self.file = cache_dir / "check" / f"facts-v{FACTS_VERSION}.json"
        self.entries: dict[str, Facts] = {}
        with contextlib.suppress(OSError, ValueError, TypeError):  # missing or damaged: only costs a rescan
            self.entries = {key: Facts(*value) for key, value in json.loads(self.file.read_text()).items()}

    def save(self) -> None:
        """Write the facts, and remove an older catdog's: no version reads them again (a newer one's stay)."""
        data = {key: list(asdict(facts).values()) for key, facts in self.entries.items()}
        with contextlib.suppress(OSError):  # the cache is only a speed-up
            atomic_write_text(self.file, json.dumps(data))
            for version in range(1, FACTS_VERSION):
                (self.file.parent / f"facts-v{version}.json").unlink(missing_ok=True)


def _inspect_file(path: Path) -> tuple[str | None, Facts]:
    """(content hash, facts) of one file; the hash is None when the file cannot be read."""
    try:
        data = read_file(path)
    except ImageError as err:
        # The sentence every command gives (too large, unreadable ...), the file named from the dataset folder
        # later: it named the path as given, and the table's row showed it twice.
        return None, Facts(error=without_name(str(err), path))
    return content_hash(data), inspect_bytes(data)


def scan(
    paths: list[Path],
    cache_dir: Path,
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[str | None, Facts]]:
    """(content hash, facts) of every file, in order, inspecting only content not seen before."""
    cache = FactsCache(cache_dir)
    hashes = HashIndex(cache_dir).hashes(paths, workers)
    results: list[tuple[str | None, Facts] | None] = [None] * len(paths)
    todo = []
    for i, digest in enumerate(hashes):
        if digest is not None and digest in cache.entries:
            results[i] = (digest, cache.entries[digest])
        else:
            todo.append(i)
    if progress:
        progress(len(paths) - len(todo))
    if todo:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for i, (digest, facts) in zip(todo, pool.map(_inspect_file, [paths[i] for i in todo])):
                results[i] = (digest, facts)
                if digest is not None:
                    cache.entries[digest] = facts
                if progress:
                    progress(1)
        cache.save()
    return results  # type: ignore[return-value]


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(values)
    bits = np.unpackbits(values.view(np.uint8).reshape(*values.shape, 8), axis=-1)
    return bits.sum(axis=-1)


def near_pairs(hashes: np.ndarray, max_distance: int, block: int = 256) -> list[tuple[int, int, int]]:
    """Every pair ``(i, j, distance)`` with ``i < j`` whose 64-bit hashes differ in <= max_distance bits.

    All pairs, compared with vectorised XOR + popcount a block of rows at a time (23,000 hashes:
    about a second, with memory bounded by ``block * len(hashes)``).
    """
    pairs = []
    for start in range(0, len(hashes), block):
        rows = hashes[start : start + block]
        distance = _popcount(rows[:, None] ^ hashes[None, start:])
        i, j = np.nonzero(distance <= max_distance)
        upper = j > i  # j counts from `start` too: keep each pair once, never a hash with itself
        for a, b in zip(i[upper], j[upper]):
            pairs.append((start + int(a), start + int(b), int(distance[a, b])))
    return pairs


@dataclass
class Move:
    path: str  # relative to the dataset folder
    reason: str


@dataclass
class CheckReport:
    root: str
    layout: str
    classes: dict[str, int]  # photos per class a model learns; `neither` photos are counted apart
    files: int
    neither: int = 0  # photos in a `neither` folder: examples of what is not a cat or a dog
    wrapper: str | None = None  # the lone folder the layout was found in (PetImages, train), or None
    neither_beside: str | None = None  # the folder of `neither` photos beside the wrapper, not in it, or None
    unusable: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    near_duplicates: list[dict] = field(default_factory=list)
    label_conflicts: list[dict] = field(default_factory=list)
    extension_mismatches: list[dict] = field(default_factory=list)
    unusual_modes: list[dict] = field(default_factory=list)
    tiny_images: list[dict] = field(default_factory=list)
    small_classes: list[dict] = field(default_factory=list)  # classes of under SMALL_CLASS usable photos: a note
    blank_images: list[dict] = field(default_factory=list)  # no detail for a perceptual hash (one colour): a note
    panoramas: list[dict] = field(default_factory=list)  # a side PANORAMA_RATIO times the other: a note
    # Animated GIFs, PNGs and WebPs and multi-page TIFFs: every command uses their first picture alone, a note.
    several_frames: list[dict] = field(default_factory=list)
    # Photos in one class folder named for another class (cats/dog.1.jpg), per pair of classes: a note, as the
    # folder's class is the label (a name is the weaker word), but most often a photo sorted into the wrong folder.
    named_otherwise: list[dict] = field(default_factory=list)
    # Files that are no image and have no image extension (a .json beside each photo, .MOV, Thumbs.db): no command
    # reads them, so they are a note, not unusable photos; `classes` does not count them.
    not_images: list[dict] = field(default_factory=list)
    left_out: list[dict] = field(default_factory=list)  # images the layout gives no label: no model sees them
    not_read: list[dict] = field(default_factory=list)  # links (never followed) and folders that cannot be listed
    to_quarantine: list[Move] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    near_distance: int = NEAR_DISTANCE

    @property
    def problems(self) -> int:
        """Findings that make a dataset unclean; unusual modes, tiny images, small classes, blank images and files
        that are not images are only notes."""
        found = len(self.unusable) + len(self.duplicates) + len(self.near_duplicates) + len(self.extension_mismatches)
        return found + len(self.left_out) + len(self.not_read)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("to_quarantine")
        out["problems"] = self.problems
        out["clean"] = self.problems == 0
        return out


class _Groups:
    """Union-find over file indices: duplicates and near-duplicates join one group."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def check_dataset(
    root: str | os.PathLike,
    *,
    quarantine_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    near_distance: int = NEAR_DISTANCE,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> CheckReport:
    """Scan the dataset under ``root`` and report what is wrong with it (see the module docstring).

    With ``quarantine_dir``: first complete a quarantine that was killed half-way, then scan, then
    move ``report.to_quarantine`` there; ``report.quarantined`` lists every file moved.
    ``progress(n)`` is called as files are done, after ``on_start(total)``.
    """
    pending = []
    if quarantine_dir is not None:
        check_quarantine_folder(root, quarantine_dir)
        pending = finish_pending(quarantine_dir)
    report = _scan_report(root, cache_dir, near_distance, workers, progress, on_start)
    if quarantine_dir is not None:
        report.quarantined = pending + quarantine(root, report.to_quarantine, quarantine_dir)
    return report


def _neither_beside(dataset: Dataset) -> str | None:
    """The folder of `neither` photos beside the wrapper rather than in it, from the root: neither/ beside train/,
    train/neither/ beside train/train/ (its first folder alone, "train/", named the wrapper's split). Or None."""
    if dataset.wrapper is None:
        return None
    for item in dataset.files:
        if item.label == NEITHER and dataset.wrapper not in item.path.parents:
            folders = item.path.relative_to(dataset.root).parts[:-1]
            depth = next((i for i, name in enumerate(folders) if normalize_label(name) == NEITHER), len(folders) - 1)
            return "/".join(folders[: depth + 1])
    return None


def _scan_report(root, cache_dir, near_distance, workers, progress, on_start) -> CheckReport:
    dataset = discover(root, image_files_only=False)
    paths = [item.path for item in dataset.files]
    labels = [item.label for item in dataset.files]
    rel = [p.relative_to(dataset.root).as_posix() for p in paths]
    if on_start:
        on_start(len(paths))
    results = scan(paths, Path(cache_dir) if cache_dir else default_cache_dir(), workers=workers, progress=progress)
    # Among 5,000 photos a .json beside each (Google Photos' export) were 5,000 "unusable files", the two broken
    # photos lost among them, and doubled the class counts; `train` never reads them (it goes by the extension).
    # A raw photo is one too, though Pillow reads a DNG's TIFF thumbnail: "TIFF content named .dng: rename it .tif"
    # made a 256-pixel preview of it.
    stray = {
        i
        for i, (_, facts) in enumerate(results)
        if (facts.error and paths[i].suffix.lower() not in IMAGE_EXTENSIONS)
        or paths[i].suffix.lower() in RAW_EXTENSIONS
    }
    counts = {name: 0 for name in dataset.classes}
    for i, label in enumerate(labels):
        counts[label] += i not in stray
    neither = counts.pop(NEITHER, 0)
    wrapper = dataset.wrapper.relative_to(dataset.root).as_posix() if dataset.wrapper else None
    report = CheckReport(
        str(dataset.root),
        dataset.layout,
        counts,
        len(paths),
        neither,
        wrapper,
        _neither_beside(dataset),
        near_distance=near_distance,
    )
    report.left_out = [
        {"path": path.relative_to(dataset.root).as_posix(), "reason": _why_left_out(dataset.layout)}
        for path in dataset.left_out
    ]
    report.not_read = [
        {"path": path.relative_to(dataset.root).as_posix(), "reason": why} for path, why in dataset.skipped
    ]
    report.named_otherwise = _named_otherwise(dataset)

    usable = []
    listings: dict[Path, dict[str, str]] = {}
    for i, (_, facts) in enumerate(results):
        if i in stray:
            report.not_images.append({"path": rel[i], "label": labels[i], "extension": paths[i].suffix.lower()})
            continue
        if facts.error:
            reason = with_name(facts.error, rel[i])
            report.unusable.append({"path": rel[i], "label": labels[i], "reason": reason})
            report.to_quarantine.append(Move(rel[i], f"unusable: {reason}"))
            continue
        usable.append(i)
        if not extension_matches(paths[i], facts.format or ""):
            report.extension_mismatches.append(
                {
                    "path": rel[i],
                    "extension": paths[i].suffix.lower(),
                    "content": facts.format,
                    **_rename(paths[i], facts.format, listings),
                }
            )
        if facts.mode != "RGB":
            mode = {"path": rel[i], "mode": facts.mode, "description": MODE_NAMES.get(facts.mode, facts.mode)}
            report.unusual_modes.append(mode)
        if min(facts.width, facts.height) < TINY_SIDE:
            report.tiny_images.append({"path": rel[i], "width": facts.width, "height": facts.height})
        if not _detailed(facts):
            report.blank_images.append({"path": rel[i]})
        if max(facts.width, facts.height) >= PANORAMA_RATIO * min(facts.width, facts.height):
            report.panoramas.append({"path": rel[i], "width": facts.width, "height": facts.height})
        if facts.frames > 1:
            report.several_frames.append({"path": rel[i], "format": facts.format, "frames": facts.frames})

    usable_in = Counter(labels[i] for i in usable)
    for name in report.classes:
        if usable_in[name] < SMALL_CLASS:
            # Its photos show where the class comes from; its other files when none is usable.
            files = [rel[i] for i in usable if labels[i] == name] or [
                rel[i] for i, label in enumerate(labels) if label == name
            ]
            report.small_classes.append({"class": name, "photos": usable_in[name], "example": files[0], "files": files})

    groups = _Groups(len(paths))
    _find_duplicates(report, usable, results, rel, labels, groups, near_distance)
    _plan_duplicate_moves(report, usable, results, rel, labels, groups)
    return report


def _named_otherwise(dataset: Dataset) -> list[dict]:
    """Per folder class and the other class its files' names say: how many, and the first of them."""
    if dataset.layout == "flat":  # the name is the label there
        return []
    found: dict[tuple[str, str], list[Path]] = {}
    for item in dataset.files:
        named = label_in_name(item.path.name)
        if named != item.label and named in dataset.classes and item.path.suffix.lower() in IMAGE_EXTENSIONS:
            found.setdefault((item.label, named), []).append(item.path)
    return [
        {"class": label, "named": named, "photos": len(paths), "example": paths[0].relative_to(dataset.root).as_posix()}
        for (label, named), paths in found.items()
    ]


def _named_otherwise_note(found: dict) -> str:
    """'2 files named like dog in a cat folder: read as cat'. The folder is named, not "class": neither is none."""
    folder = found["class"]
    return f"{counted(found['photos'], 'file')} named like {found['named']} in a {folder} folder: read as {folder}"


def small_class_note(name: str, photos: int) -> str:
    """The note on a class of under ``SMALL_CLASS`` usable photos, in the words of data check and of train."""
    return f"class {name}: {counted(photos, 'usable photo')}, under {SMALL_CLASS}: too few to learn from"


def _detailed(facts: Facts) -> bool:
    """Whether a usable image's perceptual hash tells it from others (see MIN_HASH_BITS)."""
    return int(facts.phash or "0", 16).bit_count() >= MIN_HASH_BITS


def _why_left_out(layout: str) -> str:
    if layout == "flat":
        return "no label: not named like 'cat.1.jpg', or in a folder beside the flat layout"
    return "no label: not in a class folder"


def _find_duplicates(report, usable, results, rel, labels, groups, near_distance) -> None:
    by_hash: dict[str, list[int]] = {}
    for i in usable:
        by_hash.setdefault(results[i][0], []).append(i)
    for members in by_hash.values():
        if len(members) > 1:
            for i in members[1:]:
                groups.join(members[0], i)
            names = sorted({labels[i] for i in members})
            report.duplicates.append({"files": [rel[i] for i in members], "labels": names, "conflict": len(names) > 1})
    # Near-duplicates among distinct contents (exact copies are reported above), as groups: 13 shots of one
    # scene were once 78 pairs, and 78 problems.
    firsts = [members[0] for members in by_hash.values() if _detailed(results[members[0]][1])]
    hashes = np.array([int(results[i][1].phash, 16) for i in firsts], dtype=np.uint64)
    near, widest = _Groups(len(rel)), {}
    for a, b, distance in near_pairs(hashes, near_distance):
        groups.join(firsts[a], firsts[b])
        near.join(firsts[a], firsts[b])
        widest[firsts[a]] = max(widest.get(firsts[a], 0), distance)
    members_of: dict[int, list[int]] = {}
    for i in firsts:
        members_of.setdefault(near.find(i), []).append(i)
    for members in members_of.values():
        if len(members) > 1:
            members.sort(key=lambda i: rel[i])
            report.near_duplicates.append(
                {
                    "files": [rel[i] for i in members],
                    "labels": [labels[i] for i in members],
                    "distance": max(widest.get(i, 0) for i in members),  # the widest pair that joined the group
                    "conflict": len({labels[i] for i in members}) > 1,
                }
            )
    report.near_duplicates.sort(key=lambda group: group["files"])


def _copy_name(stem: str, stems: set[str]) -> bool:
    """Whether ``stem`` is another's with something added, as a copy's is ('IMG_1000 (1)', 'cat - Copy', 'cat copy'
    beside 'IMG_1000' and 'cat'). A shorter name alone says nothing: 'anim.gif' was kept over the 'IMG_1002.JPG' it
    was saved from."""
    stem = stem.lower()
    return any(stem[:end] in stems for end in range(1, len(stem)))  # by prefixes: a group may be thousands


def _plan_duplicate_moves(report, usable, results, rel, labels, groups) -> None:
    """Keep the largest image of each group, then a colour one, then one whose name is no copy's, then the first path;
    move every copy of a conflict. By path alone, 'IMG_1000 (1).JPG' sorted first and was kept, and the original
    moved away from its .AAE and .json sidecars; a black-and-white edit of a photo, as large, was kept over it."""
    members_of: dict[int, list[int]] = {}
    for i in usable:
        members_of.setdefault(groups.find(i), []).append(i)
    for members in members_of.values():
        if len(members) < 2:
            continue
        names = sorted({labels[i] for i in members})
        if len(names) > 1:
            report.label_conflicts.append({"files": [rel[i] for i in members], "labels": names})
            for i in members:
                others = ", ".join(f"'{rel[j]}'" for j in members if j != i)
                report.to_quarantine.append(Move(rel[i], f"label conflict: the same photo as {others}"))
            continue
        stems = {Path(rel[i]).stem.lower() for i in members}
        keep = min(
            members,
            key=lambda i: (
                -results[i][1].width * results[i][1].height,
                results[i][1].grey,
                _copy_name(Path(rel[i]).stem, stems),
                rel[i],
            ),
        )
        for i in members:
            if i != keep:
                kind = "duplicate" if results[i][0] == results[keep][0] else "near-duplicate"
                report.to_quarantine.append(Move(rel[i], f"{kind} of '{rel[keep]}'"))
    report.to_quarantine.sort(key=lambda move: move.path)


# --- quarantine ---------------------------------------------------------------------------------


def check_quarantine_folder(root: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Refuse a quarantine folder inside the dataset (its files would be scanned as a class)."""
    root_abs, dest_abs = Path(root).resolve(), Path(dest).resolve()
    if dest_abs == root_abs or root_abs in dest_abs.parents:
        raise CatdogError(f"The quarantine folder '{dest}' is inside the dataset '{root}'; choose one outside it.")
    if dest_abs in root_abs.parents:
        raise CatdogError(f"The quarantine folder '{dest}' contains the dataset '{root}'; choose another folder.")
    if Path(dest).exists() and not Path(dest).is_dir():
        raise CatdogError(f"The quarantine folder '{dest}' is a file; give a folder.")


def quarantine(root: str | os.PathLike, moves: list[Move], dest: str | os.PathLike) -> list[dict]:
    """Move ``moves`` from ``root`` to ``dest`` keeping relative paths; returns what was moved.

    The plan is written to ``dest`` first and removed last: a run killed in between leaves it,
    and :func:`finish_pending` (called at the start of every quarantine) completes it.
    """
    check_quarantine_folder(root, dest)
    dest = Path(dest)
    finish_pending(dest)
    if not moves:
        return []
    plan = {"root": str(Path(root).resolve()), "moves": [asdict(move) for move in moves]}
    atomic_write_text(dest / PLAN_NAME, json.dumps(plan, indent=1))
    return finish_pending(dest)


def finish_pending(dest: str | os.PathLike) -> list[dict]:
    """Carry out the plan left in ``dest`` (if any), then keep it as a dated record of the moves."""
    plan_file = Path(dest) / PLAN_NAME
    if not plan_file.exists():
        return []
    plan = json.loads(plan_file.read_text())
    root, dest = Path(plan["root"]), Path(dest)
    done = []
    for move in plan["moves"]:
        if not _inside(move["path"]):
            continue  # a damaged or hand-edited plan must not move files from or to outside its folders
        target = dest / move["path"]
        outcome = _move_file(root / move["path"], target)
        if outcome == "moved":
            done.append({"path": move["path"], "to": str(target), "reason": move["reason"]})
        elif outcome == "conflict":
            done.append({"path": move["path"], "to": None, "reason": f"not moved: '{target}' already exists"})
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
    while (dest / f"quarantine-{stamp}-{n}.json").exists():  # never overwrite an earlier record
        n += 1
    os.replace(plan_file, dest / f"quarantine-{stamp}-{n}.json")
    return done


def _inside(relative: str) -> bool:
    """Whether a plan's path stays inside the folder it is joined to (relative, no '..')."""
    path = Path(relative)
    return bool(relative) and not path.is_absolute() and ".." not in path.parts


def _move_file(src: Path, dst: Path) -> str:
    """Move one file without ever overwriting; idempotent, so a half-done plan can be rerun.

    Returns "moved"; "gone" when there is nothing to move (moved by an earlier run, or deleted);
    "conflict" when ``dst`` already holds other content (then ``src`` stays where it is).
    """
    if dst.exists():
        if not src.exists():
            return "gone"
        if src.read_bytes() != dst.read_bytes():
            return "conflict"
        src.unlink()  # a cross-device copy finished before a crash: finish its move
        return "moved"
    if not src.exists():
        return "gone"
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)  # atomic within one filesystem: the file is in one place or the other
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        partial = dst.with_name(f".{dst.name}.partial")
        shutil.copy2(src, partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, dst)
        src.unlink()
    return "moved"


# --- human summary ------------------------------------------------------------------------------


def _apart(group: dict) -> str:
    """A pair is "3 bits apart"; in a group of more, two members may be further apart than the widest pair that
    joined it (a chain), so "4 bits apart" said of five photos was not true of every two. Equal hashes are said
    as such ("each within 0 bits of another" said it as a measure), and one bit is "1 bit". Not "saved again"
    alone: a grey or brightened copy hashes equal too."""
    if group["distance"] == 0:
        return "equal perceptual hashes: the same picture saved again or edited"
    bits = counted(group["distance"], "bit")
    return f"{bits} apart" if len(group["files"]) == 2 else f"each within {bits} of another"


def summary(report: CheckReport, limit: int = 20) -> list:
    """Rich renderables for a person: counts per class, counts per finding, then the details."""
    from rich.table import Table

    # Said, as a lone PetImages/ of flat files was read as the class "petimage" once and only the table showed it.
    where = f" in {shown(report.wrapper)}/" if report.wrapper else ""
    if report.neither_beside:  # a neither/ beside train/ is read too, though the layout is in train/
        where += f", {shown(report.neither_beside)}/ beside it"
    # The files the table counts: a .json beside each of 5,000 photos (Google Photos) made the title say 10,000
    # above classes that add up to 5,000; those files have a note row of their own.
    images = report.files - len(report.not_images)
    title = f"{shown(report.root)} ({report.layout} layout{where}, {counted(images, 'file')})"
    classes = Table(title=title, title_justify="left")
    classes.add_column("class")
    classes.add_column("files", justify="right")  # unusable ones included: the findings below name them
    for name, count in report.classes.items():
        classes.add_row(name, str(count))
    if report.neither:
        classes.add_section()
        pets = set(report.classes) <= {"cat", "dog"}
        classes.add_row(NEITHER_CAPTION if pets else UNUSED_NEITHER_CAPTION, str(report.neither))

    details = Table(title="Findings", title_justify="left")
    for column in ("finding", "files", "detail"):
        details.add_column(column, overflow="fold")
    rows = {
        # The reason names the file for --json; beside its path in the table that name was the same path again,
        # and on an 80-column terminal each unusable file took two lines more.
        "unusable": [(u["path"], u["reason"].removeprefix(f"'{u['path']}' ")) for u in report.unusable],
        "duplicate": [(_some(d["files"]), _labels(d)) for d in report.duplicates],
        "near-duplicate": [(_some(d["files"]), f"{_apart(d)}; {_labels(d)}") for d in report.near_duplicates],
        "wrong extension": [(m["path"], _misnamed(m)) for m in report.extension_mismatches],
        "unusual mode (note)": _by_mode(report.unusual_modes),
        "left out": [(item["path"], item["reason"]) for item in report.left_out],
        "not read": [(item["path"], item["reason"]) for item in report.not_read],
        "tiny image (note)": [
            (t["path"], f"{t['width']}x{t['height']} (< {TINY_SIDE} px)") for t in report.tiny_images
        ],
        "small class (note)": _small_classes(report.small_classes),
        "named for another class (note)": [(n["example"], _named_otherwise_note(n)) for n in report.named_otherwise],
        "blank image (note)": [(b["path"], "one colour, no detail: a blank frame?") for b in report.blank_images],
        "panorama (note)": [(p["path"], _panorama_note(p)) for p in report.panoramas],
        "several pictures (note)": [(f["path"], _first_frame_note(f)) for f in report.several_frames],
        # A camera's raw photo is an image, if not one train reads: "not an image" above "a camera raw photo" misled.
        "camera raw photo (note)": _by_extension([f for f in report.not_images if f["extension"] in RAW_EXTENSIONS]),
        "not an image (note)": _by_extension([f for f in report.not_images if f["extension"] not in RAW_EXTENSIONS]),
        "moved": [(q["path"], q["to"]) for q in report.quarantined if q["to"]],
        "not moved": [(q["path"], q["reason"]) for q in report.quarantined if not q["to"]],
    }
    for kind, found in rows.items():
        for path, detail in found[:limit]:
            details.add_row(kind, shown(path), shown(detail))
        if len(found) > limit:
            details.add_row(kind, f"... and {len(found) - limit} more", "use --json for the full list")

    # Right under notes such as "no command reads" camera raw photos, a bare "clean" read as a contradiction.
    clean = "clean apart from the notes above" if details.row_count else "clean"
    verdict = (
        f"[bold green]{clean}[/]: no unusable files, duplicates, wrong extensions or files left out or not read."
        if report.problems == 0
        else f"[bold red]{counted(report.problems, 'problem')}[/]: {_found(report)}."
    )
    out = [classes]
    if details.row_count:
        out.append(details)
    out.append(verdict)
    if report.to_quarantine and not report.quarantined:
        out.append(shown(_quarantine_hint(report)))
    if len(report.classes) == 1:  # a wrapper of one label's photos read as class "train" once, and nothing said
        only = shown(next(iter(report.classes)))
        out.append(f"One class ({only}): enough to evaluate a model on, not to train one (training needs two or more).")
    return out


def _quarantine_hint(report: CheckReport) -> str:
    """The command that moves what the findings name out of the dataset. The verdict counted the problems and
    stopped: a newcomer was not told that --quarantine exists, nor where its folder may go (not inside)."""
    root = Path(report.root)
    if root.name in ("", ".."):  # '.' or '..': a folder beside it needs its name
        root = root.resolve()
    beside = root.parent / f"{root.name or 'dataset'}-quarantine"  # never inside: check refuses that
    near = ("--near-distance", str(report.near_distance)) if report.near_distance != NEAR_DISTANCE else ()
    # --near-distance as the check had it: without it, the command moved other near-duplicates than counted.
    command = catdog_command("data", "check", root, "--quarantine", beside, *near)
    if command is None:
        command = f"catdog data check on it with --quarantine and a folder beside it, such as '{beside}'"
    moved = counted(len(report.to_quarantine), "file")
    return (
        f"To move the {moved} at fault out of the dataset (unusable files, the extra copies of duplicates and "
        f"near-duplicates, every copy of a label conflict; nothing is deleted): {command}"
    )


def _some(files: list[str], shown: int = 5) -> str:
    """A group's first few files: the row of a group named every file, so 300 copies of one placeholder photo
    would fill a screen. Paths all shown are a plain comma list; "and" only comes before a count."""
    few = first_few(files, shown)
    return listed(few) if len(few) < len(files) else ", ".join(files)


def _small_classes(small: list[dict]) -> list[tuple[str, str]]:
    """A row per small class naming its first photos and counting the rest, or, of more than a few classes (a
    camera roll's folders), one row counting them: the row named one file, and 15 stray folders filled 15 rows."""
    if len(small) <= SMALL_CLASSES_SHOWN:
        return [(_some(c["files"], shown=2), small_class_note(c["class"], c["photos"])) for c in small]
    classes = listed(first_few([f"{c['class']} ({c['photos']:,})" for c in small], SMALL_CLASSES_SHOWN))
    examples = _some([c["example"] for c in small], shown=2)
    return [
        (examples, f"{len(small):,} classes of under {SMALL_CLASS} usable photos, too few to learn from: {classes}")
    ]


def _by_extension(files: list[dict]) -> list[tuple[str, str]]:
    """One row per extension: a .json beside each of 5,000 photos is one line, not 20 and "4,980 more"."""
    rows: dict[str, list[str]] = {}
    for item in files:
        rows.setdefault(item["extension"], []).append(item["path"])
    return [
        (_some(paths, shown=1), _no_image(extension, len(paths)))
        for extension, paths in sorted(rows.items(), key=lambda row: -len(row[1]))
    ]


def _renamed(path: Path, content: str | None) -> str | None:
    """The name a file of ``content`` is best given: 'cat.1.png' for 'cat.1.jpg' of PNG content, and 'IMG_1.heic'
    for 'IMG_1.heic.jpg' (an extension typed after the right one, hoping to convert it: "rename it .heic" led to
    'IMG_1.heic.heic'). None for a format without an extension of its own."""
    if extension_matches(path.stem, content or ""):
        return path.stem
    usual = usual_extension(content or "")
    return path.with_suffix(usual).name if usual else None


def _rename(path: Path, content: str | None, listings: dict[Path, dict[str, str]]) -> dict:
    """``rename_to``, and ``usual_name_taken``: the file beside ``path`` that renaming it so would overwrite
    (``cat.1.png`` for ``cat.1.jpg`` of PNG content), in any case, as a Mac's or Windows' disk tells ``cat.1.PNG``
    from ``cat.1.png`` no more than a user. A name taken is no ``rename_to``: a script renaming by it lost a photo."""
    renamed = _renamed(path, content)
    taken = _listing(path.parent, listings).get(renamed.lower()) if renamed else None
    return {"rename_to": None if taken else renamed, "usual_name_taken": taken}


def _listing(folder: Path, listings: dict[Path, dict[str, str]]) -> dict[str, str]:
    """The names in ``folder`` by their lower case, listed once: a listing per file took 11 s for a folder of 5,000
    HEIC-named JPEGs, and grew with the square of their number."""
    if folder not in listings:
        try:
            listings[folder] = {name.lower(): name for name in os.listdir(folder)}
        except OSError:
            listings[folder] = {}
    return listings[folder]


def _misnamed(mismatch: dict) -> str:
    """ "JPEG content named .heic: rename it .jpg": the row said what was wrong, not what to do about it. A name
    taken beside it is said: "rename it .png" over a cat.1.png there would have lost that photo."""
    usual = usual_extension(mismatch["content"] or "")
    renamed, taken = mismatch["rename_to"], mismatch["usual_name_taken"]
    remedy = f": rename it {usual}" if usual else ""
    if taken:
        remedy = f": give it another {Path(taken).suffix.lower()} name ('{taken}' is another file)"
    elif renamed and renamed == Path(mismatch["path"]).stem:
        remedy = f": rename it {renamed} (without {mismatch['extension']})"
    return f"{mismatch['content']} content named {mismatch['extension']}{remedy}"


def _panorama_note(found: dict) -> str:
    """ "24000x3000: a model sees at most its middle square, 12% of it" (a centre crop of that square, by the model's
    crop_pct): a dog at one end of a panorama was "neither" to every model, and data check said nothing of it."""
    share = min(found["width"], found["height"]) / max(found["width"], found["height"])
    return f"{found['width']}x{found['height']}: a model sees at most its middle square, {share:.0%} of it"


def _first_frame_note(found: dict) -> str:
    """ "an animated GIF of 12 frames: only the first is used": a GIF of a cat walking in, read by its first frame
    (an empty room), was learnt as a cat and nobody said so. Counting stops at FRAMES_COUNTED: "at least 1,000"."""
    count = f"at least {found['frames']:,}" if found["frames"] >= FRAMES_COUNTED else f"{found['frames']:,}"
    if found["format"] == "TIFF":
        return f"a TIFF of {count} pages: only the first page is used"
    return f"an animated {found['format']} of {count} frames: only the first is used"


def _by_mode(files: list[dict]) -> list[tuple[str, str]]:
    """One row per mode: 25 PNGs with alpha from a download filled 20 rows and "... and 5 more" of the same
    note, pushing the problems off the screen."""
    rows: dict[str, list[str]] = {}
    for item in files:
        rows.setdefault(item["description"], []).append(item["path"])
    return [
        (_some(paths, shown=1), description if len(paths) == 1 else f"{description} ({len(paths):,} files)")
        for description, paths in sorted(rows.items(), key=lambda row: -len(row[1]))
    ]


def _no_image(extension: str, n: int) -> str:
    if extension in RAW_EXTENSIONS:  # "not an image" of a camera's own photo read as if the file were broken
        photos = "a camera raw photo" if n == 1 else "camera raw photos"
        # Not "which no command reads": predict, given one by name, and serve's API read it by content, so a DNG's or
        # NEF's small TIFF preview (a folder given to predict leaves them out, as train does).
        read = "which train, evaluate and audit leave out (predict and serve read only the small preview some hold)"
        return f"{n:,} {extension} {'file' if n == 1 else 'files'}: {photos}, {read}: export as JPEG"
    noun, verdict = (
        ("file", "not an image; no command reads it") if n == 1 else ("files", "not images; no command reads them")
    )
    what = f"{extension} {noun}" if extension else f"{noun} without an extension"
    return f"{n:,} {what}: {verdict}"


def _found(report: CheckReport) -> str:
    """The kinds of problem found, each counted: "2 duplicate groups (1 of them a label conflict), 3 image files
    left out". A kind not found is not named (the verdict once listed five zeros beside the one count found)."""
    conflicts = sum(d["conflict"] for d in report.duplicates)
    near_conflicts = sum(d["conflict"] for d in report.near_duplicates)
    kinds = [
        (len(report.unusable), counted(len(report.unusable), "unusable file")),
        (
            len(report.duplicates),
            f"{counted(len(report.duplicates), 'duplicate group')} ({conflicts} of them a label conflict)",
        ),
        (
            len(report.near_duplicates),
            f"{counted(len(report.near_duplicates), 'near-duplicate group')} (within {report.near_distance} bits; "
            f"{near_conflicts} a label conflict)",
        ),
        (len(report.extension_mismatches), counted(len(report.extension_mismatches), "wrong extension")),
        (len(report.left_out), f"{counted(len(report.left_out), 'image file')} left out (no label)"),
        (len(report.not_read), f"{links_or_folders(len(report.not_read))} not read"),
    ]
    return ", ".join(words for n, words in kinds if n)


def _labels(group: dict) -> str:
    names = sorted(set(group["labels"]))
    return f"label conflict: {' vs '.join(names)}" if len(names) > 1 else f"same class: {names[0]}"
