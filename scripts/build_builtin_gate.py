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

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.common
from benchmarks.common import (  # noqa: E402
    DATA,
    calibration_slice,
    cross_validated_operating_point,
    neither_split,
    operating_point_record,
)
from catdog.data import prepare
from catdog.features import pretrained_gate_inputs
from catdog.fsutil import default_cache_dir
from catdog.models.builtin import GATE_SIZES, builtin_gate_file, load_builtin_gate
from catdog.models.files import BUILTIN_BACKBONE, WEIGHTS_DIR, builtin_config
from catdog.models.gate import OPEN_SET, OpenSetGate, fit_gate, move_operating_point
from catdog.models.pretrained import (
    create_pretrained,
    pretrained_preprocess,
)

C = 100.0  # scikit-learn's inverse regularisation strength, chosen by cross-validation (see the docstring)


def score(architecture: str) -> str:
    short = architecture.removeprefix("tf_efficientnet_").capitalize()
    return f"logistic fit on {short}'s normalised pooled features and the logit of its ImageNet pet mass"


def fit_at_size(
    data_dir: Path, pre, cache_dir, architecture: str, keep_weights: bool = False
) -> tuple[OpenSetGate, dict]:
    """The gate for features of ``pre``'s size, and what it was fitted on.

    With ``keep_weights``, the shipped gate's weights stay and only its operating point is chosen.
    """
    dev = prepare(data_dir / "dogs-vs-cats" / "train", pre, cache_dir)
    split = builtin_config()["split"]  # the head's: the gate fits nothing of its validation or test photos
    train = dev.split(split["val_fraction"], split["test_fraction"])["train"]
    fit_pets, calibration = calibration_slice(train, dev.hashes)
    others = prepare(data_dir / "neither", pre, cache_dir)
    fit_others = neither_split(others.hashes, others.labels)["fit"]

    def inputs(data, jobs) -> torch.Tensor:
        return pretrained_gate_inputs(data, jobs, pre, cache_dir, architecture)

    pets, calibration_pets = inputs(dev, [(i, 0) for i in fit_pets]), inputs(dev, [(i, 0) for i in calibration])
    negatives, mirrors = (inputs(others, [(i, view) for i in fit_others]) for view in (0, 1))
    target, shares = cross_validated_operating_point(
        pets, negatives, mirrors, calibration_pets, [others.hashes[i] for i in fit_others], C
    )
    if keep_weights:
        gate = load_builtin_gate(pets.shape[1] - 1, pre.image_size, architecture)
        turned_away = move_operating_point(gate, calibration_pets, target)
    else:
        gate, turned_away = fit_gate(pets, torch.cat([negatives, mirrors]), calibration_pets, C, target)
    fitted_on = {
        "pets": f"{len(fit_pets)} dev training photos",
        "non_pets": f"{len(fit_others)} photos of shared/data/neither (its fitting half), and their mirrors",
        **operating_point_record(len(calibration), turned_away, target, shares),
    }
    return gate, fitted_on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="holds dogs-vs-cats/train and neither/")
    parser.add_argument("--backbone", default=BUILTIN_BACKBONE, choices=sorted(GATE_SIZES))
    parser.add_argument("--operating-point", action="store_true", help="keep the gates' weights; choose their bias")
    args = parser.parse_args()
    cache_dir = default_cache_dir()
    name = args.backbone
    pre = pretrained_preprocess(create_pretrained(name))
    if name == BUILTIN_BACKBONE:
        record: dict = {"kind": OPEN_SET, "threshold": 0.5, "score": score(name)}
    else:
        record = {"score": score(name), "sizes": {}}
    for size in GATE_SIZES[name]:
        gate, fitted_on = fit_at_size(args.data, replace(pre, image_size=size), cache_dir, name, args.operating_point)
        tensors = {k: v.contiguous() for k, v in gate.state_dict().items()}
        save_file(tensors, str(builtin_gate_file(size, name)))
        if name != BUILTIN_BACKBONE:
            record["sizes"][str(size)] = {"file": builtin_gate_file(size, name).name, "fitted_on": fitted_on}
        elif size == pre.image_size:  # the built-in model's
            record["fitted_on"] = fitted_on
        else:
            record.setdefault("other_sizes", {})[str(size)] = {"file": builtin_gate_file(size).name, **fitted_on}
    record["built_by"] = f"scripts/build_builtin_gate.py --backbone {name}"
    if name == BUILTIN_BACKBONE:
        (WEIGHTS_DIR / "builtin_gate.json").write_text(json.dumps(record, indent=2) + "\n")
    else:
        others = WEIGHTS_DIR / "gate_backbones.json"
        records = json.loads(others.read_text()) if others.is_file() else {}
        records[name] = record
        others.write_text(json.dumps(records, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
