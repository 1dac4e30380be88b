"""``catdog soup``: average the weights of models fine-tuned from the same pretrained weights.

A uniform model soup (Wortsman et al., 2022): models fine-tuned from one pretrained network with
other seeds or settings usually lie in one basin of the loss, so the average of their weights is
a model as well, often more accurate than each of them, at the cost of one. The members must share
the architecture, classes, preprocessing, gate and training data; from-scratch nets, which start from
different random weights, do not average into anything useful and are refused.

The soup's temperature is fitted again on the members' validation split, where its accuracy is
measured beside each member's, so that a soup worse than its best member shows.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from catdog.data.layout import DatasetError
from catdog.errors import CatdogError, ModelError
from catdog.fsutil import printable, utf8_safe

# What every member must agree on, in config.json (the rest may differ: seeds, rates, budgets ...).
MUST_MATCH = ("architecture", "classes", "preprocess")
GATE_MUST_MATCH = ("kind", "taps", "pristine_after_blocks", "fitted_at_px")


@dataclass
class SoupConfig:
    """``catdog soup``'s settings; saved in the soup's config.json."""

    models: list[str]
    data_dir: str
    out: str
    overwrite: bool = False
    batch_size: int = 32


def check_members(models: list[str], configs: list[dict]) -> None:
    """Refuse, in one sentence, members that cannot be averaged into one model."""
    from catdog.models.scratch import SCRATCH_MODELS

    if len(models) < 2:
        raise CatdogError("A soup needs at least two model directories to average.")
    # As config.json records the members: a name that is not UTF-8 with its bytes as the text '\xe9'.
    named = {utf8_safe(str(Path(m).resolve())): m for m in models}
    if len(named) < len(models):
        raise CatdogError("The same model directory is named twice; a soup averages different models.")
    for model, config in zip(models, configs):
        recorded = [utf8_safe(m) for m in (config.get("soup") or {}).get("members", [])]
        inside = [named[m] for m in recorded if m in named]
        if inside:
            raise CatdogError(
                f"'{model}' is already a soup with '{inside[0]}' in it, which would count twice; "
                "name the members themselves."
            )
    first, reference = models[0], configs[0]
    if reference["architecture"] in SCRATCH_MODELS:
        raise CatdogError(
            f"'{first}' is a {reference['architecture']} trained from random weights; only models fine-tuned "
            "from the same pretrained weights average into one model."
        )
    for model, config in zip(models[1:], configs[1:]):
        for key in MUST_MATCH:
            if config[key] != reference[key]:
                raise CatdogError(
                    f"'{model}' and '{first}' differ in {key}; only models of one recipe can be averaged."
                )
        gate, reference_gate = config.get("gate") or {}, reference.get("gate") or {}
        for key in GATE_MUST_MATCH:
            if gate.get(key) != reference_gate.get(key):
                raise CatdogError(
                    f"'{model}' and '{first}' have different `neither` gates ({key}); train them with the same "
                    "--freeze and backbone."
                )
        data, reference_data = config.get("data") or {}, reference.get("data") or {}
        if not data.get("fingerprint") or data.get("fingerprint") != reference_data.get("fingerprint"):
            raise CatdogError(
                f"'{model}' was trained on other photos than '{first}'; a soup is measured on its members' "
                "validation split, which every member must have held out."
            )
        split, reference_split = config.get("split") or {}, reference.get("split") or {}
        if split != reference_split:
            differ = sorted(k for k in {*split, *reference_split} if split.get(k) != reference_split.get(k))
            named = [f"--{k.replace('_', '-')}" for k in differ if k.endswith("fraction")]
            options = ", ".join(named) or "--val-fraction"
            raise CatdogError(f"'{model}' and '{first}' split their photos differently (see {options}).")


def average_weights(states: list[dict]) -> dict:
    """The mean of each floating-point tensor over ``states``; other tensors (counters) from the first."""
    import torch

    keys = states[0].keys()
    for state in states[1:]:
        if state.keys() != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise ModelError("The models' weights have different names or shapes; they cannot be averaged.")
    return {
        key: (
            torch.stack([s[key].double() for s in states]).mean(dim=0).to(states[0][key].dtype)
            if states[0][key].is_floating_point()
            else states[0][key].clone()
        )
        for key in keys
    }


def soup(cfg: SoupConfig) -> dict:
    """Average ``cfg.models`` into ``cfg.out``; the soup's and the members' validation figures, and
    ``temperature_note``: why its temperature was not fitted freely (None where it was), for :func:`summary` to say."""
    import torch

    from catdog.models import load_model_dir, read_config, save_model_dir
    from catdog.models.files import builtin_name
    from catdog.training.calibration import calibrate, calibrated_nll

    out = Path(cfg.out)
    if (out / "config.json").exists() and not cfg.overwrite:
        raise CatdogError(f"'{out}' already holds a model; choose another --out or add --overwrite.")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").exists())):
        raise CatdogError(f"'{out}' exists and is not a model directory; choose another --out.")
    shipped = [m for m in cfg.models if builtin_name(m) is not None]
    if shipped:
        raise CatdogError(
            f"'{shipped[0]}' is a model catdog ships, already a soup where it can be; a soup averages model "
            "directories written by 'catdog train' from the same weights."
        )
    configs = [read_config(m) for m in cfg.models]
    check_members(cfg.models, configs)
    # Each member is read once: measured as `catdog predict` runs it (exported from this copy when its ONNX
    # export is not cached yet), then averaged. It was read a second time to export it.
    members = [load_model_dir(m) for m in cfg.models]
    expected = (configs[0].get("data") or {}).get("val_images")
    member_accuracy = []
    for member, loaded in zip(cfg.models, members):
        accuracy, _, labels = _validation(member, cfg, loaded=loaded)
        if expected and len(labels) != expected:
            raise DatasetError(
                f"'{cfg.data_dir}' has {len(labels)} photos in the models' validation split where they "
                f"recorded {expected}; give the folder they were trained on."
            )
        member_accuracy.append(accuracy)
    module = members[0][0]  # measured above: now the soup
    module.load_state_dict(average_weights([m.state_dict() for m, _ in members]))
    del members

    # Written beside the destination and moved into place: an interrupted soup leaves no half model.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_model_dir(module, {**configs[0], "temperature": 1.0}, staging)
        # The soup on the validation split as `catdog predict` runs it, at T = 1 for its temperature's fit.
        accuracy, logits, labels = _validation(staging, cfg, forget_export=True)
        logits_t, labels_t = torch.from_numpy(logits), torch.from_numpy(labels)
        calibration = calibrate(logits_t, labels_t, configs[0]["classes"])
        metrics = {
            "val_loss_calibrated": round(calibrated_nll(logits_t, labels_t, calibration.temperature), 5),
            "val_accuracy": round(accuracy, 5),
            "val_images": len(labels),
            "members_val_accuracy": [round(a, 5) for a in member_accuracy],
        }
        config = {
            **configs[0],
            "temperature": calibration.temperature,
            "calibration": calibration.record,  # the soup's own, not its first member's
            "metrics": metrics,
            "soup": {
                "members": [str(Path(m).resolve()) for m in cfg.models],
                "member_training": [c.get("training") for c in configs],
                "settings": asdict(cfg),
            },
        }
        config.pop("training", None)  # the first member's settings are not the soup's: its members' are
        save_model_dir(module, config, staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metrics | {"temperature_note": calibration.note}


def _validation(
    model_dir: str | Path, cfg: SoupConfig, forget_export: bool = False, loaded: tuple | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """``(accuracy, log-probabilities, labels)`` of a model directory on its validation split of ``cfg.data_dir``.

    The log-probabilities are at the model's temperature (the soup is measured at T = 1). ``forget_export``:
    remove the ONNX export this made in the user cache (the soup's, whose config is not final yet). ``loaded``:
    the directory's ``(module, config)`` from ``load_model_dir``, not read again.
    """
    from catdog.evaluate import collect
    from catdog.inference.predictor import Predictor

    predictor = Predictor.load(model_dir, throughput=True, loaded=loaded)
    try:
        evaluation = collect(predictor, cfg.data_dir, batch_size=cfg.batch_size, split="val").pets()
    finally:
        if forget_export:
            _forget_export(Path(model_dir))
    if not evaluation.paths:
        raise DatasetError(f"'{cfg.data_dir}' has no readable photo in the models' validation split.")
    labels = evaluation.y
    accuracy = float((evaluation.probs.argmax(axis=1) == labels).mean())
    return accuracy, np.log(np.clip(evaluation.probs, 1e-12, None)).astype(np.float32), labels


def _forget_export(model_dir: Path) -> None:
    from catdog.inference.model_cache import export_path, torch_source

    name, key_files, _ = torch_source(model_dir)
    export_path(name, key_files).unlink(missing_ok=True)


def summary(cfg: SoupConfig, metrics: dict) -> str:
    """What ``catdog soup`` prints: where the soup is, how it compares with its members, and why its temperature
    was not fitted freely where :func:`soup` said so (``temperature_note``)."""
    members = ", ".join(f"{100 * a:.2f} %" for a in metrics["members_val_accuracy"])
    lines = [
        f"Averaged {len(cfg.models)} models into '{printable(cfg.out)}'.",
        f"Validation ({metrics['val_images']:,} photos): the soup {100 * metrics['val_accuracy']:.2f} %; "
        f"its members {members}.",
    ]
    note = metrics.get("temperature_note")
    if note:  # as `catdog train` says it: too few photos, or a soup no better than one answer for all
        lines.append(f"The soup's {note}.")
    if metrics["val_accuracy"] < max(metrics["members_val_accuracy"]):
        lines.append(
            "On validation the soup is below its best member, whose figure, the best of several, flatters it: "
            f"compare them on photos none of them has been chosen on ({_fair_comparison(cfg)})."
        )
    return "\n".join(lines)


def _fair_comparison(cfg: SoupConfig) -> str:
    """The evaluate command that compares a soup with its members fairly: on their test split where they hold one
    out; `--split test` of members trained without one (the default) is refused, so then on other photos."""
    from catdog.models import read_config

    split = read_config(cfg.out).get("split") or {}  # the members' split, which the soup records as theirs
    if split.get("test_fraction"):
        return "catdog evaluate MODEL DATA_DIR --split test"
    return "catdog evaluate MODEL OTHER_PHOTOS, labelled photos none of them was trained on"
