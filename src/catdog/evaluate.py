"""``catdog evaluate``: metrics (scikit-learn), robustness under corruptions, and a self-contained report.

Every photo goes through the Predictor (the one decode/preprocess path and the one
outputs → Prediction path). A built-in model may answer ``neither`` (its gate) or a
thresholded one ``unsure``: those answers count as wrong for accuracy and are reported.

Photos of a ``neither`` folder (no cat, no dog) are no class of the model: the plain metrics are
computed on the other photos only, and the neither photos give the open-set figures
(:func:`open_set_metrics`: how well the gate's ``P(cat or dog)`` tells pets from the rest).
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from statistics import NormalDist

import numpy as np
import torch
from PIL import Image
from sklearn import metrics as skm

from catdog.data.layout import NEITHER, Dataset, DatasetError, discover
from catdog.fsutil import counted, percent, recorded_path
from catdog.images import ImageError, decode
from catdog.inference.outputs import Outputs
from catdog.inference.predictor import Prediction, Predictor
from catdog.models.files import BUILTIN_MODELS
from catdog.preprocess import stack_uint8, to_uint8

ECE_BINS = 15


@dataclass
class Evaluation:
    """Per-photo results of one model on one labelled folder (its ``neither`` photos included)."""

    classes: list[str]
    paths: list[str]
    truth: list[str]  # true label of each readable photo: a class of the model or "neither"
    probs: np.ndarray  # (N, classes) calibrated class probabilities (for a gated model: P(class | a cat or dog))
    predicted: list[str]  # final answers: a class, "neither" or "unsure"
    unreadable: list[dict] = field(default_factory=list)  # {"path", "error"}
    pet_score: np.ndarray | None = None  # (N,) the gate's P(cat or dog); None for a model without a gate
    gate_threshold: float | None = None  # P(cat or dog) below which the model answers "neither"
    left_out: list[str] = field(default_factory=list)  # images the folder's layout gives no label (not evaluated)

    @property
    def y(self) -> np.ndarray:
        """Class indices of the truth; only defined when every photo is of a model class (see :meth:`pets`)."""
        return np.array([self.classes.index(t) for t in self.truth], dtype=int)

    @property
    def is_neither(self) -> np.ndarray:
        return np.array([t == NEITHER for t in self.truth], dtype=bool)

    def subset(self, keep: np.ndarray) -> Evaluation:
        index = np.flatnonzero(keep)
        return Evaluation(
            classes=self.classes,
            paths=[self.paths[i] for i in index],
            truth=[self.truth[i] for i in index],
            probs=self.probs[index],
            predicted=[self.predicted[i] for i in index],
            unreadable=self.unreadable,
            pet_score=None if self.pet_score is None else self.pet_score[index],
            gate_threshold=self.gate_threshold,
            left_out=self.left_out,
        )

    def pets(self) -> Evaluation:
        """The photos of the model's classes: what the plain metrics are computed on."""
        return self.subset(~self.is_neither)


@dataclass
class _ScoringPredictor(Predictor):
    """The same Predictor, also keeping per source the unrounded scores the metrics need.

    Predictions round their probabilities and, for a gated model, scale the classes' by P(cat or dog);
    evaluation wants the class softmax itself and the gate's score as the model computed them.
    """

    scores: dict[str, tuple[np.ndarray, float | None]] = field(default_factory=dict)

    def to_predictions(self, outputs: Outputs, sources: list[str], source_key: str = "path") -> list[Prediction]:
        predictions = super().to_predictions(outputs, sources, source_key)
        probs = self.probabilities(outputs.logits)
        for i, source in enumerate(sources):
            pet = None if outputs.pet_score is None else float(np.clip(outputs.pet_score[i], 0.0, 1.0))
            self.scores[source] = (probs[i], pet)  # one key per thread's own sources: safe across lanes
        return predictions


SPLITS = ("all", "train", "val", "test")


def collect(
    predictor: Predictor,
    data_dir: str | os.PathLike,
    *,
    batch_size: int = 32,
    split: str = "all",
    dataset: Dataset | None = None,
) -> Evaluation:
    """Predict every labelled photo under ``data_dir`` (any layout); unreadable files are listed, not fatal.

    A ``neither`` folder is welcome (its photos are what a model should turn away); any other class
    the model does not know is an error. ``split``: only the photos ``catdog train`` put in that part
    of its content-hash split of ``data_dir`` (:func:`held_out`), with the fractions the model records.
    ``dataset``: ``data_dir`` as :func:`discover` found it already.
    """
    dataset = dataset or discover(data_dir, image_files_only=True)
    unknown = sorted(set(dataset.classes) - set(predictor.classes) - {NEITHER})
    if unknown:
        raise DatasetError(
            f"'{data_dir}' has classes the model does not know: {', '.join(unknown)} "
            f"(the model knows {', '.join(predictor.classes)}, and a 'neither' folder is welcome)."
        )
    if not set(dataset.classes) & set(predictor.classes):
        raise DatasetError(
            f"'{data_dir}' holds only 'neither' photos; evaluation also needs photos of the model's classes "
            f"({', '.join(predictor.classes)})."
        )
    scoring = _ScoringPredictor(**{f.name: getattr(predictor, f.name) for f in fields(Predictor)})
    label_of = {str(item.path): item.label for item in dataset.files}
    if split != "all":
        label_of = held_out(label_of, dataset.classes, predictor.info, split)
    paths, truth, predicted, unreadable = [], [], [], []
    answers_neither = False  # whether the Predictions carry P(neither): the model has a gate that applies
    for p in scoring.predict_paths(list(label_of), batch_size=batch_size):
        if not p.ok:
            unreadable.append({"path": p.source, "error": p.error})
            continue
        answers_neither = NEITHER in p.probabilities
        paths.append(p.source)
        truth.append(label_of[p.source])
        predicted.append(p.label)
    probs = np.array([scoring.scores[p][0] for p in paths], dtype=np.float64).reshape(len(paths), len(scoring.classes))
    pets = [scoring.scores[p][1] for p in paths]
    gated = answers_neither and predictor.gate_threshold is not None and all(s is not None for s in pets)
    return Evaluation(
        classes=list(predictor.classes),
        paths=paths,
        truth=truth,
        probs=probs,
        predicted=predicted,
        unreadable=unreadable,
        pet_score=np.array(pets, dtype=np.float64) if gated else None,
        gate_threshold=predictor.gate_threshold if gated else None,
        left_out=[str(path) for path in dataset.left_out],
    )


# Kaggle's Dogs vs. Cats names its training photos so; the built-in models learnt from (copies of) them.
KAGGLE_NAME = re.compile(r"(cat|dog)\.\d+\.jpe?g", re.IGNORECASE)


def split_warnings(
    info: dict, data_dir: str | os.PathLike, split: str, n: int, model: str = "", paths: Sequence[str] = ()
) -> list[str]:
    """What a user should know of the photos measured: training photos among them, or a split of a folder the
    model never saw (both are easy to do without noticing; the figures are still computed)."""
    data = info.get("data") if isinstance(info.get("data"), dict) else {}
    root = recorded_path(data["root"]) if data.get("root") else None
    kaggle = sum(bool(KAGGLE_NAME.fullmatch(os.path.basename(p))) for p in paths)
    if model in BUILTIN_MODELS and split == "all" and paths and kaggle >= len(paths) / 2:
        who = "the built-in model" if model == "builtin" else model
        return [
            f"{kaggle} of these photos {'is' if kaggle == 1 else 'are'} named like Kaggle's Dogs vs. Cats photos "
            "(cat.N.jpg, dog.N.jpg), which "
            f"{who} learnt from, so these figures may flatter it: photos from elsewhere measure it fairly."
        ]
    if not root:
        return []
    here = os.path.realpath(data_dir)
    if split == "all" and here == os.path.realpath(root) and data.get("train_images"):
        return [
            f"'{data_dir}' is the folder this model was trained on: {data['train_images']} of its photos trained "
            "it, so these figures flatter it. --split val or --split test measures photos it did not learn from."
        ]
    if split != "all" and here != os.path.realpath(root):
        return [
            f"'{data_dir}' is not the folder this model was trained on ('{root}'): --split {split} kept only the "
            f"{counted(n, 'photo')} of it in that part of the split by content hash. --split all measures them all."
        ]
    return []


def held_out(label_of: dict[str, str], classes: list[str], info: dict, split: str) -> dict[str, str]:
    """The photos of ``label_of`` in ``split`` of the content-hash split the model records in ``info``."""
    from catdog.data.split import files_in_part
    from catdog.fsutil import default_cache_dir

    fractions = info.get("split")
    if not fractions and "val_fraction" in (info.get("training") or {}):  # model directories before the test split
        fractions = {"val_fraction": info["training"]["val_fraction"], "test_fraction": 0.0}
    if not fractions:
        raise DatasetError("This model records no train/val/test split (it predates them): use --split all.")
    if split == "test" and not fractions.get("test_fraction"):
        raise DatasetError(
            "This model was trained without a test split (catdog train DATA_DIR --test-fraction 0.1 holds one out)."
        )
    return files_in_part(
        label_of,
        classes,
        split,
        val_fraction=float(fractions["val_fraction"]),
        test_fraction=float(fractions.get("test_fraction") or 0.0),
        cache_dir=default_cache_dir(),
    )


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Weighted mean |accuracy − confidence| over equal-width confidence bins (scikit-learn has no ECE)."""
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def wilson_interval(right: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's interval for the share ``right / n``: where the accuracy on many more photos like these lies, at
    ``confidence``. Unlike p ± z·sqrt(p(1 − p)/n) it stays within [0, 1], and 12 right of 12 is not "exactly 1"."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)  # 1.96 for 95 %
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # All right (or all wrong), the bound is exactly 1 (0), but rounding left 0.99999999999999989: "100.0000%".
    low = 0.0 if right == 0 else max(0.0, centre - half)
    high = 1.0 if right == n else min(1.0, centre + half)
    return low, high


FEW_PHOTOS = 200  # fewer photos than this, and the accuracy's interval is wide enough to be said first


def few_photos_note(metrics: dict) -> list[str]:
    """On fewer than ``FEW_PHOTOS`` photos, a sentence with their count and the accuracy's 95 % interval: 11 right
    of 12 read as a precise 91.67 %, and its interval is 64.6-98.5 %. No sentence for no photo: it has no accuracy.
    A percentage, as data audit's accuracy and the README's: this note read "0.6461–0.9851" beside them."""
    n = metrics["n"]
    if n == 0 or n >= FEW_PHOTOS:
        return []
    low, high = metrics["accuracy_interval"]
    right = round(metrics["accuracy"] * n)
    return [
        f"Only {counted(n, 'photo')}, so the accuracy is a rough figure: {right} of {n} right, 95% interval "
        f"{percent(low)}–{percent(high)} (Wilson): the accuracy on many more photos like these would likely lie in it."
    ]


def compute_metrics(
    truth: list[str], probs: np.ndarray, predicted: list[str], classes: list[str], unreadable: list[dict] | None = None
) -> dict:
    """The ``--json`` metrics. Probability metrics use the class probabilities; label metrics the final answers."""
    y = np.array([classes.index(t) for t in truth], dtype=int)
    n = len(truth)
    extra = [label for label in ("neither", "unsure") if label in predicted]
    out: dict = {"n": n, "classes": list(classes)}
    out["accuracy"] = float(skm.accuracy_score(truth, predicted)) if n else None
    right = sum(t == p for t, p in zip(truth, predicted))
    out["accuracy_interval"] = list(wilson_interval(right, n)) if n else None  # 95 %
    present = sorted(set(y.tolist()))
    out["log_loss"] = float(skm.log_loss(y, probs, labels=list(range(len(classes))))) if n else None
    if len(present) < 2:
        out["roc_auc"] = None  # undefined with one class
    elif len(classes) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y, probs[:, 1]))
    else:
        out["roc_auc"] = float(
            skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(len(classes))))
        )
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        truth, predicted, labels=classes, zero_division=0
    )
    for key, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[key] = {c: float(v) for c, v in zip(classes, values)}
        out[key]["macro"] = float(np.mean(values)) if len(values) else None
    out["support"] = {c: int(s) for c, s in zip(classes, support)}
    out["confusion_matrix"] = skm.confusion_matrix(truth, predicted, labels=classes + extra)[: len(classes)].tolist()
    out["confusion_columns"] = classes + extra
    confidence = probs.max(axis=1) if n else np.zeros(0)
    out["ece"] = expected_calibration_error(confidence, probs.argmax(axis=1) == y) if n else None
    out["neither"] = int(sum(p == "neither" for p in predicted))
    out["unsure"] = int(sum(p == "unsure" for p in predicted))
    out["unreadable"] = list(unreadable or [])
    out["scope"] = SCOPE
    return out


SCOPE = (
    "Photos of the model's classes only (a 'neither' folder's photos are in open_set). Answers 'neither' "
    "(turned away by the gate) and 'unsure' count as wrong in accuracy, recall and the confusion matrix; "
    "log loss, ROC AUC and ECE use the class probabilities (for a gated model: P(class | a cat or dog))."
)
NO_GATE = "The model has no 'neither' gate: it answers one of its classes for every photo, so no open-set figures."


def open_set_metrics(
    truth: list[str], predicted: list[str], pet_score: np.ndarray | None, threshold: float | None
) -> dict:
    """Pets (any class of the model) versus `neither` photos, on the gate's ``P(cat or dog)``.

    ``neither_answered``: share of neither photos answered `neither`; ``pets_turned_away``: share of
    pet photos answered `neither` (both the model's real answers at ``threshold``). ``fpr_at_95_tpr``:
    share of neither photos scoring at least ``score_at_95_tpr``, the highest score that keeps at least 95 % of
    the pets (the gate set to keep 95 % of pets). ``roc_auc``: pets positive, from scikit-learn.
    """
    is_pet = np.array([t != NEITHER for t in truth], dtype=bool)
    out: dict = {"n_pets": int(is_pet.sum()), "n_neither": int((~is_pet).sum())}
    if pet_score is None or threshold is None:
        return out | {"gate": False, "note": NO_GATE}
    scores = np.asarray(pet_score, dtype=np.float64)
    turned_away = np.array([p == NEITHER for p in predicted], dtype=bool)
    both = out["n_pets"] > 0 and out["n_neither"] > 0
    # The highest score that keeps at least 95 % of pets (np.percentile interpolates: it kept 28 of 30).
    cut = float(np.sort(scores[is_pet])[int(np.floor(0.05 * out["n_pets"] + 1e-9))]) if out["n_pets"] else None
    return out | {
        "gate": True,
        "threshold": float(threshold),
        "roc_auc": float(skm.roc_auc_score(is_pet, scores)) if both else None,
        "neither_answered": float(turned_away[~is_pet].mean()) if out["n_neither"] else None,
        "pets_turned_away": float(turned_away[is_pet].mean()) if out["n_pets"] else None,
        "fpr_at_95_tpr": float((scores[~is_pet] >= cut).mean()) if both else None,
        "score_at_95_tpr": cut,
    }


# -- robustness -------------------------------------------------------------------------------


def _corrupt(name: str, severity: int, squares: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1–3) to a uint8 (N, 3, S, S) batch of model-view squares."""
    from torchvision.transforms.v2 import functional as F

    s = severity - 1
    if name == "brightness":
        return F.adjust_brightness(squares, (0.6, 0.4, 0.25)[s])
    if name == "contrast":
        return F.adjust_contrast(squares, (0.6, 0.4, 0.25)[s])
    if name == "blur":
        sigma = (1.0, 2.0, 3.5)[s]
        return F.gaussian_blur(squares, kernel_size=2 * int(3 * sigma) + 1, sigma=sigma)
    if name == "noise":
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(squares.shape, generator=generator) * (255 * (0.05, 0.1, 0.2)[s])
        return (squares.float() + noise).clamp(0, 255).to(torch.uint8)
    if name == "jpeg":
        return _jpeg_round_trip(squares, quality=(30, 15, 6)[s])
    if name == "rotation":
        return F.rotate(squares, (10.0, 20.0, 35.0)[s], interpolation=F.InterpolationMode.BILINEAR)
    if name == "crop":
        side = squares.shape[-1]
        keep = int(side * (0.8, 0.6, 0.45)[s])
        return F.resize(F.center_crop(squares, [keep, keep]), [side, side], antialias=True)
    raise ValueError(f"unknown corruption '{name}'.")


def _jpeg_round_trip(squares: torch.Tensor, quality: int) -> torch.Tensor:
    """Each square saved as a JPEG at ``quality`` by Pillow and decoded again as every photo is (images.decode).

    Not torchvision's jpeg transform: its encoder and decoder are deprecated since torchvision 0.29. Both wrap
    libjpeg with the same defaults: on 32 dev squares the pixels are the same, bit for bit, at each quality.
    """
    out = []
    for square in squares:
        encoded = io.BytesIO()
        Image.fromarray(square.permute(1, 2, 0).numpy()).save(encoded, "JPEG", quality=quality)
        out.append(torch.from_numpy(np.array(decode(encoded.getvalue()))).permute(2, 0, 1))
    return torch.stack(out)


CORRUPTIONS = ("brightness", "contrast", "blur", "noise", "jpeg", "rotation", "crop")


def robustness(predictor: Predictor, evaluation: Evaluation, *, samples: int = 300, batch_size: int = 32) -> dict:
    """Accuracy under each corruption at severities 1–3 on an evenly spread subset of readable photos, and the
    share of them answered `neither` (counted wrong in the accuracy: a gate may rightly see no pet in noise).

    Corruptions act on the model's view (the stored square), so their strength does not depend
    on the photo's original size.
    """
    step = max(1, len(evaluation.paths) // samples)
    chosen = list(range(0, len(evaluation.paths), step))[:samples]
    squares, truth = [], []
    for i in chosen:
        try:
            squares.append(to_uint8(evaluation.paths[i], predictor.pre, max_pixels=predictor.max_pixels))
            truth.append(evaluation.truth[i])
        except ImageError:
            continue
    if not squares:
        return {"n": 0, "clean": None, "clean_neither": None, "accuracy": {}, "neither": {}}
    batch = torch.from_numpy(stack_uint8(squares))

    def answers(images: torch.Tensor) -> tuple[float, float]:
        """(accuracy, share answered `neither`)."""
        labels = []
        for start in range(0, len(images), batch_size):
            outputs = predictor.forward_uint8(images[start : start + batch_size])
            labels += [p.label for p in predictor.to_predictions(outputs, [""] * len(outputs.logits))]
        return float(np.mean([a == b for a, b in zip(labels, truth)])), float(np.mean([a == NEITHER for a in labels]))

    cells = {name: [answers(_corrupt(name, sev, batch)) for sev in (1, 2, 3)] for name in CORRUPTIONS}
    clean, clean_neither = answers(batch)
    return {
        "n": len(truth),
        "clean": clean,
        "clean_neither": clean_neither,
        "accuracy": {name: [cell[0] for cell in row] for name, row in cells.items()},
        "neither": {name: [cell[1] for cell in row] for name, row in cells.items()},
    }


def evaluate(
    model: str | os.PathLike | None,
    data_dir: str | os.PathLike,
    *,
    out_dir: str | os.PathLike | None = None,
    with_robustness: bool = False,
    robustness_samples: int = 300,
    batch_size: int = 32,
    tta: bool = False,
    threshold: float | None = None,
    neither_threshold: float | None = None,
    split: str = "all",
) -> dict:
    """Evaluate a model directory, an .onnx file or the built-in model (``None``) on ``data_dir``.

    ``split``: ``all`` photos, or those of ``train``, ``val`` or ``test`` in the model's own split of ``data_dir``.
    """
    if split not in SPLITS:
        raise DatasetError(f"--split must be one of {', '.join(SPLITS)}, not '{split}'.")
    # Listed before the model loads: a missing or empty folder was refused only after builtin-large's first
    # export to ONNX, minutes on a CPU.
    dataset = discover(data_dir, image_files_only=True)
    predictor = Predictor.load(
        model, tta=tta, threshold=threshold, neither_threshold=neither_threshold, throughput=True
    )
    evaluation = collect(predictor, data_dir, batch_size=batch_size, split=split, dataset=dataset)
    pets = evaluation.pets()
    if not pets.paths:
        raise DatasetError(
            f"None of the images of the model's classes in '{data_dir}' could be read "
            f"({len(evaluation.unreadable)} unreadable)."
        )
    result = compute_metrics(pets.truth, pets.probs, pets.predicted, pets.classes, evaluation.unreadable)
    if evaluation.is_neither.any():
        result["open_set"] = open_set_metrics(
            evaluation.truth, evaluation.predicted, evaluation.pet_score, evaluation.gate_threshold
        )
    result["model"] = predictor.name
    result["data"] = os.path.abspath(data_dir)
    result["split"] = split
    result["tta"] = tta
    result["threshold"] = threshold
    result["neither_threshold"] = predictor.gate_threshold
    result["warnings"] = split_warnings(
        predictor.info, data_dir, split, len(evaluation.paths), predictor.name, evaluation.paths
    ) + few_photos_note(result)
    result["left_out"] = evaluation.left_out
    result["backend"] = predictor.info.get("backend")
    if with_robustness:
        result["robustness"] = robustness(predictor, pets, samples=robustness_samples, batch_size=batch_size)
    if out_dir is not None:
        from catdog.report import write_report

        result["report"] = str(write_report(out_dir, evaluation, result))
    return result
