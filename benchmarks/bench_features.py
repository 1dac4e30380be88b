"""Frozen ImageNet features of the backbones catdog ships: EfficientNet-Lite0, Lite1, Lite2, and all three.

What the pretrained weights in the package can do for cat/dog with no fine-tuning: a linear probe
(scikit-learn's logistic regression on standardised pooled features) on each backbone's features at
its own input size (224, 240, 260 px) and on their concatenation (3,840 values), fitted on the dev
training split (each photo and its mirror image), its strength C chosen on the validation split, and
reported on the validation split and on the test split that no choice saw (the built-in head's
content-hash split: benchmarks.common.dev_split). "flip TTA" averages the probabilities of the photo
and its mirror. The cost is each backbone's pooled-features graph in ONNX Runtime, batch 1 and 32
(the concatenation runs all three), timed in turns in one process (benchmarks.common.interleaved_ms).

The features come from (and go into) catdog's feature cache, the one ``catdog train --freeze
backbone`` fills: after the frozen recipes of the three backbones, only the mirror views of the
validation and test photos are computed here.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import DEV_DIR, Result, interleaved_ms, need_dev_data, say

COMMAND = "python -m benchmarks features"
BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
STRENGTHS = (0.001, 0.003, 0.01, 0.1)  # logistic regression's C, chosen on the validation split


def features(architecture: str, quick: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], object]:
    """``({part: (n, 2, dim) features of each photo and its mirror}, {part: labels}, preprocess)``."""
    from catdog.data import prepare
    from catdog.features import pretrained_features
    from catdog.fsutil import default_cache_dir
    from catdog.models.files import builtin_config
    from catdog.models.pretrained import create_pretrained, pretrained_preprocess

    split = builtin_config()["split"]
    pre = pretrained_preprocess(create_pretrained(architecture))
    cache_dir = default_cache_dir()
    data = prepare(DEV_DIR, pre, cache_dir)
    parts = data.split(split["val_fraction"], split["test_fraction"])
    if quick:
        parts = {name: indices[:: max(1, len(indices) // 300)] for name, indices in parts.items()}
    out, labels = {}, {}
    for name, indices in parts.items():
        jobs = [(i, view) for i in indices for view in (0, 1)]
        pooled, _, _ = pretrained_features(data, jobs, pre, cache_dir, architecture, say=say)
        out[name] = pooled.reshape(len(indices), 2, -1)
        labels[name] = np.array([data.labels[i] for i in indices])
    return out, labels, pre


def probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict:
    """Fit on train (both views), choose C on val (view 0); accuracy and log loss on val and test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    train = x["train"].reshape(-1, x["train"].shape[-1])
    scaler = StandardScaler().fit(train)
    train_y = np.repeat(y["train"], 2)

    def probabilities(model, part: str, view: int) -> np.ndarray:
        return model.predict_proba(scaler.transform(x[part][:, view]))

    best = None
    for strength in STRENGTHS:
        model = LogisticRegression(C=strength, max_iter=3000).fit(scaler.transform(train), train_y)
        loss = log_loss(y["val"], probabilities(model, "val", 0))
        if best is None or loss < best[0]:
            best = (loss, strength, model)
    _, strength, model = best
    figures = {"C": strength}
    for part in ("val", "test"):
        plain = probabilities(model, part, 0)
        flipped = (plain + probabilities(model, part, 1)) / 2
        figures[f"{part}_accuracy"] = 100 * float(np.mean(plain.argmax(1) == y[part]))
        figures[f"{part}_accuracy_tta"] = 100 * float(np.mean(flipped.argmax(1) == y[part]))
        figures[f"{part}_log_loss"] = float(log_loss(y[part], plain))
        figures[f"n_{part}"] = len(y[part])
    return figures


def cost(architectures: tuple[str, ...], rounds: int) -> dict[str, dict[int, float]]:
    """Milliseconds per photo of each backbone's pooled-features ONNX graph at its own size, batch 1 and 32."""
    timed = sized_cost(tuple((architecture, None) for architecture in architectures), rounds)
    return {architecture: ms for (architecture, _), ms in timed.items()}


def sized_cost(
    candidates: tuple[tuple[str, int | None], ...], rounds: int
) -> dict[tuple[str, int | None], dict[int, float]]:
    """Milliseconds per photo of each ``(backbone, input size)``'s pooled-features ONNX graph, batch 1 and 32,
    timed in turns; a size of None is the backbone's own."""
    from dataclasses import replace

    from catdog.features import PooledFeatures, cache_key, onnx_feature_fn
    from catdog.fsutil import default_cache_dir
    from catdog.models.pretrained import create_pretrained, pretrained_preprocess
    from catdog.onnx_backend import session

    fns = {}
    for architecture, size in candidates:
        backbone = create_pretrained(architecture).eval()
        pre = pretrained_preprocess(backbone)
        pre = replace(pre, image_size=size or pre.image_size)
        path = default_cache_dir() / "onnx" / f"{cache_key(architecture, pre)}.onnx"
        if not path.exists():  # written by the feature extraction; exported here otherwise
            onnx_feature_fn(PooledFeatures(backbone), path, pre.image_size)
        fns[(architecture, size)] = features_of(session(path), pre.image_size)
    out: dict[tuple[str, int | None], dict[int, float]] = {c: {} for c in candidates}
    for batch in (1, 32):
        ms = interleaved_ms(fns, batch, repeats=rounds * max(1, 64 // batch), rounds=rounds)
        for candidate in candidates:
            out[candidate][batch] = ms[candidate] / batch
    return out


def features_of(sess, size: int):
    """``batch size -> features`` of random images at ``size`` px (the same arrays on every call)."""
    inputs = {n: np.random.default_rng(0).normal(size=(n, 3, size, size)).astype(np.float32) for n in (1, 32)}
    return lambda batch: sess.run(None, {sess.get_inputs()[0].name: inputs[batch]})


def run(quick: bool) -> list[Result]:
    need_dev_data()
    x, y = {}, None
    for architecture in BACKBONES:
        x[architecture], y, _ = features(architecture, quick)
    candidates = {name.removeprefix("tf_efficientnet_"): {name: x[name]} for name in BACKBONES}
    candidates["lite0+lite1+lite2"] = x
    timing = cost(BACKBONES, rounds=2 if quick else 5)
    results = []
    for name, parts in candidates.items():
        joined = {part: np.concatenate([parts[a][part] for a in parts], axis=-1) for part in ("train", "val", "test")}
        f = probe(joined, y)
        ms = {batch: sum(timing[a][batch] for a in parts) for batch in (1, 32)}

        def row(figure, value, unit, notes="", name=name):
            return Result("features", f"frozen {name}: {figure}", round(float(value), 4), unit, COMMAND, notes=notes)

        results += [
            row(f"val accuracy ({f['n_val']})", f["val_accuracy"], "%", notes=f"C = {f['C']}"),
            row(f"test accuracy ({f['n_test']})", f["test_accuracy"], "%"),
            row("test accuracy, flip TTA", f["test_accuracy_tta"], "%"),
            row("val accuracy, flip TTA", f["val_accuracy_tta"], "%"),
            row("test log loss", f["test_log_loss"], ""),
            row("features, ONNX batch 1", ms[1], "ms/photo"),
            row("features, ONNX batch 32", ms[32], "ms/photo"),
        ]
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in f.items()}, ms, flush=True)
    return results
