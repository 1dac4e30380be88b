"""``catdog evaluate``: metrics (scikit-learn), robustness under corruptions, and a self-contained report.

Every photo goes through the Predictor (the one decode/preprocess path and the one
outputs → Prediction path). A built-in model may answer ``neither`` (its gate) or a
thresholded one ``unsure``: those answers count as wrong for accuracy and are reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn import metrics as skm

from catdog.data.layout import DatasetError, discover
from catdog.images import ImageError
from catdog.predict import Predictor
from catdog.preprocess import stack_uint8, to_uint8

ECE_BINS = 15


@dataclass
class Evaluation:
    """Per-photo results of one model on one labelled folder."""

    classes: list[str]
    paths: list[str]
    truth: list[str]  # true label of each readable photo
    probs: np.ndarray  # (N, classes) calibrated probabilities
    predicted: list[str]  # final answers: a class, "neither" or "unsure"
    unreadable: list[dict] = field(default_factory=list)  # {"path", "error"}

    @property
    def y(self) -> np.ndarray:
        return np.array([self.classes.index(t) for t in self.truth], dtype=int)


def collect(predictor: Predictor, data_dir: str | os.PathLike, *, batch_size: int = 32) -> Evaluation:
    """Predict every labelled photo under ``data_dir`` (any layout); unreadable files are listed, not fatal."""
    dataset = discover(data_dir, image_files_only=True)
    unknown = sorted(set(dataset.classes) - set(predictor.classes))
    if unknown:
        raise DatasetError(
            f"'{data_dir}' has classes the model does not know: {', '.join(unknown)} "
            f"(the model knows {', '.join(predictor.classes)})."
        )
    label_of = {str(item.path): item.label for item in dataset.files}
    paths, truth, probs, predicted, unreadable = [], [], [], [], []
    for p in predictor.predict_paths(list(label_of), batch_size=batch_size):
        if not p.ok:
            unreadable.append({"path": p.source, "error": p.error})
            continue
        paths.append(p.source)
        truth.append(label_of[p.source])
        probs.append([p.probabilities[c] for c in predictor.classes])
        predicted.append(p.label)
    probs_array = np.array(probs, dtype=np.float64).reshape(len(probs), len(predictor.classes))
    return Evaluation(list(predictor.classes), paths, truth, probs_array, predicted, unreadable)


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


def compute_metrics(
    truth: list[str], probs: np.ndarray, predicted: list[str], classes: list[str], unreadable: list[dict] | None = None
) -> dict:
    """The ``--json`` metrics. Probability metrics use the class probabilities; label metrics the final answers."""
    y = np.array([classes.index(t) for t in truth], dtype=int)
    n = len(truth)
    extra = [label for label in ("neither", "unsure") if label in predicted]
    out: dict = {"n": n, "classes": list(classes)}
    out["accuracy"] = float(skm.accuracy_score(truth, predicted)) if n else None
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
    return out


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
        return F.jpeg(squares, quality=(30, 15, 6)[s])
    if name == "rotation":
        return F.rotate(squares, (10.0, 20.0, 35.0)[s], interpolation=F.InterpolationMode.BILINEAR)
    if name == "crop":
        side = squares.shape[-1]
        keep = int(side * (0.8, 0.6, 0.45)[s])
        return F.resize(F.center_crop(squares, [keep, keep]), [side, side], antialias=True)
    raise ValueError(f"unknown corruption '{name}'.")


CORRUPTIONS = ("brightness", "contrast", "blur", "noise", "jpeg", "rotation", "crop")


def robustness(predictor: Predictor, evaluation: Evaluation, *, samples: int = 300, batch_size: int = 32) -> dict:
    """Accuracy under each corruption at severities 1–3 on an evenly spread subset of readable photos.

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
        return {"n": 0, "clean": None, "accuracy": {}}
    batch = torch.from_numpy(stack_uint8(squares))

    def accuracy(images: torch.Tensor) -> float:
        labels = []
        for start in range(0, len(images), batch_size):
            logits, pet = predictor.forward_uint8(images[start : start + batch_size])
            labels += [p.label for p in predictor.to_predictions(logits, pet, [""] * len(logits))]
        return float(np.mean([a == b for a, b in zip(labels, truth)]))

    table = {name: [accuracy(_corrupt(name, sev, batch)) for sev in (1, 2, 3)] for name in CORRUPTIONS}
    return {"n": len(truth), "clean": accuracy(batch), "accuracy": table}


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
) -> dict:
    """Evaluate a model directory, an .onnx file or the built-in model (``None``) on ``data_dir``."""
    predictor = Predictor.load(model, tta=tta, threshold=threshold, throughput=True)
    evaluation = collect(predictor, data_dir, batch_size=batch_size)
    if not evaluation.paths:
        raise DatasetError(f"None of the {len(evaluation.unreadable)} images in '{data_dir}' could be read.")
    result = compute_metrics(
        evaluation.truth, evaluation.probs, evaluation.predicted, evaluation.classes, evaluation.unreadable
    )
    result["model"] = predictor.name
    result["backend"] = predictor.info.get("backend")
    if with_robustness:
        result["robustness"] = robustness(predictor, evaluation, samples=robustness_samples, batch_size=batch_size)
    if out_dir is not None:
        from catdog.report import write_report

        result["report"] = str(write_report(out_dir, evaluation, result))
    return result
