"""The `neither` gate's candidates side by side, on photos none of them was fitted or tuned on.

    python -m benchmarks.gate_candidates [--data DATA_DIR]

Every candidate reads pretrained EfficientNet-Lite0 (the built-in backbone): its pooled features and
its ImageNet logits, from catdog's feature cache. What a candidate fits (a prototype bank, class means
and a covariance, a logistic fit) comes from the dev training pets less the calibration slice and from
the fitting half of ``neither/``; its threshold is where 0.5 % of the calibration slice's pets score
below. The figures are on the dev validation pets (2,237) and the held-out half of ``neither/``
(wild canids and felids apart): the same split as ``python -m benchmarks neither``. Prints a Markdown
table for docs/benchmarks.md. About 3 minutes on 2 cores with a warm cache.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from benchmarks.common import DATA, WILD_SUBJECTS, calibration_slice, neither_split, say
from catdog.data import prepare
from catdog.features import pretrained_features
from catdog.fsutil import default_cache_dir
from catdog.models.files import BUILTIN_BACKBONE
from catdog.models.pretrained import (
    IMAGENET_CAT_CLASSES,
    IMAGENET_DOG_CLASSES,
    create_pretrained,
    pretrained_preprocess,
)

PETS = np.array(IMAGENET_CAT_CLASSES + IMAGENET_DOG_CLASSES)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def unit(f: np.ndarray) -> np.ndarray:
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def pet_mass_logit(logits: np.ndarray) -> np.ndarray:
    mass = np.exp(log_softmax(logits)[:, PETS]).sum(1).clip(1e-6, 1 - 1e-6)
    return np.log(mass) - np.log1p(-mass)


def candidates(fit: dict) -> dict:
    """name -> score function of (features, logits); higher means more like a pet."""
    pets_f, others_f, others_l = fit["pets_f"], fit["others_f"], fit["others_l"]
    out = {
        "ImageNet pet mass (the gate before)": lambda f, z: pet_mass_logit(z),
        "pet energy (logsumexp of pet logits)": lambda f, z: np.log(np.exp(z[:, PETS] - 10).sum(1)) + 10,
        "max ImageNet logit": lambda f, z: z.max(1),
    }
    rng = np.random.default_rng(0)
    bank_all = unit(pets_f)
    for size in (1000, len(bank_all)):
        bank = bank_all[rng.choice(len(bank_all), min(size, len(bank_all)), replace=False)]
        for k in (1, 10):
            out[f"kNN cosine, k={k}, {len(bank)} pets"] = lambda f, z, b=bank, k=k: (
                -np.sort(-(unit(f) @ b.T), 1)[:, k - 1]
            )
    labels = fit["pets_y"]
    means = [pets_f[labels == c].mean(0) for c in (0, 1)]
    centred = np.concatenate([pets_f[labels == c] - means[c] for c in (0, 1)])
    precision = np.linalg.inv(LedoitWolf().fit(centred).covariance_)
    out["Mahalanobis, class-conditional, Ledoit-Wolf"] = lambda f, z: (
        -np.min([np.einsum("ij,jk,ik->i", f - m, precision, f - m) for m in means], axis=0)
    )

    def outlier_exposure(transform, c, views=None):
        negatives = transform(others_f, others_l) if views is None else views
        x = np.concatenate([transform(pets_f, fit["pets_l"]), negatives])
        y = np.r_[np.ones(len(pets_f)), np.zeros(len(negatives))]
        model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(x, y)
        return lambda f, z: model.decision_function(transform(f, z))

    features = lambda f, z: unit(f)  # noqa: E731
    with_mass = lambda f, z: np.c_[unit(f), pet_mass_logit(z) / 10]  # noqa: E731
    for c in (1, 10, 100):
        out[f"outlier exposure: features, C={c}"] = outlier_exposure(features, c)
    out["outlier exposure: ImageNet log-probabilities, C=1"] = outlier_exposure(lambda f, z: log_softmax(z), 1)
    mirrored = np.concatenate([with_mass(others_f, others_l), with_mass(fit["mirror_f"], fit["mirror_l"])])
    out["outlier exposure: features + pet mass, C=100, mirrors (chosen)"] = outlier_exposure(with_mass, 100, mirrored)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    started = time.time()
    cache_dir = default_cache_dir()
    pre = pretrained_preprocess(create_pretrained(BUILTIN_BACKBONE))
    dev = prepare(f"{args.data}/dogs-vs-cats/train", pre, cache_dir)
    split = dev.split(0.1)
    fit_pets, calibration = calibration_slice(split["train"], dev.hashes)
    others = prepare(f"{args.data}/neither", pre, cache_dir)
    halves = neither_split(others.hashes, others.labels)

    def feats(data, indices, view=0):
        return pretrained_features(data, [(i, view) for i in indices], pre, cache_dir, BUILTIN_BACKBONE, say=say)[:2]

    fit = {}
    fit["pets_f"], fit["pets_l"] = feats(dev, fit_pets)
    fit["pets_y"] = np.array([dev.labels[i] for i in fit_pets])
    fit["others_f"], fit["others_l"] = feats(others, halves["fit"])
    fit["mirror_f"], fit["mirror_l"] = feats(others, halves["fit"], view=1)
    cal = feats(dev, calibration)
    val = feats(dev, split["val"])
    wild_names = {others.classes.index(name) for name in WILD_SUBJECTS if name in others.classes}
    held = [i for i in halves["held_out"] if others.labels[i] not in wild_names]
    wild = [i for i in halves["held_out"] if others.labels[i] in wild_names]
    held_f, wild_f = feats(others, held), feats(others, wild)

    print(f"fitted on {len(fit_pets)} pets + {len(halves['fit'])} non-pets; threshold from {len(calibration)} pets;")
    print(
        f"reported on {len(split['val'])} dev val pets, {len(held)} held-out non-pets, {len(wild)} wild canids/felids\n"
    )
    columns = ["ROC AUC", "non-pets answered neither", "pets turned away", "wild answered neither"]
    print(f"| candidate | {' | '.join(columns)} | non-pets kept at 95 % of pets |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, score in candidates(fit).items():
        s_cal, s_val, s_held, s_wild = (score(*pair) for pair in (cal, val, held_f, wild_f))
        threshold = np.quantile(s_cal, 0.005)
        auc = roc_auc_score(np.r_[np.ones(len(s_val)), np.zeros(len(s_held))], np.r_[s_val, s_held])
        fpr95 = np.mean(s_held >= np.quantile(s_val, 0.05))
        print(
            f"| {name} | {auc:.4f} | {np.mean(s_held < threshold):.1%} | {np.mean(s_val < threshold):.2%} | "
            f"{np.mean(s_wild < threshold):.1%} | {fpr95:.1%} |"
        )
    print(f"\n({time.time() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
