"""``catdog data audit``: the photos most likely carrying a wrong label.

Each photo is judged by a model that never saw its label: penultimate features of a frozen
backbone (the built-in ImageNet EfficientNet-Lite0 by default, computed once through ONNX
Runtime) and k-fold logistic regression, so every photo gets an out-of-fold probability for
its own label. Photos whose out-of-fold prediction confidently disagrees with their label are
ranked, most confident first. (With a trained model directory its backbone has seen the
labels during training, so the built-in backbone is the more honest judge.)
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catdog.data.layout import DatasetError, discover
from catdog.fsutil import atomic_write_text
from catdog.images import ImageError
from catdog.preprocess import Preprocess, normalize, stack_uint8, to_uint8


@dataclass
class Suspect:
    path: str
    label: str
    suggested: str
    confidence: float  # out-of-fold probability of ``suggested``

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "suggested": self.suggested, "confidence": self.confidence}


@dataclass
class AuditResult:
    n: int
    classes: list[str]
    folds: int
    suspects: list[Suspect]
    out_of_fold_accuracy: float
    unreadable: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "classes": self.classes,
            "folds": self.folds,
            "out_of_fold_accuracy": self.out_of_fold_accuracy,
            "suspects": [s.to_dict() for s in self.suspects],
            "unreadable": self.unreadable,
        }


def feature_extractor(model: str | os.PathLike | None) -> tuple[Callable[[np.ndarray], np.ndarray], Preprocess]:
    """Penultimate features of the built-in model, a model directory or an .onnx file (ONNX Runtime when possible)."""
    from catdog.export import ExportModule
    from catdog.onnx_backend import _torch_source, cached_export, features_fn, read_config, session

    if model is not None and str(model).lower().endswith(".onnx"):
        sess = session(model)
        fn = features_fn(sess)
        if fn is None:
            raise DatasetError(f"'{model}' has no 'features' output; audit with its model directory instead.")
        return fn, Preprocess.from_dict(read_config(sess)["preprocess"])
    name, key_files, load = _torch_source(model)
    try:
        sess = session(cached_export(name, key_files, load))
        fn = features_fn(sess)
        if fn is not None:
            return fn, Preprocess.from_dict(read_config(sess)["preprocess"])
    except (OSError, RuntimeError, ValueError, ImportError):
        pass  # fall back to PyTorch below
    import torch

    module, config = load()
    wrapper = ExportModule(module).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wrapper(torch.from_numpy(batch))[-1].float().numpy()

    return run, Preprocess.from_dict(config["preprocess"])


def compute_features(
    paths: list[Path], extract: Callable[[np.ndarray], np.ndarray], pre: Preprocess, batch_size: int = 32
) -> tuple[np.ndarray, list[int], list[dict]]:
    """Features of every readable photo, the indices of those photos, and the unreadable ones."""

    def load(path: Path):
        try:
            return to_uint8(path, pre), None
        except ImageError as err:
            return None, str(err).replace("The image", f"'{path}'", 1)

    features, kept, unreadable = [], [], []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = list(pool.map(load, paths[start : start + batch_size]))
            good = [i for i, (square, _) in enumerate(chunk) if square is not None]
            for i, (square, error) in enumerate(chunk):
                if square is None:
                    unreadable.append({"path": str(paths[start + i]), "error": error})
            if good:
                batch = normalize(stack_uint8([chunk[i][0] for i in good]), pre)
                features.append(extract(batch))
                kept += [start + i for i in good]
    dim = features[0].shape[1] if features else 0
    return (np.concatenate(features) if features else np.zeros((0, dim), np.float32)), kept, unreadable


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """k-fold logistic regression: each photo's class probabilities from a model that never saw it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(classifier, features, labels, cv=cv, method="predict_proba")


def audit(
    data_dir: str | os.PathLike,
    model: str | os.PathLike | None = None,
    *,
    folds: int = 5,
    min_confidence: float = 0.5,
    batch_size: int = 32,
) -> AuditResult:
    """Rank the photos of ``data_dir`` whose out-of-fold prediction disagrees with their label."""
    dataset = discover(data_dir, image_files_only=True)
    if len(dataset.classes) < 2:
        raise DatasetError(f"'{data_dir}' has one class only ({dataset.classes[0]}); an audit needs two or more.")
    extract, pre = feature_extractor(model)
    paths = [item.path for item in dataset.files]
    features, kept, unreadable = compute_features(paths, extract, pre, batch_size)
    labels = np.array([dataset.classes.index(dataset.files[i].label) for i in kept])
    smallest = min(int((labels == c).sum()) for c in range(len(dataset.classes)))
    if smallest < 2:
        raise DatasetError(f"'{data_dir}' needs at least 2 readable photos per class for an audit.")
    folds = max(2, min(folds, smallest))
    probs = out_of_fold_probabilities(features, labels, folds)
    best = probs.argmax(axis=1)
    names = dataset.classes
    suspects = [
        Suspect(str(paths[kept[i]]), names[labels[i]], names[best[i]], round(float(probs[i, best[i]]), 4))
        for i in np.flatnonzero((best != labels) & (probs.max(axis=1) >= min_confidence))
    ]
    suspects.sort(key=lambda s: -s.confidence)
    accuracy = float((best == labels).mean()) if len(labels) else float("nan")
    return AuditResult(len(kept), dataset.classes, folds, suspects, accuracy, unreadable)


def write_audit(result: AuditResult, out_dir: str | os.PathLike, top: int = 100) -> Path:
    """``suspects.json`` (every suspect) and ``audit.html`` (the top ones with thumbnails); returns the HTML path."""
    from catdog.report import thumbnail_data_uri

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "suspects.json", json.dumps(result.to_dict(), indent=2) + "\n")
    cards = "".join(
        f'<figure><img src="{thumbnail_data_uri(s.path) or ""}" alt="{html.escape(Path(s.path).name)}">'
        f"<figcaption>#{rank} {html.escape(Path(s.path).name)}<br>labelled <b>{html.escape(s.label)}</b>, "
        f"looks like <b>{html.escape(s.suggested)}</b> ({s.confidence:.3f})</figcaption></figure>"
        for rank, s in enumerate(result.suspects[:top], 1)
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>catdog data audit</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2rem; }}
figure {{ display: inline-block; width: 210px; margin: .5rem; vertical-align: top; font-size: .8rem; }}
img {{ max-width: 100%; }}</style></head><body>
<h1>Photos most likely mislabelled</h1>
<p>{result.n} photos, {len(result.suspects)} whose {result.folds}-fold out-of-fold prediction disagrees with the
label (out-of-fold accuracy {result.out_of_fold_accuracy:.4f}); the top {min(top, len(result.suspects))} below,
most confident first. {len(result.unreadable)} unreadable files.</p>
{cards or "<p>No suspects.</p>"}
</body></html>
"""
    atomic_write_text(out / "audit.html", page)
    return out / "audit.html"
