"""Fit the built-in model's cat/dog head and choose its `neither` gate, from cached features.

Input: an .npz with ``files`` (dev photo paths), ``feats`` (N x 1280 pooled EfficientNet-Lite0
features, eval preprocessing) and ``logits`` (N x 1000 ImageNet logits), plus an .npz of the
same for photos that show no cat or dog (scikit-image's and scikit-learn's bundled photos).

    python scripts/build_builtin_head.py DEV.npz NONPET.npz

Writes src/catdog/weights/builtin_head.{safetensors,json}. The split is catdog's own
content-hash split (10% val), so the 400-image accuracy test draws from photos the head never saw.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

from catdog.data.hashing import HashIndex
from catdog.data.split import split_indices
from catdog.models.pretrained import IMAGENET_CAT_CLASSES, IMAGENET_DOG_CLASSES

OUT = Path(__file__).resolve().parents[1] / "src" / "catdog" / "weights"
GATE_THRESHOLD = 0.1  # chosen below: rejects <1% of pet photos and most non-pet photos
C = 0.03  # inverse L2 strength, the best of 0.01..1 on held-out photos


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    t = torch.zeros(1, requires_grad=True)  # log temperature
    x, y = torch.tensor(logits), torch.tensor(labels)
    opt = torch.optim.LBFGS([t], lr=0.1, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(t.exp().detach())


def main(dev_npz: str, nonpet_npz: str) -> None:
    dev, nonpet = np.load(dev_npz), np.load(nonpet_npz)
    files = [Path(f) for f in dev["files"]]
    labels = np.array([0 if f.name.startswith("cat") else 1 for f in files])
    hashes = HashIndex(None).hashes(files)
    split = split_indices(hashes, list(labels), val_fraction=0.1)
    train, val = np.array(split["train"]), np.array(split["val"])
    feats = dev["feats"].astype(np.float64)

    model = LogisticRegression(C=C, max_iter=5000).fit(feats[train], labels[train])
    # Binary logistic regression → the equivalent two-logit linear layer [cat, dog].
    w, b = model.coef_[0], model.intercept_[0]
    weight = np.stack([-w / 2, w / 2]).astype(np.float32)
    bias = np.array([-b / 2, b / 2], dtype=np.float32)
    val_logits = feats[val] @ weight.T.astype(np.float64) + bias
    temperature = fit_temperature(val_logits, labels[val])
    probs = softmax(val_logits / temperature)

    pets = list(IMAGENET_CAT_CLASSES) + list(IMAGENET_DOG_CLASSES)
    pet_dev = softmax(dev["logits"].astype(np.float64))[:, pets].sum(1)
    names = [str(n) for n in nonpet["names"]]
    pet_nonpet = softmax(nonpet["logits"].astype(np.float64))[:, pets].sum(1)
    negatives = [i for i, n in enumerate(names) if n != "chelsea"]  # skimage's 'chelsea' is a cat

    # The ImageNet-only rule, for the record: cat when log P(cat classes) - log P(dog classes) > bias.
    imagenet = softmax(dev["logits"].astype(np.float64))
    ratio = np.log(imagenet[:, IMAGENET_CAT_CLASSES].sum(1)) - np.log(imagenet[:, IMAGENET_DOG_CLASSES].sum(1))
    biases = np.linspace(-8, 4, 241)
    best_bias = float(biases[np.argmax([((ratio[train] <= bb) == labels[train]).mean() for bb in biases])])

    report = {
        "classes": ["cat", "dog"],
        "architecture": "tf_efficientnet_lite0",
        "temperature": round(temperature, 4),
        "gate": {
            "threshold": GATE_THRESHOLD,
            "score": "ImageNet probability mass on domestic cats (281-285) and dogs (151-268)",
            "pet_photos_rejected": round(float((pet_dev < GATE_THRESHOLD).mean()), 4),
            "nonpet_photos_rejected": f"{int((pet_nonpet[negatives] < GATE_THRESHOLD).sum())}/{len(negatives)}",
        },
        "metrics": {
            "val_images": int(len(val)),
            "val_accuracy": round(float(accuracy_score(labels[val], probs.argmax(1))), 4),
            "val_log_loss": round(float(log_loss(labels[val], probs)), 4),
            "imagenet_naive_sum_val_accuracy": round(float(((ratio[val] <= 0) == labels[val]).mean()), 4),
            "imagenet_prior_corrected_val_accuracy": round(float(((ratio[val] <= best_bias) == labels[val]).mean()), 4),
            "imagenet_prior_corrected_bias": best_bias,
        },
        "trained_by": (
            "scripts/build_builtin_head.py: scikit-learn LogisticRegression(C=0.03) on pooled "
            f"EfficientNet-Lite0 features of the {len(train)} train-split photos of dogs-vs-cats/train "
            "(catdog's content-hash split, 10% val)"
        ),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(
        {"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)}, str(OUT / "builtin_head.safetensors")
    )
    (OUT / "builtin_head.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:3])
