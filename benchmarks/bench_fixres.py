"""Frozen features at larger input sizes than the backbones were trained at ("FixRes").

A net trained on random-resized crops sees its objects larger in training than in a center crop of the
same size at test time; testing at a larger size makes them match again (Touvron et al., "Fixing the
train-test resolution discrepancy", 2019). catdog's fine-tune recipe already predicts at 288 px. This
measures what the larger size does for frozen features: the linear probe of ``bench_features``
(scikit-learn's logistic regression on standardised pooled features, C chosen on the validation split by
log loss) on EfficientNet-Lite0 at 224 to 320 px, Lite1 and Lite2 at about 1.25 times their own sizes, and
the three side by side there, fitted on the dev training split's photos (no mirror views: these sizes
would need a second feature pass each), reported on the validation split and on the test split that no
choice saw. The cost is each candidate's pooled-features ONNX graph, batch 1 and 32, timed in turns.

The features come from (and go into) catdog's feature cache under the keys the open-set gate's fitting uses
(pooled features with blocks 4-6 beside them), so the gate's own runs at 224 and 288 px fill part of it.
"""

from __future__ import annotations

import numpy as np

from benchmarks.bench_features import sized_cost
from benchmarks.common import DEV_DIR, Result, need_dev_data, say

COMMAND = "python -m benchmarks fixres"
# (backbone, input size): the backbone's own size first, then larger ones.
SINGLE = (
    ("tf_efficientnet_lite0", 224),
    ("tf_efficientnet_lite0", 256),
    ("tf_efficientnet_lite0", 288),
    ("tf_efficientnet_lite0", 320),
    ("tf_efficientnet_lite1", 300),
    ("tf_efficientnet_lite2", 324),
)
QUICK = (("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite0", 288))
SIDE_BY_SIDE = (("tf_efficientnet_lite0", 288), ("tf_efficientnet_lite1", 300), ("tf_efficientnet_lite2", 324))
STRENGTHS = (0.001, 0.003, 0.01)  # logistic regression's C, chosen on the validation split
TAPS = (4, 5, 6)  # the gate's cache key: its fitting features hold these blocks beside the pooled features


def name_of(architecture: str, size: int) -> str:
    return f"{architecture.removeprefix('tf_efficientnet_')} at {size} px"


def features(architecture: str, size: int, quick: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``({part: (n, dim) pooled features}, {part: labels})`` of the dev split's photos at ``size`` px."""
    from dataclasses import replace

    from catdog.data import prepare
    from catdog.features import pretrained_features
    from catdog.fsutil import default_cache_dir
    from catdog.models.files import builtin_config
    from catdog.models.pretrained import create_pretrained, pretrained_preprocess

    split = builtin_config()["split"]
    pre = replace(pretrained_preprocess(create_pretrained(architecture)), image_size=size)
    cache_dir = default_cache_dir()
    data = prepare(DEV_DIR, pre, cache_dir)
    parts = data.split(split["val_fraction"], split["test_fraction"])
    if quick:
        parts = {name: indices[:: max(1, len(indices) // 300)] for name, indices in parts.items()}
    out, labels = {}, {}
    for name, indices in parts.items():
        pooled, _, _ = pretrained_features(data, [(i, 0) for i in indices], pre, cache_dir, architecture, TAPS, say)
        out[name], labels[name] = pooled, np.array([data.labels[i] for i in indices])
    return out, labels


def probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict:
    """Fit on train, choose C on val by log loss; accuracy on val and test, and the test log loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x["train"])
    fits = [LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x["train"]), y["train"]) for c in STRENGTHS]
    model = min(fits, key=lambda m: log_loss(y["val"], m.predict_proba(scaler.transform(x["val"]))))
    figures: dict = {"C": model.C}
    for part in ("val", "test"):
        probabilities = model.predict_proba(scaler.transform(x[part]))
        figures[f"{part}_accuracy"] = 100 * float(np.mean(probabilities.argmax(1) == y[part]))
        figures[f"n_{part}"] = len(y[part])
    figures["test_log_loss"] = float(log_loss(y["test"], model.predict_proba(scaler.transform(x["test"]))))
    return figures


def run(quick: bool) -> list[Result]:
    need_dev_data()
    # Each size fills its own pixel cache of the 23,000 dev photos (5-9 GB): the quick run takes two.
    single = QUICK if quick else SINGLE
    x, y = {}, None
    for candidate in single:
        x[candidate], y = features(*candidate, quick)
    candidates = {name_of(*c): (c,) for c in single}
    if not quick:
        candidates["lite0 + lite1 + lite2 at " + " / ".join(str(s) for _, s in SIDE_BY_SIDE) + " px"] = SIDE_BY_SIDE
    timing = sized_cost(single, rounds=2 if quick else 5)
    base = timing[single[0]]
    results = []
    for name, members in candidates.items():
        joined = {part: np.concatenate([x[m][part] for m in members], axis=-1) for part in ("train", "val", "test")}
        f = probe(joined, y)
        ms = {batch: sum(timing[m][batch] for m in members) for batch in (1, 32)}

        def row(figure, value, unit, notes="", name=name):
            return Result("fixres", f"frozen {name}: {figure}", round(float(value), 4), unit, COMMAND, notes=notes)

        results += [
            row(f"val accuracy ({f['n_val']})", f["val_accuracy"], "%", notes=f"C = {f['C']}"),
            row(f"test accuracy ({f['n_test']})", f["test_accuracy"], "%"),
            row("test log loss", f["test_log_loss"], ""),
            row("features' cost over lite0 at 224 px, ONNX batch 1", ms[1] / base[1], "x"),
            row("features' cost over lite0 at 224 px, ONNX batch 32", ms[32] / base[32], "x"),
        ]
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in f.items()}, ms, flush=True)
    return results
