"""Predictor: the built-in model, a model directory or an ONNX file → Predictions.

This module holds the one place that turns model outputs into a :class:`Prediction`
(:meth:`Predictor.to_predictions`); the CLI, evaluation and the web service all call it.
Inputs go through the one preprocessing path (:mod:`catdog.preprocess`).
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from catdog.data.layout import composed
from catdog.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageError, with_name
from catdog.inference.cores import local_share_of_cores
from catdog.inference.outputs import LOOKS_LIKE_FLOOR, ModelFn, Outputs
from catdog.preprocess import Preprocess, normalize, stack_uint8, to_uint8

if TYPE_CHECKING:
    import torch


PET_CLASSES = frozenset({"cat", "dog"})
NEITHER = "neither"
DEFAULT_NEITHER_THRESHOLD = 0.5  # open-set gates put their operating point here (catdog.models.gate)
STDIN = "-"  # as an input: the photo piped in on standard input (a file named '-' is ./-)


@cache
def imagenet_classes() -> list[tuple[str, str]]:
    """The 1,000 ImageNet classes as ``(name, what it is)``: WordNet's first lemma and its definition, shortened.

    For a `neither` answer's ``looks_like`` and ``looks_like_means`` ("sorrel", "a horse of a brownish ...").
    """
    from catdog.models.files import WEIGHTS_DIR

    lines = (WEIGHTS_DIR / "imagenet_classes.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t", 1)) for line in lines]


@dataclass
class Prediction:
    """One answer of the Prediction contract (DESIGN.md)."""

    source: str
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    error: str | None = None
    source_key: str = "path"  # "path" for files, "filename" for uploads
    looks_like: str | None = None  # for a `neither` answer: the ImageNet class the backbone sees ...
    looks_like_means: str | None = None  # ... and what that is, in words

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        out: dict = {self.source_key: self.source}
        if self.error is not None:
            out["error"] = self.error
        else:
            out.update(label=self.label, confidence=self.confidence, probabilities=self.probabilities)
            if self.looks_like is not None:
                out.update(looks_like=self.looks_like, looks_like_means=self.looks_like_means)
        return out


@dataclass
class Predictor:
    """Classifies images with one model; thread-safe for concurrent calls of :meth:`predict_batch`."""

    model_fn: ModelFn
    classes: list[str]
    pre: Preprocess
    temperature: float = 1.0
    gate_threshold: float | None = None  # P(cat or dog) below this → "neither" (None: no gate)
    threshold: float | None = None  # confidence below this → "unsure"
    tta: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    name: str = "model"
    info: dict = field(default_factory=dict)
    lanes: int = 1  # batches in flight at once in predict_paths (see Predictor.load's `throughput`)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model: str | os.PathLike | None = None,
        *,
        threshold: float | None = None,
        neither_threshold: float | None = None,
        tta: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        backend: str | None = None,
        throughput: bool = False,
        loaded: tuple[torch.nn.Module, dict] | None = None,
    ) -> Predictor:
        """The built-in model (``model=None``), a model directory or an ``.onnx`` file.

        ``neither_threshold``: answer `neither` when ``P(cat or dog)`` is below it (default: the
        model's own operating point, recorded in its config: 0.5 for catdog's open-set gate).

        ``backend`` (default ``$CATDOG_BACKEND`` or ``auto``): ``onnx`` runs ONNX Runtime (the
        built-in model or a model directory is exported once to the user cache), ``torch`` runs
        PyTorch, ``auto`` prefers ONNX Runtime and falls back to PyTorch if the export fails.

        ``throughput``: tuned for folders of files rather than one request at a time. With ONNX
        Runtime, each call runs on one core and :meth:`predict_paths` keeps one batch per core
        in flight, each decoding its files and then running the model: no core waits for another,
        and no decoding thread competes with the model's threads (measured in benchmarks/bench_predict.py).
        The default gives every core to one batch: the lowest latency, for serving.

        ``loaded``: a model directory's ``(module, config)`` as :func:`catdog.models.load_model_dir` returned
        them, for a caller that holds them already (``catdog soup``): exported or run without reading them again.
        """
        from catdog.inference.model_cache import load_model_fn

        backend = backend or os.environ.get("CATDOG_BACKEND") or "auto"
        cores = local_share_of_cores()
        model_fn, config, name, used = load_model_fn(model, backend, threads=1 if throughput else None, loaded=loaded)
        config = {**config, "backend": used}
        gate = config.get("gate") or {}
        return cls(
            model_fn=model_fn,
            classes=[composed(name) for name in config["classes"]],  # spelt as the labels of a data folder
            pre=Preprocess.from_dict(config["preprocess"]),
            temperature=float(config.get("temperature", 1.0)),
            gate_threshold=_gate_threshold(gate, neither_threshold, config["classes"]),
            threshold=threshold,
            tta=tta,
            max_pixels=max_pixels,
            name=name,
            info=config,
            lanes=cores if throughput and used == "onnx" else 1,  # torch runs its own threads: one batch at a time
        )

    # -- the one tensor → Prediction path -----------------------------------------------------

    @property
    def gated(self) -> bool:
        """Whether the model answers `neither` (a cat/dog model with a gate)."""
        return self.gate_threshold is not None and set(self.classes) <= PET_CLASSES

    @property
    def answers(self) -> list[str]:
        """The keys of a Prediction's probabilities: the classes, and `neither` for a gated model."""
        return [*self.classes, NEITHER] if self.gated else list(self.classes)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities: softmax of logits divided by the fitted temperature."""
        scaled = logits.astype(np.float64) / self.temperature
        scaled -= scaled.max(axis=1, keepdims=True)
        exp = np.exp(scaled)
        return exp / exp.sum(axis=1, keepdims=True)

    def to_predictions(self, outputs: Outputs, sources: list[str], source_key: str = "path") -> list[Prediction]:
        """The one place model outputs become Predictions.

        For a gated cat/dog model the probabilities are ``P(cat or dog) x P(class | a pet)`` for each
        class and ``1 - P(cat or dog)`` for `neither`: they sum to 1, and the label's is its confidence.
        """
        probs = self.probabilities(outputs.logits)
        pets = outputs.pet_score
        gated = pets is not None and self.gated
        names = imagenet_classes() if gated and outputs.looks_like is not None else None
        out = []
        for i, source in enumerate(sources):
            probabilities = {c: float(p) for c, p in zip(self.classes, probs[i])}
            looks_like = means = None
            if gated:
                pet = float(np.clip(pets[i], 0.0, 1.0))
                probabilities = {c: p * pet for c, p in probabilities.items()} | {NEITHER: 1.0 - pet}
            label = max(self.classes, key=probabilities.__getitem__)
            # A threshold of 1 means "never sure it is a pet": P(cat or dog) saturates at exactly 1 in float32.
            if gated and (pets[i] < self.gate_threshold or self.gate_threshold >= 1.0):
                label = NEITHER
                if names is not None and _worth_naming(outputs.looks_like_score, i):
                    looks_like, means = names[int(outputs.looks_like[i])]
            confidence = probabilities[label]
            if label != NEITHER and self.threshold is not None and confidence < self.threshold:
                label = "unsure"
            out.append(
                Prediction(
                    source=source,
                    label=label,
                    confidence=round(confidence, 6),
                    probabilities={c: round(p, 6) for c, p in probabilities.items()},
                    source_key=source_key,
                    looks_like=looks_like,
                    looks_like_means=means,
                )
            )
        return out

    # -- running the model -------------------------------------------------------------------

    def forward_uint8(self, squares: np.ndarray | torch.Tensor) -> Outputs:
        """Model outputs for a ``(N, 3, S, S)`` uint8 batch of preprocessed squares (numpy or a CPU tensor)."""
        batch = normalize(squares, self.pre)
        batch = batch if isinstance(batch, np.ndarray) else batch.numpy()
        outputs = self.model_fn(batch)
        if not self.tta:
            return outputs
        flipped = self.model_fn(np.ascontiguousarray(batch[..., ::-1]))
        # Average probabilities, not logits, then return log-probabilities as logits.
        avg = (self.probabilities(outputs.logits) + self.probabilities(flipped.logits)) / 2
        logits = np.log(np.clip(avg, 1e-12, None)) * self.temperature
        pet = None if outputs.pet_score is None else (outputs.pet_score + flipped.pet_score) / 2
        return Outputs(logits, pet, outputs.looks_like, outputs.looks_like_score)

    def _square(self, source: bytes | str | os.PathLike) -> np.ndarray:
        return to_uint8(source, self.pre, max_pixels=self.max_pixels)

    def _load(self, source: bytes | str | os.PathLike) -> tuple[np.ndarray | None, str | None]:
        """The preprocessed square, or the one-sentence reason it cannot be had."""
        try:
            return self._square(source), None
        except ImageError as err:
            return None, str(err)

    def _predict_loaded(
        self, names: list[str], loaded: list[tuple[np.ndarray | None, str | None]], source_key: str
    ) -> list[Prediction]:
        good = [i for i, (square, _) in enumerate(loaded) if square is not None]
        results: list[Prediction | None] = [None] * len(names)
        if good:
            outputs = self.forward_uint8(stack_uint8([loaded[i][0] for i in good]))
            for i, prediction in zip(good, self.to_predictions(outputs, [names[i] for i in good], source_key)):
                results[i] = prediction
        for i, (square, error) in enumerate(loaded):
            if square is None:
                results[i] = Prediction(source=names[i], error=with_name(error, names[i]), source_key=source_key)
        return results  # type: ignore[return-value]

    def predict_batch(
        self,
        items: list[tuple[str, bytes | str | os.PathLike]],
        source_key: str = "path",
        pool: ThreadPoolExecutor | None = None,
    ) -> list[Prediction]:
        """Predict ``(name, bytes or path)`` items; an unusable item gets an error, the rest go on."""
        sources = [source for _, source in items]
        loaded = list(pool.map(self._load, sources)) if pool else [self._load(s) for s in sources]
        return self._predict_loaded([name for name, _ in items], loaded, source_key)

    def _predict_files(self, paths: list[str]) -> list[Prediction]:
        return self._predict_loaded(paths, [self._load(p) for p in paths], "path")

    def predict_paths(
        self, paths: Iterable[str], *, batch_size: int = 32, workers: int | None = None
    ) -> Iterator[Prediction]:
        """Predict files in order, decoding the next batch while the model runs on this one.

        With ``lanes`` > 1, that many batches are in flight at once, each decoded and run by one thread.
        """
        paths = list(paths)
        chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        if self.lanes > 1:
            with ThreadPoolExecutor(max_workers=self.lanes) as pool:
                for predictions in pool.map(self._predict_files, chunks):
                    yield from predictions
            return
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            pending = [pool.submit(self._load, p) for p in chunks[0]] if chunks else []
            for k, chunk in enumerate(chunks):
                loaded = [future.result() for future in pending]
                # Queue the next batch's decoding before this batch's forward pass starts.
                pending = [pool.submit(self._load, p) for p in chunks[k + 1]] if k + 1 < len(chunks) else []
                yield from self._predict_loaded(chunk, loaded, "path")


def _glob(pattern: str) -> list[str]:
    """The paths a glob names. With ``**``, pathlib's walk, which does not descend into linked folders:
    glob.glob follows them, and two links back up a tree made ``photos/**/*.jpg`` run for ever."""
    if not _recursive(pattern):
        return glob.glob(pattern)
    base, rest = _split_at_magic(pattern)
    if rest.name == "**":  # glob.glob's 'photos/**' is everything below; pathlib's, the folders alone
        rest /= "*"
    return [str(found) for found in _visible_glob(base, rest)]


def _visible_glob(base: Path, rest: Path) -> list[Path]:
    """What pathlib's ``base.glob(rest)`` finds, hidden names left out unless ``rest`` asks for them by name."""
    from catdog.data.layout import is_hidden

    dotted = any(part.startswith(".") for part in rest.parts)
    found = base.glob(str(rest))
    return [path for path in found if dotted or not any(is_hidden(Path(p)) for p in path.relative_to(base).parts)]


def _recursive(pattern: str) -> bool:
    """Whether a pattern reaches into folders: a '**' of its own, as pathlib takes it. 'photos/s**/*.jpg' is
    'photos/s*/*.jpg', as glob.glob reads it: pathlib raised ValueError for it, a traceback on a typo."""
    return "**" in Path(pattern).parts


def _split_at_magic(pattern: str) -> tuple[Path, Path]:
    """A pattern as the folder before its first wildcard and the rest: 'photos/2024*/**/*.jpg' is 'photos' and
    '2024*/**/*.jpg'."""
    path = Path(pattern)
    parts = path.parts[1:] if path.anchor else path.parts
    wild = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return Path(path.anchor, *parts[:wild]), Path(*parts[wild:])


def _linked_folders_passed(pattern: str) -> list[str]:
    """The linked folders in the folders a '**' pattern walks through, which its walk (see _glob) does not enter:
    'photos/**/*.jpg' passed over 'photos/more', a link to a folder of photos, without a word."""
    from catdog.data.layout import is_hidden

    base, rest = _split_at_magic(pattern)
    walked = Path(*rest.parts[: rest.parts.index("**") + 1])  # pathlib's 'x/**' is the folders it walks through
    linked = []
    for folder in _visible_glob(base, walked):
        with contextlib.suppress(OSError):  # a folder that cannot be listed has nothing to name
            linked += [Path(e.path) for e in os.scandir(folder) if e.is_symlink() and os.path.isdir(e.path)]
    return sorted(str(path) for path in linked if not is_hidden(path))


def no_gate(classes: Iterable[str]) -> str:
    """Why --neither-threshold is refused for a model with no gate, in one sentence.

    Only cat/dog models have a gate; a horse/cow model was once told it was "a from-scratch net trained
    without a neither/ folder", which it was not.
    """
    classes = list(classes)
    if set(classes) <= PET_CLASSES:
        why = "a from-scratch net trained without a neither/ folder answers its classes only"
    else:
        why = f"a model of {', '.join(classes)} answers its classes only: catdog's gate is for cat/dog models"
    return f"This model has no `neither` gate ({why}): --neither-threshold does not apply to it."


def _gate_threshold(gate: dict, override: float | None, classes: Iterable[str] = PET_CLASSES) -> float | None:
    """``P(cat or dog)`` below which a gated model answers `neither`; None for a model without a gate."""
    if not gate:
        if override is not None:  # said, not ignored: the user expects `neither` answers it cannot give
            from catdog.errors import CatdogError

            raise CatdogError(no_gate(classes))
        return None
    if override is not None:
        if not 0.0 <= override <= 1.0:
            from catdog.errors import CatdogError

            raise CatdogError(f"--neither-threshold {override} must be between 0 and 1.")
        return float(override)
    return float(gate.get("threshold", DEFAULT_NEITHER_THRESHOLD))


@dataclass
class LeftOut:
    """What the folders and patterns given hold that predict does not read, by why: a line of its note each."""

    not_named_like_photos: list[str] = field(default_factory=list)  # no image extension (links to nothing too)
    linked_folders: list[str] = field(default_factory=list)  # not entered: a link back up the tree never ends
    matched_folders: list[str] = field(default_factory=list)  # a pattern's (not '**'): 'photos/*' names files
    not_files: list[str] = field(default_factory=list)  # named pipes, sockets, devices, and links to them

    def __bool__(self) -> bool:
        return bool(self.not_named_like_photos or self.linked_folders or self.matched_folders or self.not_files)


def expand_inputs(patterns: list[str], left_out: LeftOut | None = None) -> list[str | Prediction]:
    """Files, folders (recursive, image extensions) and globs → file paths, in the order given.

    A pattern that matches nothing stays in its place as an error Prediction, so that output
    order always follows the input order; a file named twice is predicted once. ``-`` (:data:`STDIN`) stays
    in its place as itself: the caller reads standard input. ``left_out`` hears of each entry a folder holds that
    is not read (a file without an image extension, a linked folder, a named pipe, a socket or a device), and of
    what a pattern matches that is no file (a folder, but for a '**' pattern's; a pipe, a socket or a device).
    """
    out: list[str | Prediction] = []
    seen: set[str] = set()
    for pattern in patterns:
        if pattern == STDIN:
            out.append(STDIN)
            continue
        if os.path.isdir(pattern):
            from catdog.data.layout import walk_files

            # The walk of `catdog data check`: hidden files and folders skipped, linked folders not entered;
            # a linked photo is read (isfile follows it), unlike in a dataset.
            unreadable: list[OSError] = []
            not_files: list[os.DirEntry] = []  # named pipes, sockets, devices: a walk reads none
            walked = list(walk_files(Path(pattern), unreadable.append, not_files.append))
            files = [entry for entry in walked if _is_file(entry)]
            links_to_nothing = [entry for entry in walked if entry.is_symlink() and not os.path.exists(entry.path)]
            # A link to nothing named like a photo was passed over without a word: one line each, as when named.
            broken = sorted(str(Path(e.path)) for e in links_to_nothing if _image_name(e.name))
            found = sorted(str(Path(entry.path)) for entry in files if _image_name(entry.name))
            if left_out is not None:  # each of the rest is named in a note, never passed over without a word
                _note_not_read(walked, files, links_to_nothing, not_files, left_out)
            for err in unreadable:  # a folder it could not list: say so, in its place
                out.append(
                    Prediction(source=err.filename, error=f"Folder '{err.filename}' cannot be read ({err.strerror}).")
                )
            out.extend(Prediction(source=link, error=_leads_nowhere(link)) for link in broken)
            missing = "" if (unreadable or broken) and not found else f"Folder '{pattern}' holds no image files."
        elif os.path.exists(pattern):
            found, missing = [pattern], ""
        elif glob.has_magic(pattern):
            matched = _glob(pattern)
            found = sorted(p for p in matched if os.path.isfile(p))
            if left_out is not None:
                _note_matched_not_files(pattern, [p for p in matched if not os.path.isfile(p)], left_out)
            # A link to nothing it matched was passed over without a word: its line, as in a folder or when named.
            broken = sorted(p for p in matched if os.path.islink(p) and not os.path.exists(p))
            out.extend(Prediction(source=link, error=_leads_nowhere(link)) for link in broken)
            missing = "" if broken and not found else f"No file matches '{pattern}'."
        elif os.path.islink(pattern):
            found, missing = [], _leads_nowhere(pattern)
        elif pattern.endswith("/") and os.path.isfile(pattern.rstrip("/")):  # 'cat.jpg/' was "does not exist"
            file = pattern.rstrip("/")
            found, missing = (
                [],
                f"'{pattern}' ends in '/', as a folder does, but '{file}' is a file: name it without the '/'.",
            )
        else:
            found, missing = [], f"'{pattern}' does not exist."
        if not found and missing:
            out.append(Prediction(source=pattern, error=missing))
        for path in found:
            same_file = os.path.realpath(path)  # ./a.jpg, a.jpg, /abs/a.jpg and a link to it are one file
            if same_file not in seen:
                seen.add(same_file)
                # A file named '-' that a glob found is ./-: the caller reads standard input for '-' alone.
                out.append(os.path.join(os.curdir, path) if path == STDIN else path)
    return out


def _note_not_read(
    walked: list[os.DirEntry],
    files: list[os.DirEntry],
    links_to_nothing: list[os.DirEntry],
    not_files: list[os.DirEntry],
    left_out: LeftOut,
) -> None:
    """Put each entry of a folder's walk that is not read in ``left_out``, by why."""
    named = [entry for entry in [*files, *links_to_nothing] if not _image_name(entry.name)]
    left_out.not_named_like_photos.extend(_sorted_paths(named))
    # The other links lead somewhere that is no file: a folder (not entered), or a pipe, a socket or a device.
    files_or_nothing = {entry.path for entry in [*files, *links_to_nothing]}
    linked = [entry for entry in walked if entry.is_symlink() and entry.path not in files_or_nothing]
    folders = [entry for entry in linked if os.path.isdir(entry.path)]
    left_out.linked_folders.extend(_sorted_paths(folders))
    left_out.not_files.extend(_sorted_paths([*not_files, *(entry for entry in linked if entry not in folders)]))


def _note_matched_not_files(pattern: str, matched: list[str], left_out: LeftOut) -> None:
    """Put what a pattern matched that is no file in ``left_out``: a folder (but for a '**' pattern's, which the
    pattern itself reaches into), a named pipe, a socket or a device. A link to nothing gets an error line instead."""
    folders = [path for path in matched if os.path.isdir(path)]
    if not _recursive(pattern):  # a linked one is not entered by a '**' pattern either: its note says to name it
        left_out.matched_folders.extend(sorted(path for path in folders if not os.path.islink(path)))
        left_out.linked_folders.extend(sorted(path for path in folders if os.path.islink(path)))
    else:  # it reaches into the folders it matches, but not into a linked one
        left_out.linked_folders.extend(_linked_folders_passed(pattern))
    left_out.not_files.extend(sorted(p for p in matched if p not in folders and os.path.exists(p)))


def _sorted_paths(entries: Iterable[os.DirEntry]) -> list[str]:
    return sorted(str(Path(entry.path)) for entry in entries)


def _is_file(entry: os.DirEntry) -> bool:
    """Whether a walked entry is a file, a linked one followed: os.path.isfile for a link, not DirEntry.is_file,
    whose ELOOP of a link to itself stopped the whole batch ("Too many levels of symbolic links"); the entry's own
    type for the others, with no system call per photo of a large folder."""
    return os.path.isfile(entry.path) if entry.is_symlink() else entry.is_file(follow_symlinks=False)


def _leads_nowhere(link: str) -> str:
    return f"'{link}' is a link that leads to no file (its target is missing, or a loop)."


def _image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _worth_naming(looks_like_score: np.ndarray | None, i: int) -> bool:
    """Whether the backbone sees photo ``i``'s top non-pet class clearly enough to name it (an ONNX file
    exported before ``looks_like_score`` has no score: its class is named, as it was)."""
    return looks_like_score is None or float(looks_like_score[i]) >= LOOKS_LIKE_FLOOR
