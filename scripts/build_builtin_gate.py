"""Fit the built-in model's open-set `neither` gate and write it into the package.

    python scripts/build_builtin_gate.py [--data DATA_DIR] [--backbone tf_efficientnet_lite1]

The gate (catdog.models.gate) is a logistic fit on what pretrained EfficientNet-Lite0 sees — its
normalised pooled features and the logit of its ImageNet pet mass — at the size a model predicts
at: one gate per size in GATE_SIZES (224 px, the built-in model's, in ``builtin_gate.safetensors``;
288 px, the fine-tune recipe's test size, in ``builtin_gate_288.safetensors``). Features move with the
input size: on 288-px features and at 0.49 % of dev validation pets turned away, the 224-px gate
answered `neither` for 95.6 % of held-out non-pets, the 288-px gate for 98.0 %, and one gate fitted
on both sizes for 97.5 % (2026-12-02). Each is fitted on

- pets: the dev data's training split (catdog's content-hash split, as the built-in head's training
  run made it: builtin_head.json's ``split``), less a fifth of it (by content hash) kept apart as the
  calibration slice;
- non-pets: the fitting half of ``DATA_DIR/neither`` (split by content hash, per subject; the other
  half is held out for reporting), each photo and its mirror image. Foxes, wolves, hyenas and wild
  cats are `neither` by catdog's decision (docs/benchmarks.md), and their fitting half is fitted on too.

Besides the pooled features, a gate may read the pooled output of earlier blocks ("taps": an
EfficientNet-Lite's blocks 4, 5 and 6, the stages before its last convolution; TAP_CANDIDATES). Which it
reads is chosen by the same cross-validation as its operating point (below): the candidate that holds 97 %
of the non-pets while turning away the fewest pets (catdog.models.gate.choose_taps). The chosen taps are in
the gate file's metadata and in its record.

The bias then puts P(cat or dog) = 0.5 where a share of the calibration slice's pets score below: the
fewest, among 0.5 % down to 0.1 %, at which 5-fold cross-validation on the fitting half of `neither`
still answers `neither` for 97 % of its non-pets (benchmarks.common.cross_validated_operating_point), else 0.5 %.
A model ``catdog train`` makes on the backbone moves its gate's bias to that share of its own validation
pets. ``--operating-point`` makes that choice again for the shipped gates, moving only their bias. No
choice here looks at the dev validation split or at the held-out half of `neither`:
``python -m benchmarks neither`` reports on those. The regularisation (C = 100 in scikit-learn's
terms), the pet-mass input and the mirror views were chosen by 5-fold cross-validation on the
fitting half (the candidates and their figures: docs/benchmarks.md).

``--backbone`` fits the same gate, with the same choices, on another bundled backbone's features (Lite1 at
240 and 300 px, Lite2 at 260 px: GATE_SIZES) for the models ``catdog train`` makes on it; its files are
``gate_<lite1|lite2>_<size>.safetensors`` and its record goes into ``gate_backbones.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.common
from benchmarks.common import (  # noqa: E402
    DATA,
    calibration_slice,
    cross_validated_operating_point,
    neither_split,
    operating_point_record,
    say,
)
from benchmarks.synthetic_graphics import prepared_graphics  # noqa: E402
from catdog.data import prepare
from catdog.features import pretrained_features
from catdog.fsutil import default_cache_dir
from catdog.models.builtin import GATE_SIZES, builtin_gate_file, load_builtin_gate
from catdog.models.files import BUILTIN_BACKBONE, WEIGHTS_DIR, builtin_config
from catdog.models.gate import OPEN_SET, OpenSetGate, choose_taps, fit_gate, gate_inputs, move_operating_point
from catdog.models.pretrained import (
    IMAGENET_CAT_CLASSES,
    IMAGENET_DOG_CLASSES,
    create_pretrained,
    pretrained_preprocess,
)

C = 100.0  # scikit-learn's inverse regularisation strength, chosen by cross-validation (see the docstring)


# The blocks whose pooled output a gate may read besides the pooled features (an EfficientNet-Lite's last three
# stages before its last convolution), simplest first; the one kept is chosen by cross-validation (choose_taps).
TAP_CANDIDATES = ((), (6,), (5,), (4,), (5, 6), (4, 6), (4, 5), (4, 5, 6))
ALL_TAPS = (4, 5, 6)


def score(architecture: str, taps: tuple[int, ...] = ()) -> str:
    short = architecture.removeprefix("tf_efficientnet_").capitalize()
    if not taps:
        return f"logistic fit on {short}'s normalised pooled features and the logit of its ImageNet pet mass"
    blocks = f"block {taps[0]}" if len(taps) == 1 else f"blocks {', '.join(map(str, taps[:-1]))} and {taps[-1]}"
    return (
        f"logistic fit on {short}'s normalised pooled features, the normalised mean output of its {blocks}, "
        "and the logit of its ImageNet pet mass"
    )


def tap_label(taps: tuple[int, ...]) -> str:
    return "+".join(map(str, taps)) or "none"


def fit_at_size(
    data_dir: Path, pre, cache_dir, architecture: str, keep_weights: bool = False
) -> tuple[OpenSetGate, dict]:
    """The gate for features of ``pre``'s size, and what it was fitted on.

    With ``keep_weights``, the shipped gate's weights (and taps) stay and only its operating point is chosen.
    """
    dev = prepare(data_dir / "dogs-vs-cats" / "train", pre, cache_dir)
    split = builtin_config()["split"]  # the head's: the gate fits nothing of its validation or test photos
    train = dev.split(split["val_fraction"], split["test_fraction"])["train"]
    fit_pets, calibration = calibration_slice(train, dev.hashes)
    others = prepare(data_dir / "neither", pre, cache_dir)
    fit_others = neither_split(others.hashes, others.labels)["fit"]
    hashes = [others.hashes[i] for i in fit_others]
    graphics = prepared_graphics(pre, cache_dir)

    def evidence(data, jobs) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        features, logits, tapped = pretrained_features(data, jobs, pre, cache_dir, architecture, ALL_TAPS, say)
        tensors = [torch.from_numpy(np.ascontiguousarray(t)) for t in (features, logits, *tapped)]
        return tensors[0], tensors[1], dict(zip(ALL_TAPS, tensors[2:]))

    seen = {
        "pets": evidence(dev, [(i, 0) for i in fit_pets]),
        "calibration": evidence(dev, [(i, 0) for i in calibration]),
        "negatives": evidence(others, [(i, 0) for i in fit_others]),
        "mirrors": evidence(others, [(i, 1) for i in fit_others]),
        "graphics": evidence(graphics, [(i, v) for i in range(len(graphics.paths)) for v in (0, 1)]),
    }
    pet_classes = torch.tensor(IMAGENET_CAT_CLASSES + IMAGENET_DOG_CLASSES)

    def inputs(taps: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return {k: gate_inputs(f, lg, pet_classes, [t[i] for i in taps]) for k, (f, lg, t) in seen.items()}

    if keep_weights:
        gate = load_builtin_gate(seen["pets"][0].shape[1], pre.image_size, architecture)
        x = inputs(gate.taps)
        target, shares = cross_validated_operating_point(
            x["pets"], x["negatives"], x["mirrors"], x["calibration"], hashes, C, x["graphics"]
        )
        turned_away = move_operating_point(gate, x["calibration"], target)
        by_taps = None
    else:
        by_taps = {}
        for taps in TAP_CANDIDATES:
            x = inputs(taps)
            by_taps[taps] = cross_validated_operating_point(
                x["pets"], x["negatives"], x["mirrors"], x["calibration"], hashes, C, x["graphics"]
            )
            print(f"{pre.image_size} px, taps {tap_label(taps)}: {by_taps[taps]}", flush=True)
        chosen = choose_taps({taps: list(shares.values()) for taps, (_, shares) in by_taps.items()})
        target, shares = by_taps[chosen]
        x = inputs(chosen)
        negatives = torch.cat([x["negatives"], x["mirrors"], x["graphics"]])
        gate, turned_away = fit_gate(x["pets"], negatives, x["calibration"], C, target, chosen)
    fitted_on = {
        "pets": f"{len(fit_pets)} dev training photos",
        "non_pets": f"{len(fit_others)} photos of shared/data/neither (its fitting half), and their mirrors",
        "graphics": f"{len(graphics.paths)} generated pictures that are not photos (benchmarks/synthetic_graphics.py), "
        "and their mirrors",
        **operating_point_record(len(calibration), turned_away, target, shares),
        "taps": list(gate.taps),
    }
    if by_taps is not None:
        fitted_on["cv_taps"] = {
            tap_label(taps): {"operating_target": target, "cv_non_pets_answered_neither": shares}
            for taps, (target, shares) in by_taps.items()
        }
    return gate, fitted_on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="holds dogs-vs-cats/train and neither/")
    parser.add_argument("--backbone", default=BUILTIN_BACKBONE, choices=sorted(GATE_SIZES))
    parser.add_argument("--operating-point", action="store_true", help="keep the gates' weights; choose their bias")
    parser.add_argument("--size", type=int, help="fit only the gate at this size (one of GATE_SIZES), keep the others")
    args = parser.parse_args()
    cache_dir = default_cache_dir()
    name = args.backbone
    pre = pretrained_preprocess(create_pretrained(name))
    if args.size is not None and args.size not in GATE_SIZES[name]:
        parser.error(f"--size {args.size}: {name}'s gates are fitted at {', '.join(map(str, GATE_SIZES[name]))} px")
    others = WEIGHTS_DIR / "gate_backbones.json"
    records = json.loads(others.read_text()) if others.is_file() else {}
    if name == BUILTIN_BACKBONE:
        record: dict = {"kind": OPEN_SET, "threshold": 0.5, "score": score(name)}
        if args.size is not None:
            record = json.loads((WEIGHTS_DIR / "builtin_gate.json").read_text())
    else:
        kept = records.get(name, {}).get("sizes", {}) if args.size is not None else {}  # the other sizes' gates
        record = {"score": score(name), "sizes": kept}
    for size in [args.size] if args.size is not None else GATE_SIZES[name]:
        gate, fitted_on = fit_at_size(args.data, replace(pre, image_size=size), cache_dir, name, args.operating_point)
        tensors = {k: v.contiguous() for k, v in gate.state_dict().items()}
        save_file(tensors, str(builtin_gate_file(size, name)), metadata={"taps": ",".join(map(str, gate.taps))})
        fitted_on["score"] = score(name, gate.taps)
        if name != BUILTIN_BACKBONE:
            record["sizes"][str(size)] = {"file": builtin_gate_file(size, name).name, "fitted_on": fitted_on}
        elif size == pre.image_size:  # the built-in model's
            record["fitted_on"], record["score"] = fitted_on, fitted_on["score"]
        else:
            record.setdefault("other_sizes", {})[str(size)] = {"file": builtin_gate_file(size).name, **fitted_on}
    record["built_by"] = f"scripts/build_builtin_gate.py --backbone {name}"
    if name == BUILTIN_BACKBONE:
        (WEIGHTS_DIR / "builtin_gate.json").write_text(json.dumps(record, indent=2) + "\n")
    else:
        records[name] = record
        others.write_text(json.dumps(records, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
