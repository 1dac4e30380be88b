"""``catdog data audit``: the photos most likely carrying a wrong label.

Each photo is judged by a model that never saw its label: penultimate features of a frozen
backbone (the built-in ImageNet EfficientNet-Lite0 by default, computed once through ONNX
Runtime) and k-fold logistic regression, so every photo gets an out-of-fold probability for
its own label. Photos whose out-of-fold prediction confidently disagrees with their label are
ranked, most confident first. (With a trained model directory its backbone has seen the
labels during training, so the built-in backbone is the more honest judge.)

Photos in a `neither` folder (``neither/``, ``other/`` ...) are no class to learn: one of them is
mislabelled when it shows a cat or a dog after all. The model's `neither` gate judges them, by its
``P(cat or dog)`` from the same forward pass; the suggested label is the pet class a classifier
fitted on all the pet photos picks. The other way round, a photo in a cat or dog folder that the gate
would answer `neither` (a horse among the dogs) is a suspect, suggested `neither`: no cat-or-dog fit can
say that. A model without a gate (or a dataset whose classes are not cats and dogs) judges neither way,
and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catdog.data.hashing import HashIndex
from catdog.data.layout import NEITHER, DatasetError, discover
from catdog.fsutil import (
    atomic_write_text,
    counted,
    default_cache_dir,
    html_text,
    json_text,
    listed,
    percent,
    utf8_safe,
)
from catdog.images import ImageError
from catdog.models.files import is_onnx_model
from catdog.preprocess import Preprocess, normalize, stack_uint8, to_uint8


@dataclass
class Suspect:
    path: str
    label: str
    suggested: str
    # Out-of-fold probability of ``suggested``; for a photo of neither/, P(cat or dog); suggested `neither`, 1 - that.
    confidence: float

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "suggested": self.suggested, "confidence": self.confidence}


@dataclass
class AuditResult:
    n: int  # readable photos, `neither` ones included
    classes: list[str]  # the classes a model learns (never `neither`)
    folds: int
    suspects: list[Suspect]
    out_of_fold_accuracy: float  # on the photos of ``classes``
    unreadable: list[dict] = field(default_factory=list)
    neither: int = 0  # readable photos of a `neither` folder
    neither_judged: bool = False  # whether the model's gate judged them
    # Why no gate judged the photos, in words ("the model has no gate"); empty when the model's cat/dog gate did.
    ungated: str = ""
    data: str = ""  # the folder audited, absolute
    model: str = "builtin"  # the model whose features judged it

    def to_dict(self) -> dict:
        return {
            "data": self.data,
            "model": self.model,
            "n": self.n,
            "classes": self.classes,
            "gated": not self.ungated,
            "neither": self.neither,
            "neither_judged": self.neither_judged,
            "folds": self.folds,
            "out_of_fold_accuracy": self.out_of_fold_accuracy,
            "n_suspects": len(self.suspects),  # every one, also when --top lists fewer
            "suspects": [s.to_dict() for s in self.suspects],
            "unreadable": self.unreadable,
        }


# A batch → (penultimate features, P(cat or dog) from the model's gate or None without one).
Extractor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def feature_extractor(model: str | os.PathLike | None) -> tuple[Extractor, Preprocess, float | None]:
    """Penultimate features (and gate scores) of the built-in model, a model directory or an .onnx file, its
    preprocessing, and the P(cat or dog) below which its gate answers `neither` (None without a gate).

    ONNX Runtime when possible, PyTorch otherwise.
    """
    from catdog.inference.model_cache import cached_export, torch_source
    from catdog.inference.onnx_export import ExportModule
    from catdog.inference.onnx_session import features_fn, read_config, session
    from catdog.inference.predictor import _gate_threshold

    def described(fn: Extractor, config: dict) -> tuple[Extractor, Preprocess, float | None]:
        return fn, Preprocess.from_dict(config["preprocess"]), _gate_threshold(config.get("gate") or {}, None)

    if is_onnx_model(model):
        sess = session(model)
        fn = features_fn(sess)
        if fn is None:
            raise DatasetError(f"'{model}' has no 'features' output; audit with its model directory instead.")
        return described(fn, read_config(sess, model))
    name, key_files, load = torch_source(model)
    try:
        export = cached_export(name, key_files, load)
        sess = session(export)
        fn = features_fn(sess)
        if fn is not None:
            return described(fn, read_config(sess, export))
    except (OSError, RuntimeError, ValueError, ImportError):
        pass  # fall back to PyTorch below
    import torch

    module, config = load()
    wrapper = ExportModule(module).eval()

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            out = wrapper(torch.from_numpy(batch))
        pet = out[1].float().numpy() if wrapper.gated and out[1] is not None else None
        return out[-1].float().numpy(), pet

    return described(run, config)


def compute_features(
    paths: list[Path], extract: Extractor, pre: Preprocess, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray | None, list[int], list[dict]]:
    """Features and gate scores (None without a gate) of every readable photo, their indices, the unreadable ones."""

    def load(path: Path):
        try:
            return to_uint8(path, pre), None
        except ImageError as err:
            return None, str(err)  # it names the file

    features, pets, kept, unreadable = [], [], [], []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = list(pool.map(load, paths[start : start + batch_size]))
            good = [i for i, (square, _) in enumerate(chunk) if square is not None]
            for i, (square, error) in enumerate(chunk):
                if square is None:
                    unreadable.append({"path": str(paths[start + i]), "error": error})
            if good:
                batch = normalize(stack_uint8([chunk[i][0] for i in good]), pre)
                found, pet = extract(batch)
                features.append(found)
                pets.append(pet)
                kept += [start + i for i in good]
    dim = features[0].shape[1] if features else 0
    gated = bool(pets) and all(pet is not None for pet in pets)
    pet_scores = np.concatenate(pets).astype(np.float64) if gated else None
    return (np.concatenate(features) if features else np.zeros((0, dim), np.float32)), pet_scores, kept, unreadable


def _classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0, groups: list[str] | None = None
) -> np.ndarray:
    """k-fold logistic regression: each photo's class probabilities from a model that never saw it.

    ``groups`` (content hashes) keeps copies of one file in one fold: a copy fitted on judged its twin, so a dog
    photo also filed under cats/ got its dog copy called a cat, learnt from itself."""
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    if groups is None:
        groups = [str(i) for i in range(len(labels))]
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(_classifier(), features, labels, groups=groups, cv=cv, method="predict_proba")


def audit(
    data_dir: str | os.PathLike,
    model: str | os.PathLike | None = None,
    *,
    folds: int = 5,
    min_confidence: float = 0.5,
    batch_size: int = 32,
) -> AuditResult:
    """Rank the photos of ``data_dir`` most likely mislabelled, most confident first.

    A photo of a class is a suspect when its out-of-fold prediction disagrees with its label with at least
    ``min_confidence``, or (suggested `neither`) when the model's gate would answer it `neither`, with
    ``1 - P(cat or dog)`` of at least ``min_confidence``; a `neither` photo, when the gate would answer it a
    pet, with ``P(cat or dog)`` of at least ``min_confidence``. Only a cat/dog gate judges either way.
    """
    dataset = discover(data_dir, image_files_only=True)
    names = dataset.model_classes
    if len(names) < 2:
        found = f"one class only ({names[0]})" if names else "no class"
        raise DatasetError(
            f"'{data_dir}' has {found} besides `{NEITHER}`; an audit needs two or more classes to compare."
        )
    # Refused before a minute of features when the files alone are too few; again below once decoded.
    _refuse_small_classes(data_dir, names, [(item.path, item.label) for item in dataset.files])
    extract, pre, threshold = feature_extractor(model)
    paths = [item.path for item in dataset.files]
    features, pet_scores, kept, unreadable = compute_features(paths, extract, pre, batch_size)
    kept_labels = [dataset.files[i].label for i in kept]
    pets = np.array([label != NEITHER for label in kept_labels], dtype=bool)
    labels = np.array([names.index(label) for label in kept_labels if label != NEITHER], dtype=int)
    label_of = {str(item.path): item.label for item in dataset.files}
    lost = [(u["error"], label_of[u["path"]]) for u in unreadable]
    readable = [(paths[i], label) for i, label in zip(kept, kept_labels)]
    _refuse_small_classes(data_dir, names, readable, "readable ", lost)
    pet_paths = [str(paths[i]) for i, pet in zip(kept, pets) if pet]
    hashes = HashIndex(default_cache_dir()).hashes([Path(p) for p in pet_paths])
    groups = [digest or path for digest, path in zip(hashes, pet_paths)]  # unhashable now: a group of its own
    _refuse_classes_of_one_photo(data_dir, names, labels, groups, pet_paths)
    smallest = min(int((labels == c).sum()) for c in range(len(names)))
    folds = max(2, min(folds, smallest, len(set(groups))))
    probs = out_of_fold_probabilities(features[pets], labels, folds, groups=groups)
    best = probs.argmax(axis=1)
    # A photo of a class that the gate would answer `neither` (a horse in dog/) is a suspect too, as the gate
    # decides: strictly below its threshold.
    if pet_scores is None or threshold is None:
        ungated = "the model has no gate"
    elif not set(names) <= {"cat", "dog"}:
        ungated = f"the model's gate tells cats and dogs from the rest, and these photos are of {listed(names)}"
    else:
        ungated = ""
    gated = not ungated
    away = 1.0 - pet_scores[np.flatnonzero(pets)] if gated else np.zeros(len(labels))
    not_pet = (away > 1.0 - threshold) & (away >= min_confidence) if gated else np.zeros(len(labels), dtype=bool)
    suspects = [
        Suspect(pet_paths[i], names[labels[i]], NEITHER, round(float(away[i]), 4)) for i in np.flatnonzero(not_pet)
    ] + [
        Suspect(pet_paths[i], names[labels[i]], names[best[i]], round(float(probs[i, best[i]]), 4))
        for i in np.flatnonzero((best != labels) & (probs.max(axis=1) >= min_confidence) & ~not_pet)
    ]
    # `neither` photos: a pet there is what makes one mislabelled; only a cat/dog gate can tell.
    others = np.flatnonzero(~pets)
    judged = bool(len(others)) and gated
    if judged:
        pet = pet_scores[others]
        sure = others[(pet >= threshold) & (pet >= min_confidence)]  # what the gate would answer a pet
        if len(sure):
            which = _classifier().fit(features[pets], labels).predict(features[sure])
            suspects += [
                Suspect(str(paths[kept[i]]), NEITHER, names[c], round(float(pet_scores[i]), 4))
                for i, c in zip(sure, which)
            ]
    suspects.sort(key=lambda s: -s.confidence)
    accuracy = float((best == labels).mean()) if len(labels) else float("nan")
    return AuditResult(
        len(kept),
        names,
        folds,
        suspects,
        accuracy,
        unreadable,
        len(others),
        judged,
        ungated,
        data=os.path.abspath(data_dir),
        model=os.fspath(model) if model else "builtin",
    )


def _refuse_small_classes(
    data_dir: str | os.PathLike,
    names: list[str],
    photos: list[tuple[Path, str]],
    kind: str = "",
    unreadable: list[tuple[str, str]] | None = None,
) -> None:
    """Refuse, naming it and a photo of it, a class with under 2 photos: out-of-fold judging needs one to fit
    on besides the one judged. A lone photo is most often a stray folder (`Chats/` beside `Cats/`), so say where.

    ``unreadable``: (sentence, class) of each file that cannot be read, one of which is said for the class
    refused: "has 0 readable photos of class 'cat'" of a cat/ of two files said neither which nor why."""
    for name in names:
        found = [path for path, label in photos if label == name]
        if len(found) < 2:
            where, fix = (f" ('{found[0]}')", "move it into the class it belongs to, or add") if found else ("", "add")
            lost = [sentence for sentence, label in unreadable or [] if label == name]
            # One sentence, the reader's about the first unreadable file ending it: "... photos. 1 of its files ..."
            # was two, where every refusal is one.
            why = "."
            if lost:
                why = f"; {len(lost)} of its files cannot be read{', the first' * (len(lost) > 1)}: {lost[0]}"
            raise DatasetError(
                f"'{data_dir}' has {counted(len(found), kind + 'photo')} of class '{name}'{where}; an audit needs "
                f"at least 2 of each class ({fix} photos){why}"
            )


def _refuse_classes_of_one_photo(
    data_dir: str | os.PathLike, names: list[str], labels: np.ndarray, groups: list[str], paths: list[str]
) -> None:
    """Refuse a class whose photos are all copies of one: copies share a fold, so the fit that judged them had
    none of their class to learn from, and stopped on scikit-learn's "needs samples of at least 2 classes"."""
    for c, name in enumerate(names):
        members = np.flatnonzero(labels == c)
        if len({groups[i] for i in members}) < 2:
            raise DatasetError(
                f"'{data_dir}' has {counted(len(members), 'photo')} of class '{name}', all copies of one "
                f"('{paths[members[0]]}'); an audit needs at least 2 different photos of each class (add photos)."
            )


def pets_counted(result: AuditResult) -> str:
    """The photos the out-of-fold accuracy is over: those of the model's classes, not the `neither` ones."""
    return f"{result.n - result.neither} photos of {listed(result.classes)}"


def accuracy_note(result: AuditResult) -> str:
    """The out-of-fold accuracy as a percentage and what it counts: the cat-or-dog answers alone, never the gate's
    (a summary read "out-of-fold accuracy 1.0000; 1 disagrees with its label", the one being the gate's)."""
    pets = result.n - result.neither
    right = round(result.out_of_fold_accuracy * pets) if pets else 0
    return (
        f"out-of-fold accuracy {percent(result.out_of_fold_accuracy)} ({right} of {pets} answered their own class, "
        f"{listed(result.classes, 'or')}, by a fit on the other folds)"
    )


def suspects_note(result: AuditResult) -> str:
    """How many suspects and of which kind: answered another class, turned away by the gate, a pet among the
    `neither` photos. "1 disagrees with its label" did not say that the gate, not the classes, disagreed."""
    if not result.suspects:
        return "No suspects"
    other = "the other class" if len(result.classes) == 2 else "another class"
    away = sum(s.suggested == NEITHER for s in result.suspects)
    pets = sum(s.label == NEITHER for s in result.suspects)
    kinds = [
        (len(result.suspects) - away - pets, f"answered {other}"),
        (away, "answered neither by the gate"),
        (pets, f"labelled {NEITHER} but answered cat or dog by the gate"),  # only a cat/dog gate judges them
    ]
    return f"{counted(len(result.suspects), 'suspect')}: " + ", ".join(f"{n} {kind}" for n, kind in kinds if n)


def neither_note(result: AuditResult, lead: str = "") -> str:
    """What became of the `neither` photos, for people; empty when there are none."""
    if not result.neither:
        return ""
    if result.neither_judged:
        return f"{lead}{result.neither} neither photos judged by the model's gate (a cat or a dog there is a suspect)"
    return f"{lead}{result.neither} neither photos not judged: {result.ungated}"


def write_audit(result: AuditResult, out_dir: str | os.PathLike, top: int = 100) -> Path:
    """``suspects.json`` (every suspect) and ``audit.html`` (the top ones with thumbnails); returns the HTML path."""
    from catdog.report import PAGE_STYLE, thumbnail_data_uri

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "suspects.json", json_text(result.to_dict()) + "\n")
    cards = "".join(
        f'<figure class="suspect"><img src="{thumbnail_data_uri(s.path) or ""}" alt="{html_text(Path(s.path).name)}">'
        f"<figcaption>#{rank} {html_text(Path(s.path).name)}<br>labelled <b>{html_text(s.label)}</b>, "
        f"looks like <b>{html_text(s.suggested)}</b> ({percent(s.confidence)})</figcaption></figure>"
        for rank, s in enumerate(result.suspects[:top], 1)
    )
    # Without a gate (a model without one, or photos of other classes) no photo was judged by one.
    gate = "" if result.ungated else ",\nor that the model's gate puts on the other side of cat-or-dog"
    # Counts read as words: "1 suspects", "the top 0 below" once.
    shown = f"; the top {min(top, len(result.suspects))} below, most confident first" if result.suspects else ""
    summary = f"{pets_counted(result)}, {accuracy_note(result)}{neither_note(result, '; ')}."
    # The page names the folder and the model first, as evaluate's report does: read later, it said neither.
    # Named, each in the sentence of catdog.images: the page said only "2 unreadable files." and not which. Below
    # the cards, which "the top 2 below" announces: a long list between the two pushed them out of sight.
    unreadable = "".join(f"<li>{html_text(item['error'])}</li>" for item in result.unreadable)
    if unreadable:
        unreadable = (
            f"<p>{counted(len(result.unreadable), 'unreadable file')}, left out of the audit:</p><ul>{unreadable}</ul>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>catdog data audit</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{PAGE_STYLE}</style></head><body>
<h1>Photos most likely mislabelled</h1>
<p>Photos <code>{html_text(result.data)}</code>, judged by the features of <code>{html_text(result.model)}</code>.</p>
<p>{html_text(summary)}
Suspects are photos whose {result.folds}-fold out-of-fold prediction disagrees with the label{gate}.
{html_text(suspects_note(result))}{shown}.</p>
{cards}
{unreadable}
</body></html>
"""
    atomic_write_text(out / "audit.html", utf8_safe(page))  # the names in it; a lone surrogate cannot be written
    return out / "audit.html"
