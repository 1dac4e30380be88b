"""Finding labelled images in the dataset layouts of DESIGN.md.

- flat, Kaggle style: ``cat.123.jpg``, ``dog.7.jpg`` (label = the name's leading letters);
- one folder per class: ``cat/``, ``Dogs/`` ... (files found recursively inside each);
- Microsoft PetImages: ``PetImages/Cat``, ``PetImages/Dog`` (a single wrapper folder around any layout is looked into,
  and one inside it named like a wrapper: ``kagglecatsanddogs_5340/PetImages/Cat``).

A download's splits side by side (``training_set/`` and ``test_set/``, ``train/`` and ``val/``) are refused in a
sentence that names the folder to give: they are no classes.

Labels are normalised (``Cats`` → ``cat``) and classes are the sorted normalised names. A folder
of photos that show neither class (``neither/``, also ``other/``, ``none/``, ``negatives/``,
``background/`` ...) is the class ``neither``: examples of what a model must turn away, none of the
model's classes (``catdog train`` fits the `neither` gate with them, or a from-scratch net learns them as
its `neither` output; ``evaluate`` reports on them).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from catdog.errors import DatasetError
from catdog.fsutil import counted, first_few, listed, utf8_safe
from catdog.images import IMAGE_EXTENSIONS

__all__ = ["NEITHER", "Dataset", "DatasetError", "LabelledFile", "discover", "label_in_name", "normalize_label"]

NEITHER = "neither"
# Normalised folder names that mean "no cat and no dog here" (after normalize_label's plural rule).
_NEITHER_NAMES = frozenset(
    {"neither", "other", "none", "negative", "background", "nothing", "not_cat_or_dog", "no_pet", "non_pet", "unknown"}
)

# Leading letters that cameras, phones, screenshots, chat apps and browsers ('download (1).jpg') put in file names:
# no label in a flat layout. A web image saved twice is 'th (1).jpg' or 'OIP (2).jpg' (Bing), 'maxresdefault (1).jpg'
# (YouTube): since a number may stand in brackets, each was a class of its own beside cat and dog, as were a Mac's
# 'Screen Shot 2020-01-01 at 10.00.00.png' and 'WhatsApp Image 2020-01-01 at 10.00.00.jpeg' (normalised names),
# WeChat's 'mmexport1577836800000.jpg' and KakaoTalk's 'KakaoTalk_20200101_100000000.jpg', and Canva's
# 'Untitled design (1).png' and an iPhone's photo sent to Windows, 'Image from iOS (1).jpg' ('image_from_io' once
# normalised): classes 'untitled_design' and 'image_from_io'.
_CAMERA_NAMES = frozenset(
    {
        *("img", "dsc", "dscn", "dscf", "pxl", "mvimg", "pic", "image", "photo", "photo_on", "scan", "dji", "gopr"),
        *("screenshot", "screen_shot", "whatsapp_image", "signal", "received", "snapchat", "mmexport", "kakaotalk"),
        *("download", "unnamed", "untitled", "th", "oip", "maxresdefault", "hqdefault", "sddefault", "mqdefault"),
        *("untitled_design", "image_from_io"),
    }
)

# Normalised names of the folders a download splits a dataset into, those to train on first.
_TRAINING_SPLIT_NAMES = frozenset({"train", "training", "train_set", "training_set", "trainset"})
_TEST_SPLIT_NAMES = frozenset({"test", "test_set", "testset"})
_VALIDATION_SPLIT_NAMES = frozenset({"val", "val_set", "valid", "validation", "validation_set", "dev"})
_SPLIT_NAMES = _TRAINING_SPLIT_NAMES | _VALIDATION_SPLIT_NAMES | _TEST_SPLIT_NAMES
# Normalised names of a lone folder that wraps a dataset rather than naming a class: a split, or a container
# (Microsoft's PetImages/, a Kaggle archive's training_set/ ...). Trailing digits are no part of the name: train2/.
_WRAPPER_NAMES = _CAMERA_NAMES | _SPLIT_NAMES | {"data", "dataset", "sample", "picture", "petimage", "pet_image"}

# A folder named for a year or a date ('2019', '2019-07', '2019_07_14', 'July 2019', an event's '2019-07-14 Beach',
# Google Takeout's 'Photos from 2019', 'Fotos von 2019', 'Photos de 2019', "Foto's uit 2019") sorts photos by when
# they were taken, never by what they show: 'Pictures/2019' and 'Pictures/2020' were classes. Four digits from 19
# or 20 on: cat2/ and dog_1/ stay classes. An event's words follow a month, never a bare year: '2019 cats/',
# '2001_space/' and a car's '2012 Tesla Model S/' are classes. Each part is a fixed alternative or bounded; only
# the words are free. Months are named in Takeout's languages and their neighbours ('Juli 2019', 'juillet 2019',
# 'julio de 2019', 'luglio 2019', 'julho 2019'), with and without accents: in English only, those were classes.
_MONTH = "|".join(
    (
        "january|february|march|april|may|june|july|august|september|october|november|december",
        "jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec",
        "januar|jänner|jaenner|februar|märz|maerz|marz|mai|juni|juli|oktober|dezember|mrz|okt|dez",  # German
        "janvier|février|fevrier|mars|avril|juin|juillet|août|aout|septembre|octobre|novembre|décembre|decembre",
        "janv|févr|fevr|avr|juil|déc",  # French
        "enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|noviembre|diciembre",
        "ene|abr|ago|dic",  # Spanish
        "januari|februari|maart|mei|augustus|mrt",  # Dutch
        "gennaio|febbraio|aprile|maggio|giugno|luglio|settembre|ottobre|dicembre|gen|giu|lug|set|ott",  # Italian
        "janeiro|fevereiro|março|marco|maio|junho|julho|setembro|outubro|dezembro|fev|out",  # Portuguese
    )
)
_YEAR = r"(?:19|20)\d\d"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
# A date the way people write it: ISO '2019-07-14'; a day first (Europe's '14.07.2019', '14-07-2019', '14_07_2019')
# or a month first (America's '07-14-2019'), one separator throughout; a month with its year ('07.2019'); a month's
# name with its year, after a day or before one ('July 2019', 'Mars_2020', '14 juillet 2019', '14-Jul-2019',
# '14. Juli 2019', '14 de julio de 2019', 'July 14, 2019').
# Only ISO and named months were dates once: '14.07.2019/' beside cat/ and dog/ was a class.
_DATED = "|".join(
    (
        rf"{_YEAR}(?:[-_. ]?\d\d){{1,2}}",
        rf"{_DAY}([-_.]){_DAY}\1{_YEAR}",
        rf"(?:0[1-9]|1[0-2])[-_.]{_YEAR}",
        rf"(?:{_DAY}\.?(?: de)?[-_ ])?(?:{_MONTH})\.?(?: de)?[-_ ]{_YEAR}",
        rf"(?:{_MONTH})\.? {_DAY},? {_YEAR}",
    )
)
_DATE_NAME = re.compile(
    rf"(?:(?:photos|fotos|foto's|foto) (?:from|von|de|del|uit) )?(?:{_YEAR}|(?:{_DATED})(?:[-_ ].*)?)",
    re.IGNORECASE,
)

# The number may stand in brackets: Windows names a batch it renames 'Cat (1).jpg', 'Cat (2).jpg' ..., and a browser
# a second download of cat.1.jpg 'cat.1 (1).jpg'. After it come words, each after a separator or a bracket
# ('cat.1 - Copy (2).jpg'): the two never overlap, so a name is read in one pass. Words that could hold '_' made
# 'cat.1_a_a_..._a!.jpg' try every split at its underscores, and one with 60 never finished.
_FLAT_NAME = re.compile(r"^(?P<label>[A-Za-z][A-Za-z ]*?)[._\- ]?\(?\d+(?:[._\- ()][^\W_]*)*\.[A-Za-z0-9]+$")


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
    # Images the layout gives no label: loose beside class folders, in folders beside a flat layout, or
    # loose with a name that is not 'cat.1.jpg'-like. Never used; ``data check`` lists them, ``train`` counts them.
    left_out: list[Path] = field(default_factory=list)
    # What was not read at all, with why: links (never followed) and folders that cannot be listed.
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # The lone folder around the dataset that was looked into (PetImages/, train/), or None.
    wrapper: Path | None = None

    @property
    def model_classes(self) -> list[str]:
        """The classes a model learns: every class but ``neither``."""
        return [name for name in self.classes if name != NEITHER]

    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in self.classes}
        for item in self.files:
            out[item.label] += 1
        return out


def composed(name: str) -> str:
    """``name`` in Unicode's composed form (NFC), the one spelling of every label :func:`normalize_label` gives.

    Names from a Mac often spell 'é' as 'e' and a combining accent (NFD), other systems as one letter. One folder
    copied from both was two classes that look alike ('chiens_élevé' twice), each with part of the photos; and a
    model trained before labels were composed may name its classes either way.
    """
    return unicodedata.normalize("NFC", name)


def normalize_label(name: str) -> str:
    """``'Cats'`` → ``'cat'``, ``'Golden Retrievers'`` → ``'golden_retriever'``, ``b'Chi\\xe9ns'`` → ``'chi\\xe9n'``.

    A label is text, not a path: a name's byte that is not UTF-8 is the text ``\\xe9`` in it (:func:`utf8_safe`),
    or training stopped on a UnicodeEncodeError at its end, when it hashed the labels.
    """
    label = re.sub(r"[\s\-]+", "_", composed(utf8_safe(name)).strip().lower())
    if label.endswith("ies") and len(label) > 4:
        label = label[:-3] + "y"
    elif label.endswith("s") and not label.endswith(("ss", "us", "is")) and len(label) > 3:
        label = label[:-1]
    return NEITHER if label in _NEITHER_NAMES else label


def label_in_name(name: str) -> str | None:
    """The label a flat layout reads from a file name (``cat.1.jpg`` → ``cat``), or None (``IMG_0001.jpg``)."""
    match = _FLAT_NAME.match(name)
    label = normalize_label(match["label"]) if match else None
    return None if label in _CAMERA_NAMES else label


def is_hidden(path: Path) -> bool:
    """A file or folder no command reads: dot-names and macOS's ``__MACOSX`` archives folders."""
    return _hidden_name(path.name)


def _hidden_name(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


LINK = "a symbolic link, which catdog does not follow: copy the file or folder, or make a hard link"
# A link to a folder it is in ('loop -> ..'): "copy the folder" there would copy a folder into itself.
LOOP = "a symbolic link to a folder that holds it (a loop), which catdog does not follow: remove the link"


def _why_link(link: str) -> str:
    """Why a link is not read, with what to do about it: LOOP for a link up its own tree, else LINK."""
    target, folder = Path(os.path.realpath(link)), Path(os.path.realpath(os.path.dirname(link)))
    return LOOP if target == folder or target in folder.parents else LINK


def _unreadable(err: OSError) -> tuple[Path, str]:
    return Path(err.filename), f"a folder that cannot be read ({err.strerror})"


# Each name below is looked at through os.scandir's DirEntry, which knows from the listing whether it is a link, a
# folder or a file: Path.is_symlink(), is_dir() and is_file() stat it again each time, three to five times a name.


def walk_files(
    folder: Path, onerror: Callable[[OSError], object], others: Callable[[os.DirEntry], object] | None = None
) -> Iterator[os.DirEntry]:
    """The files below ``folder`` and the links, folder by folder in sorted order; hidden names left out.

    Never descends into a linked folder (two links back up a tree make a walk that never ends) nor a hidden
    one; ``onerror`` hears of each folder that cannot be listed, and ``others`` of each entry that is neither a
    file, a folder nor a link (a named pipe, a socket, a device), which is not yielded. A link, to a file, a folder
    or nothing, is yielded as it is: each caller says what a link is to it (``discover`` names it and reads nothing
    through it, ``predict`` reads a linked photo). Folders are walked as ``os.walk`` walks them, depth first.
    """
    pending = [os.fspath(folder)]
    while pending:
        here = pending.pop()
        try:
            entries = _listing(here)
        except OSError as err:
            onerror(err)
            continue
        folders = [e for e in entries if _is_dir(e)]
        yield from (e for e in folders if e.is_symlink())
        yield from (e for e in entries if not _is_dir(e) and (e.is_symlink() or e.is_file()))
        for entry in entries if others else ():
            if not (_is_dir(entry) or entry.is_symlink() or entry.is_file()):
                others(entry)
        pending.extend(e.path for e in reversed(folders) if not e.is_symlink())


def _is_dir(entry: os.DirEntry) -> bool:
    """A folder or a link to one (as ``os.walk`` sorts names); False where that cannot be known."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _files_under(folder: Path, skipped: list[tuple[Path, str]]) -> list[Path]:
    """Every regular, non-hidden file below ``folder``, sorted, without following links out (each link and
    each folder that cannot be listed goes into ``skipped``, with why)."""
    found = []
    for entry in walk_files(folder, lambda err: skipped.append(_unreadable(err))):
        if entry.is_symlink():
            skipped.append((Path(entry.path), _why_link(entry.path)))
        else:
            found.append(Path(entry.path))
    return found


def _listing(folder: str | os.PathLike) -> list[os.DirEntry]:
    """What ``folder`` holds, sorted, hidden names left out."""
    with os.scandir(folder) as listing:
        return sorted((e for e in listing if not _hidden_name(e.name)), key=lambda e: e.name)


def _class_folders(entries: list[os.DirEntry], skipped: list[tuple[Path, str]]) -> list[Path]:
    """The folders among a listing's ``entries``. A linked folder may point anywhere on the machine: not
    followed, like links further down, and named in ``skipped``."""
    skipped.extend((Path(e.path), _why_link(e.path)) for e in entries if e.is_symlink() and _is_dir(e))
    return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]


def _entries(listing: list[os.DirEntry], skipped: list[tuple[Path, str]]) -> tuple[list[Path], list[Path]]:
    """The class folders and the loose image files of a folder's ``listing``; its links go into ``skipped``."""
    folders = _class_folders(listing, skipped)
    loose = [e for e in listing if Path(e.name).suffix.lower() in IMAGE_EXTENSIONS]
    skipped.extend(
        (Path(e.path), _why_link(e.path)) for e in loose if e.is_symlink() and not _is_dir(e)
    )  # _class_folders: others
    return folders, [Path(e.path) for e in loose if e.is_file(follow_symlinks=False)]


def _labelled_other_files(listing: list[os.DirEntry], labels: set[str]) -> list[LabelledFile]:
    """The files beside a flat layout's photos that are no image by their extension yet carry one of the photos'
    ``labels`` in their name ('cat.1.jpg.json', Google Photos' sidecar): data check names them, as it does a class
    folder's (beside a flat layout they went unsaid). Another label ('notes.2024.txt') makes no class of no photos."""
    return [
        LabelledFile(Path(entry.path), label)
        for entry in listing
        if entry.is_file(follow_symlinks=False)
        and Path(entry.name).suffix.lower() not in IMAGE_EXTENSIONS
        and (label := label_in_name(entry.name)) in labels
    ]


def _names_a_flat_layout(folder: Path, images: list[Path]) -> bool:
    """Whether the loose ``images`` of a lone ``folder`` are a flat layout wrapped in it, not a class folder.

    Yes when their names carry two labels, or one and the folder is named like a split or a container, not a
    class: Kaggle's train/ holding only cat.1.jpg ... was one class "train", and PetImages/ of them "petimage".
    Any other folder's name is its class, whatever one label its photos' names carry: dogs/ holding 'Rex 1.jpg'
    ... or cats/ of 'WhatsApp Image 2026-11-01 at 10.11.12.jpeg' ... are dogs and cats, not classes "rex" and
    "whatsapp_image". Photos whose names carry no label stay a class of any name: export's --check-data needs
    no labels.
    """
    labels = {label_in_name(path.name) for path in images} - {None}
    return len(labels) > 1 or (len(labels) == 1 and _is_wrapper_name(folder.name))


def _is_class_name(name: str) -> bool:
    """Whether a folder is named for one of catdog's own classes (Cats/, dog/, Other/ ...): that class, whatever
    it holds."""
    return normalize_label(name) in {"cat", "dog", NEITHER}


def _is_wrapper_name(name: str) -> bool:
    """Whether a folder's name says it holds a dataset, not a class: a split, a container, or both classes at
    once (dogs-vs-cats/, cats_and_dogs/, kagglecatsanddogs_5340/)."""
    label = _name_without_number(name)
    return label in _WRAPPER_NAMES or ("cat" in label and "dog" in label)


def _name_without_number(name: str) -> str:
    """A folder's normalised name without the number after it: train2/ and Kaggle's test1/ are splits."""
    return normalize_label(name.rstrip("0123456789_-. "))


def _splits_instead_of_classes(folders: list[Path]) -> str | None:
    """One sentence naming the split to train on, when ``folders`` side by side are a download's splits.

    Kaggle's Cat and Dog set unpacks to training_set/ and test_set/ (each holding cats/ and dogs/), an
    ImageFolder download to train/, val/ and test/: read as classes, a model learnt to answer "training_set" or
    "test_set". All named like splits and one at least labelled (Kaggle's test1/ holds unlabelled '1.jpg' ...),
    they are splits. catdog splits a dataset by content hash, never by folder: the person is told which to give.
    A neither/ beside them is no split either (with it, they were classes again): it is told where it belongs.
    """
    negatives = [folder for folder in folders if normalize_label(folder.name) == NEITHER]
    splits = [folder for folder in folders if folder not in negatives]
    if len(folders) < 2 or not splits or not all(_name_without_number(f.name) in _SPLIT_NAMES for f in splits):
        return None
    labelled = [folder for folder in splits if _holds_labels(folder)]
    if not labelled:
        return None
    to_train = [f for f in labelled if _name_without_number(f.name) in _TRAINING_SPLIT_NAMES]
    # A train/ with no photo in it (left empty, or of notes) has none to sort: it is told as no training split.
    training = [f for f in splits if _name_without_number(f.name) in _TRAINING_SPLIT_NAMES]
    unsorted = [f for f in training if f not in labelled and _holds_photos(f)]
    missing, train = "", "train"
    if not to_train and unsorted:
        # A train/ of camera names beside labelled valid/ and test/ was told "no training split": it is one, whose
        # photos are not sorted yet.
        missing = f", and the photos in {_quoted(unsorted, 'and')} carry no label"
        train, to_train = "sort them into class folders (cat/, dog/, neither/) and train", unsorted
    elif not to_train:
        # A download of valid/ and test/ alone (the train split left out) was told only to evaluate, with nowhere
        # to train: it is told that, and to train on its validation split (train sets its own validation apart).
        missing = ", and no training split"
        to_train = [f for f in labelled if _name_without_number(f.name) not in _TEST_SPLIT_NAMES]
    to_evaluate = [f for f in labelled if f not in to_train]
    uses = [
        f"{verb} on {_quoted(where, 'or')}" for verb, where in ((train, to_train), ("evaluate", to_evaluate)) if where
    ]
    if negatives:
        into = f"'{_classes_folder(to_train[0])}'" if to_train else "the folder you train on"
        uses.append(f"and move {_quoted(negatives, 'and')} into {into}")
    held = f"{'a split' if len(splits) == 1 else 'splits'} ({', '.join(f'{folder.name}/' for folder in splits)})"
    return f"'{folders[0].parent}' holds {held}, not classes{missing}: {', '.join(uses)}."


def _dated_instead_of_classes(folders: list[Path]) -> str | None:
    """One sentence saying so, when some of the class ``folders`` are named like years or dates (2019/, 2020/)."""
    dated = [folder for folder in folders if _DATE_NAME.fullmatch(composed(folder.name))]
    if not dated:
        return None
    # A Google Takeout export holds some 20 ('Photos from 2003/' ... 'Photos from 2024/').
    named = listed(first_few([f"{folder.name}/" for folder in dated], shown=3))
    inside = {folder: _class_names_inside(folder) for folder in dated}
    if any(inside.values()):
        # 2019/cat/, 2020/cat/ ... are sorted already: "sort their photos" asked for what was done. The folder named
        # is one with the most classes: the first by name, '15.07.2020/' of Dogs/ alone, had too few to train.
        classes = listed([f"{name}/" for name in sorted({name for names in inside.values() for name in names})])
        fullest = max(dated, key=lambda folder: len(inside[folder]))
        return (
            f"'{dated[0].parent}' holds folders named like dates ({named}), not classes, with class folders in them "
            f"({classes}): give one of them ('{fullest}'), or put each class's photos together in one folder."
        )
    return (
        f"'{dated[0].parent}' holds folders named like dates ({named}), not classes: sort their photos into folders "
        "named for what they show (cat/, dog/, and neither/ for the rest)."
    )


def _class_names_inside(folder: Path) -> list[str]:
    """The names of the folders in ``folder`` named for catdog's classes (cat/, Dogs/, other/ ...)."""
    try:
        folders = _class_folders(_listing(folder), [])
    except OSError:
        return []
    return [path.name for path in folders if _is_class_name(path.name)]


def _quoted(folders: list[Path], joined_by: str) -> str:
    """``'a/train' or 'a/train2'``."""
    return f" {joined_by} ".join(f"'{folder}'" for folder in folders)


def _classes_folder(split: Path) -> Path:
    """The folder under ``split`` that holds its classes (or flat photos): Kaggle's training_set/training_set/."""
    try:
        folders, images = _entries(_listing(split), [])
    except OSError:
        return split
    return _inside_wrappers(folders, images, [])[2] or split


def _holds_labels(folder: Path) -> bool:
    """Whether ``folder`` holds a folder (of a class, or a wrapper) or a photo whose name carries a label."""
    try:
        folders, images = _entries(_listing(folder), [])
    except OSError:
        return False
    return bool(folders) or any(label_in_name(path.name) for path in images)


def _holds_photos(folder: Path) -> bool:
    """Whether ``folder`` holds a photo loose (an empty train/, or one of notes, holds none to sort)."""
    try:
        return bool(_entries(_listing(folder), [])[1])
    except OSError:
        return False


def _unwrapped(folder: Path, *, outermost: bool) -> tuple[list[Path], list[Path], list[tuple[Path, str]]] | None:
    """The folders, loose images and links of a lone ``folder`` that wraps the dataset; None for a class folder,
    or one that cannot be listed (the walk of it as a class folder says why).

    The outermost lone folder of folders is a wrapper (PetImages/Cat ...), unless it is named for a class.
    Inside it, one is only when named like one: kagglecatsanddogs_5340/PetImages/Cat/ and
    training_set/training_set/cats/ were each one class of cats and dogs, but x/cats/2019/ is the class cat, and
    so is x/cats/ of 'Tom (1).jpg', 'Kitty (1).jpg'. A lone cats/ at the top was classes "2019" or "tom" and
    "kitty" instead.
    """
    if _is_class_name(folder.name) or (not outermost and not _is_wrapper_name(folder.name)):
        return None  # not listed here: the walk of a class folder of 12,500 photos lists it once
    try:
        inside = _listing(folder)
    except PermissionError:
        return None
    links: list[tuple[Path, str]] = []
    wrapped, images = _entries(inside, links)
    return (wrapped, images, links) if wrapped or _names_a_flat_layout(folder, images) else None


def _inside_wrappers(
    folders: list[Path], images: list[Path], skipped: list[tuple[Path, str]]
) -> tuple[list[Path], list[Path], Path | None]:
    """The class folders and loose images of a listing's ``folders`` and ``images`` once every lone wrapper
    around them is looked into, and the innermost wrapper (None for none); links inside go into ``skipped``.

    PetImages, or any single wrapper folder around the dataset: class folders, or a flat layout (Kaggle's
    archive unpacks to train/cat.1.jpg ...), or another wrapper. What lies loose inside a wrapper is looked at
    as it would be at the top: the photos of train/ once became one class "train", and a loose IMG_1.jpg beside
    the wrapped class folders was neither used nor listed as left out.

    A lone training split beside a neither folder (train/ and neither/) is looked into too: the split holds the
    dataset, and the neither folder its negatives. The neither folder is carried along while the wrappers inside
    the split are looked into: train/PetImages/Cat ... beside it was one class "petimage".
    """
    wrapper, negatives = None, []
    while not images:
        if len(folders) == 1 and (unwrapped := _unwrapped(folders[0], outermost=wrapper is None)):
            wrapper = folders[0]
        elif (split := _training_split_beside_negatives(folders)) and (unwrapped := _unwrapped(split, outermost=False)):
            wrapper, negatives = split, [*negatives, *(folder for folder in folders if folder != split)]
        else:
            break
        folders, images, links_inside = unwrapped
        skipped.extend(links_inside)
    return folders + negatives, images, wrapper


def _training_split_beside_negatives(folders: list[Path]) -> Path | None:
    """The training split of ``folders`` that are one training split and one neither folder, else None.

    Kaggle's train/ of cat.1.jpg ... with the person's own neither/ beside it was refused as a split to train on;
    it says nothing but "train on train/, and here are the negatives". A split beside test/ stays refused.
    """
    if len(folders) != 2 or sum(normalize_label(folder.name) == NEITHER for folder in folders) != 1:
        return None
    splits = [folder for folder in folders if _name_without_number(folder.name) in _TRAINING_SPLIT_NAMES]
    return splits[0] if len(splits) == 1 else None


def discover(root: str | os.PathLike, *, image_files_only: bool = False, labels_optional: bool = False) -> Dataset:
    """Find labelled files under ``root`` in any supported layout.

    ``image_files_only`` keeps only files with an image extension inside class folders
    (training wants that); ``data check`` keeps every file so it can report strays.
    Raises :class:`DatasetError` for a missing, empty or unlabelled folder, for a download's splits side by
    side (training_set/ and test_set/ are no classes), and for folders named like dates (2019/, 2020/), unless
    ``labels_optional``: export's check photos need no labels, and a phone's photos sorted by year will do.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"Dataset folder '{root}' does not exist.")
    if not root.is_dir():
        raise DatasetError(f"'{root}' is a file; give the folder that holds the images.")

    skipped: list[tuple[Path, str]] = []
    # Each folder is listed once: a flat folder of 25,000 photos costs a stat or two per name.
    try:
        listing = _listing(root)
    except PermissionError as err:
        raise DatasetError(f"Dataset folder '{root}' cannot be read ({err.strerror}).") from None
    folders, flat_images, wrapper = _inside_wrappers(*_entries(listing, skipped), skipped)
    layout = "petimages" if wrapper and wrapper.name.lower() == "petimages" else "folders"

    in_folders = [
        LabelledFile(path, normalize_label(folder.name))
        for folder in folders
        for path in _files_under(folder, skipped)
        if not image_files_only or path.suffix.lower() in IMAGE_EXTENSIONS
    ]
    # A `neither/` folder beside flat files is welcome too: negatives for a Kaggle-style folder.
    negatives = [item for item in in_folders if item.label == NEITHER]
    folder_images = [
        item.path for item in in_folders if item.label != NEITHER and item.path.suffix.lower() in IMAGE_EXTENSIONS
    ]
    named = {path: label_in_name(path.name) for path in flat_images}
    flat = [LabelledFile(path, label) for path, label in named.items() if label]
    # Both kinds side by side: the one that holds more images is the dataset; the other's images are listed
    # as left out, never dropped without a word.
    if flat_images and len(flat) >= len(folder_images):
        if not flat:
            raise DatasetError(
                f"The images in '{root}' carry no label: name them like 'cat.1.jpg' or use one folder per class."
            )
        layout, files = "flat", flat + negatives
        if not image_files_only:  # data check: the root's listing again, a wrapper's (train/) listed once more
            beside = listing if wrapper is None else _listing(flat_images[0].parent)
            files += _labelled_other_files(beside, {item.label for item in flat})
        left_out = [path for path, label in named.items() if not label] + folder_images
    elif misread := _splits_instead_of_classes(folders) or (not labels_optional and _dated_instead_of_classes(folders)):
        # Asked only when the folders are the dataset: a stray cat.1.jpg beside training_set/ and test_set/
        # made them classes again, while a flat dataset's own train/ or test1/ is left out as any folder is.
        raise DatasetError(misread)
    else:
        files, left_out = in_folders, flat_images

    if not files:
        links = [p for p, why in skipped if why in (LINK, LOOP)]
        locked = [p for p, why in skipped if why not in (LINK, LOOP)]
        hint = ""
        if links:
            hint += f" ({counted(len(links), 'symbolic link')} not followed: copy the files, or make hard links)"
        if locked:
            hint += f" ({counted(len(locked), 'folder')} that cannot be read, e.g. '{locked[0]}')"
        raise DatasetError(
            f"No images found in '{root}'{hint}: expected 'cat.1.jpg'-style files or one folder per class (cat/, dog/)."
        )
    classes = sorted({item.label for item in files})
    return Dataset(root, layout, files, classes, left_out=left_out, skipped=skipped, wrapper=wrapper)
