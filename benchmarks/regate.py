"""Give a trained model directory the `neither` gate catdog ships now, as ``catdog train`` would.

    python -m benchmarks.regate MODEL_DIR

For a model on the built-in backbone (EfficientNet-Lite0) whose gate is the shipped open-set gate,
the gate's step of training does not depend on the trained weights: the gate reads the pristine
backbone (frozen, or the pristine copy a fine-tune keeps), takes the shipped gate fitted at the size
the model predicts at, and moves its bias so that at most 0.5 % of the model's own validation
photos score below 0.5 (catdog.train.gate_config). This does that step again, with the gate of this
commit, for a model trained before it (a model refitted on a `neither` folder is refused: that fit
used the user's photos). The benchmarks then measure the model as ``catdog predict`` runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import say
from catdog.data import prepare
from catdog.features import pretrained_gate_inputs
from catdog.fsutil import default_cache_dir
from catdog.models import load_model_dir, save_model_dir
from catdog.models.builtin import load_builtin_gate
from catdog.models.files import BUILTIN_BACKBONE
from catdog.models.gate import OPEN_SET
from catdog.preprocess import Preprocess
from catdog.train import gate_config


def regate(model_dir: Path) -> dict:
    """Replace the model's gate with the shipped one for its size; returns the new config's ``gate``."""
    model, config = load_model_dir(model_dir)
    gate = config.get("gate") or {}
    if config.get("architecture") != BUILTIN_BACKBONE or gate.get("kind") != OPEN_SET or gate.get("refitted_on"):
        raise SystemExit(f"{model_dir}: not a built-in-backbone model with the shipped open-set gate")
    pre = Preprocess.from_dict(config["preprocess"])
    model.add_open_set_gate(load_builtin_gate(model.backbone.num_features, pre.image_size))
    cache_dir = default_cache_dir()
    data = prepare(config["data"]["root"], pre, cache_dir)
    val = [i for i in data.split(config["training"]["val_fraction"])["val"] if data.labels[i] < len(config["classes"])]
    with torch.no_grad():
        jobs = [(i, 0) for i in val]
        inputs = pretrained_gate_inputs(data, jobs, pre, cache_dir, BUILTIN_BACKBONE, model.open_set.taps, say)
        val_pets = torch.sigmoid(inputs @ model.open_set.weight + model.open_set.bias)
    config["gate"] = gate_config(val_pets, model, pre.image_size)
    config["gate_regated_by"] = "python -m benchmarks.regate (the gate of a later commit; weights as trained)"
    save_model_dir(model, config, model_dir)
    return config["gate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    print(regate(parser.parse_args().model_dir))


if __name__ == "__main__":
    main()
