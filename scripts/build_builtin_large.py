"""Fit ``builtin-large`` — a cat/dog head and a `neither` gate on frozen Lite0 + Lite1 + Lite2 — into the package.

    python scripts/build_builtin_large.py [--data DATA_DIR] [--measure-only | --operating-point | --gate-only]

The model (catdog.models.builtin.load_builtin_large) reads one 260-px crop (Lite2's preprocessing),
resized inside the model to 224 px for Lite0 and 240 px for Lite1, and puts both pieces below on the
three backbones' pooled features side by side (3,840 values). The features are computed by that very
module (exported to ONNX, cached under the user cache), so the fits see what prediction sees.

- The head: logistic regression on standardised features (folded into one 3840→2 linear layer), fitted
  on the dev data's training split (the built-in head's content-hash split, builtin_head.json's ``split``),
  each photo and its mirror image. Its regularisation is chosen by 3-fold cross-validation on that split:
  no choice here looks at the validation or test photos, which the JSON reports on.
- The gate (catdog.models.gate.OpenSetGate): as the built-in model's (scripts/build_builtin_gate.py) on
  these features, with the pet mass taken from the mean of the three backbones' ImageNet logits: pets of
  the training split less a calibration fifth, against the fitting half of ``DATA_DIR/neither``, the 300
  generated pictures that are not photos (benchmarks/synthetic_graphics.py) and the mirrors of both (C = 100,
  the built-in gate's). Without the pictures, it answered cat or dog for 22 of 100 generated ones of another
  seed and for scikit-image's checkerboard and horse silhouette (2026-12-03). ``--gate-only`` refits the gate
  and keeps the head.
- The operating point (after the fit; ``--operating-point`` moves it alone): the stacked features separate pets from
  non-pets better than Lite0's, so the gate can turn away fewer pets and still answer `neither` for the
  open-set floor's 97 % of non-pets. Which share, among 0.5 % down to 0.1 % of the calibration fifth, is
  chosen by 5-fold cross-validation on the fitting half of ``neither`` alone: the fewest pets turned away
  at which the refitted gates still answer `neither` for 97 % of the folds' held-apart non-pets (every fold
  fits on the generated pictures; none counts them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import GridSearchCV

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.common
from benchmarks.common import (  # noqa: E402
    DATA,
    OPERATING_POINT_FOLDS,
    calibration_slice,
    cross_validated_operating_point,
    neither_split,
    operating_point_record,
)
from benchmarks.synthetic_graphics import prepared_graphics  # noqa: E402
from catdog.data import prepare
from catdog.features import FeatureStore, PooledFeatures, cache_key, extract, onnx_feature_fn
from catdog.fsutil import default_cache_dir
from catdog.models.builtin import LARGE_BACKBONES, stacked_backbones
from catdog.models.files import WEIGHTS_DIR, builtin_config, large_config
from catdog.models.gate import (
    OPEN_SET,
    TARGET_PETS_TURNED_AWAY,
    OpenSetGate,
    fit_gate,
    gate_inputs,
    move_operating_point,
)
from catdog.models.pretrained import IMAGENET_CAT_CLASSES, IMAGENET_DOG_CLASSES, pretrained_preprocess

GATE_C = 100.0  # the built-in gate's (chosen there by cross-validation on the fitting half of `neither`)
HEAD_CS = (0.001, 0.003, 0.01, 0.03, 0.1)  # scikit-learn's C for the head, chosen among by cross-validation
PET_CLASSES = torch.tensor(IMAGENET_CAT_CLASSES + IMAGENET_DOG_CLASSES)


class Features:
    """The stacked backbones' pooled features of (image, view) jobs, computed once and cached."""

    def __init__(self, stack, pre, cache_dir: Path) -> None:
        self.stack, self.pre = stack.eval(), pre
        key = cache_key("builtin-large-" + "+".join(LARGE_BACKBONES), pre)
        self.store = FeatureStore(cache_dir, key)
        self.fn = onnx_feature_fn(PooledFeatures(self.stack), cache_dir / "onnx" / f"{key}.onnx", pre.image_size)

    def __call__(self, data, jobs: list[tuple[int, int]]) -> np.ndarray:
        done = extract(data, jobs, self.pre, self.store, self.fn, progress=Progress(len(jobs)))
        assert len(done) == len(jobs)
        return self.store.read([f"{data.hashes[i]}:{v}" for i, v in jobs])

    def gate_inputs(self, features: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(features)
        with torch.no_grad():
            return gate_inputs(x, self.stack.get_classifier()(x), PET_CLASSES)


class Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.shown = total, 0, -1

    def __call__(self, n: int) -> None:
        self.done += n
        if self.done * 10 // self.total != self.shown:
            self.shown = self.done * 10 // self.total
            print(f"  features: {self.done}/{self.total}", file=sys.stderr, flush=True)


def fit_head(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Standardised logistic regression, C by 3-fold CV, folded into a 2-class linear layer ``(weight, bias)``."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    search = GridSearchCV(
        LogisticRegression(max_iter=2000), {"C": list(HEAD_CS)}, cv=3, scoring="neg_log_loss", n_jobs=1
    )
    search.fit((x - mean) / std, y)
    fit = search.best_estimator_
    w = fit.coef_[0] / std  # z = w·x + b is the logit of class 1 (dog); the two rows give softmax = sigmoid(z)
    b = fit.intercept_[0] - float((fit.coef_[0] * mean / std).sum())
    weight = torch.tensor(np.stack([-w / 2, w / 2]), dtype=torch.float32)
    bias = torch.tensor([-b / 2, b / 2], dtype=torch.float32)
    scores = {f"C={c:g}": round(-float(s), 5) for c, s in zip(HEAD_CS, search.cv_results_["mean_test_score"])}
    return weight, bias, {"C": search.best_params_["C"], "cv_log_loss": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="holds dogs-vs-cats/train and neither/")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--measure-only", action="store_true", help="keep the fitted files; measure them again")
    mode.add_argument("--operating-point", action="store_true", help="keep the fitted gate; move its operating point")
    mode.add_argument("--gate-only", action="store_true", help="keep the fitted head; refit the gate")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if not (args.measure_only or args.operating_point):
        fit(args.data, refit_head=not args.gate_only)
    record = large_config() if args.measure_only else choose_operating_point(args.data)
    record["through_predict"] = through_predict(args.data)
    (WEIGHTS_DIR / "builtin_large.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def fit(data_dir: Path, refit_head: bool = True) -> dict:
    """Fit the head (or keep the shipped one) and the gate, write their files, and return the record."""
    cache_dir = default_cache_dir()
    stack = stacked_backbones()
    pre = pretrained_preprocess(stack.backbones[-1])
    features = Features(stack, pre, cache_dir)

    dev = prepare(data_dir / "dogs-vs-cats" / "train", pre, cache_dir)
    split_settings = builtin_config()["split"]
    split = dev.split(split_settings["val_fraction"], split_settings["test_fraction"])
    others = prepare(data_dir / "neither", pre, cache_dir)
    halves = neither_split(others.hashes, others.labels)

    print("features of the training split (and mirrors)", file=sys.stderr)
    train_jobs = [(i, v) for i in split["train"] for v in (0, 1)]
    x_train = features(dev, train_jobs)
    y_train = np.array([dev.labels[i] for i, _ in train_jobs])
    held_out = {part: features(dev, [(i, 0) for i in split[part]]) for part in ("val", "test")}
    negatives = features(others, [(i, v) for i in halves["fit"] for v in (0, 1)])
    held_out_others = features(others, [(i, 0) for i in halves["held_out"]])
    graphics = prepared_graphics(pre, cache_dir)
    x_graphics = features(graphics, [(i, v) for i in range(len(graphics.paths)) for v in (0, 1)])

    head_file = WEIGHTS_DIR / "builtin_large_head.safetensors"
    if refit_head:
        print("fitting the head", file=sys.stderr)
        weight, bias, choice = fit_head(x_train, y_train)
        save_file({"weight": weight, "bias": bias}, str(head_file))
    else:
        shipped = load_file(str(head_file))
        weight, bias = shipped["weight"], shipped["bias"]
        choice = {k: v for k, v in large_config()["head"].items() if k != "fitted_on"}

    print("fitting the gate", file=sys.stderr)
    fit_pets, calibration = calibration_slice(split["train"], dev.hashes)
    row = {i: r for r, (i, v) in enumerate(train_jobs) if v == 0}
    gate, turned_away = fit_gate(
        features.gate_inputs(x_train[[row[i] for i in fit_pets]]),
        features.gate_inputs(np.concatenate([negatives, x_graphics])),
        features.gate_inputs(x_train[[row[i] for i in calibration]]),
        GATE_C,
    )
    save_file(
        {k: v.contiguous() for k, v in gate.state_dict().items()}, str(WEIGHTS_DIR / "builtin_large_gate.safetensors")
    )

    metrics = {}
    for part, x in held_out.items():
        labels = np.array([dev.labels[i] for i in split[part]])
        probs = torch.softmax(torch.from_numpy(x) @ weight.T + bias, dim=1).numpy()
        metrics |= {
            f"{part}_images": len(labels),
            f"{part}_accuracy": round(float(accuracy_score(labels, probs.argmax(1))), 4),
            f"{part}_log_loss": round(float(log_loss(labels, probs, labels=[0, 1])), 4),
        }
    x_val, x_held_out = features.gate_inputs(held_out["val"]), features.gate_inputs(held_out_others)
    gate_metrics = held_out_gate_metrics(gate, x_val, x_held_out)
    record = {
        "classes": dev.classes,
        "architecture": "+".join(LARGE_BACKBONES),
        "backbones": list(LARGE_BACKBONES),
        "temperature": 1.0,
        "split": split_settings,
        "head": {"fitted_on": f"{len(split['train'])} dev training photos and their mirrors", **choice},
        "metrics": metrics,
        "gate": {
            "kind": OPEN_SET,
            "threshold": 0.5,
            "score": "logistic fit on the stacked backbones' normalised pooled features and the logit of "
            "their mean ImageNet pet mass",
            "fitted_on": {
                "pets": f"{len(fit_pets)} dev training photos",
                "non_pets": f"{len(halves['fit'])} photos of shared/data/neither (its fitting half), and their mirrors",
                "graphics": f"{len(graphics.paths)} generated pictures that are not photos "
                "(benchmarks/synthetic_graphics.py), and their mirrors",
                "operating_point": f"{len(calibration)} dev training photos kept from the fit: "
                f"{turned_away:.2%} score below 0.5 (target {TARGET_PETS_TURNED_AWAY:.1%})",
            },
            "held_out": gate_metrics,
        },
        "built_by": "scripts/build_builtin_large.py",
    }
    (WEIGHTS_DIR / "builtin_large.json").write_text(json.dumps(record, indent=2) + "\n")  # Predictor.load reads it
    return record


def held_out_gate_metrics(gate: OpenSetGate, x_val: torch.Tensor, x_others: torch.Tensor) -> dict:
    """The gate on the validation pets and the held-out half of `neither` (gate inputs of each)."""
    val_scores = torch.sigmoid(x_val @ gate.weight + gate.bias).numpy()
    other_scores = torch.sigmoid(x_others @ gate.weight + gate.bias).numpy()
    return {
        "val_pets_turned_away": round(float((val_scores < 0.5).mean()), 4),
        "held_out_non_pets_answered_neither": round(float((other_scores < 0.5).mean()), 4),
        "roc_auc": round(float(roc_auc_score(np.r_[np.ones(len(val_scores)), np.zeros(len(other_scores))],
                                              np.r_[val_scores, other_scores])), 4),
    }  # fmt: skip


def choose_operating_point(data_dir: Path) -> dict:
    """Choose the gate's operating point by cross-validation on the fitting half of `neither`; move it there.

    Each fold refits the gate (as :func:`fit`) without a fifth of the fitting half's non-pets, sets its
    bias at each of ``OPERATING_TARGETS`` on the calibration pets, and counts the fifth held apart that
    it answers `neither`. The shipped gate's bias then moves to the chosen target; its weights stay.
    """
    stack = stacked_backbones()
    pre = pretrained_preprocess(stack.backbones[-1])
    features = Features(stack, pre, default_cache_dir())
    dev = prepare(data_dir / "dogs-vs-cats" / "train", pre, default_cache_dir())
    split_settings = builtin_config()["split"]
    split = dev.split(split_settings["val_fraction"], split_settings["test_fraction"])
    others = prepare(data_dir / "neither", pre, default_cache_dir())
    halves = neither_split(others.hashes, others.labels)
    fit_pets, calibration = calibration_slice(split["train"], dev.hashes)

    print("features of the gate's pets, calibration pets and non-pets", file=sys.stderr)
    x_pets = features.gate_inputs(features(dev, [(i, 0) for i in fit_pets]))
    x_calibration = features.gate_inputs(features(dev, [(i, 0) for i in calibration]))
    x_others = {v: features.gate_inputs(features(others, [(i, v) for i in halves["fit"]])) for v in (0, 1)}
    graphics = prepared_graphics(pre, default_cache_dir())
    x_graphics = features.gate_inputs(features(graphics, [(i, v) for i in range(len(graphics.paths)) for v in (0, 1)]))
    print(f"{OPERATING_POINT_FOLDS}-fold cross-validation of the operating point", file=sys.stderr)
    fit_hashes = [others.hashes[i] for i in halves["fit"]]
    chosen, shares = cross_validated_operating_point(
        x_pets, x_others[0], x_others[1], x_calibration, fit_hashes, GATE_C, x_graphics
    )

    gate = OpenSetGate(x_pets.shape[1] - 1)
    gate_file = WEIGHTS_DIR / "builtin_large_gate.safetensors"
    gate.load_state_dict(load_file(str(gate_file)))
    turned_away = move_operating_point(gate, x_calibration, chosen)
    save_file({k: v.contiguous() for k, v in gate.state_dict().items()}, str(gate_file))

    x_val = features.gate_inputs(features(dev, [(i, 0) for i in split["val"]]))
    x_held_out = features.gate_inputs(features(others, [(i, 0) for i in halves["held_out"]]))
    record = large_config()
    record["gate"]["held_out"] = held_out_gate_metrics(gate, x_val, x_held_out)
    record["gate"]["fitted_on"].update(operating_point_record(len(calibration), turned_away, chosen, shares))
    return record


def through_predict(data_dir: Path) -> dict:
    """The model as ``catdog predict --model builtin-large`` runs it, on the held-out photos.

    Accuracy counts a pet answered `neither` as wrong; the held-out half
    of `neither` is reported without the wild canids and felids (reported apart in docs/benchmarks.md).
    """
    from benchmarks.common import WILD_SUBJECTS, dev_split, held_out_neither
    from catdog.predict import Predictor

    predictor = Predictor.load("builtin-large")
    out = {}
    for part in ("test", "val"):
        photos = dev_split(data_dir / "dogs-vs-cats" / "train", part)
        answers = [a.label for a in predictor.predict_paths([path for path, _ in photos])]
        out[f"{part}_accuracy"] = round(float(np.mean([a == t for a, (_, t) in zip(answers, photos)])), 4)
        out[f"{part}_pets_turned_away"] = round(float(np.mean([a == "neither" for a in answers])), 4)
    others = held_out_neither(data_dir / "neither")
    photos = [p for subject, paths in others.items() if subject not in WILD_SUBJECTS for p in paths]
    answers = [a.label for a in predictor.predict_paths(photos)]
    out["held_out_non_pets_answered_neither"] = round(float(np.mean([a == "neither" for a in answers])), 4)
    out["held_out_non_pets"] = len(photos)
    return out


if __name__ == "__main__":
    main()
