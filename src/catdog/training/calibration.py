"""After training: the temperature fitted on the validation split, and the open-set (`neither`) gate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from catdog.data import PreparedData
from catdog.models.files import BUILTIN_BACKBONE
from catdog.models.gate import OPEN_SET, PET_MASS_THRESHOLD, TARGET_PETS_TURNED_AWAY, fit_weights, operating_bias
from catdog.preprocess import Preprocess

if TYPE_CHECKING:
    from catdog.features import Say

# Fewest wrong validation answers that may make a model surer than it was trained to be (T < 1): the rule of
# ten events per fitted parameter of a logistic fit. Every dev-data recipe has more (the built-in head 26 of
# 2,237 photos, the best soup 14); a user's folder of a few hundred photos usually has fewer.
MIN_ERRORS_TO_SHARPEN = 10
# Fewest validation photos a temperature is fitted on: a 6-photo split fitted 20.0, the limit of the fit, from one
# or two answers, which pulls every answer towards 50 %. Chosen, then checked (2026-12-07): the built-in model's
# answers on 600 dev validation photos fit 1.15; 300 draws of 10 of them fit up to 2.26 (95th percentile, 4 % of
# draws off by 2x or more), of 30 up to 1.69 (none off by 2x), of 100 up to 1.46. A less accurate model errs more.
MIN_PHOTOS_TO_CALIBRATE = 30

# The `neither` gate's operating point and its refit on a data folder's neither/ photos.
LOG_ODDS_MARGIN = 0.05  # about 1 % of probability near 0.5
# Validation pets expected below the operating point before it is placed on them (see _move_open_set_point).
MIN_PETS_BELOW = 2
GATE_REFIT_PETS = 5000  # training pets the gate is refitted on (their features take ~30 s on 2 cores)
GATE_REFIT_L2 = 1e-3  # pull towards the shipped gate: the user's few hundred negatives adjust it, not replace it


def too_few_to_calibrate(n_photos: int) -> str | None:
    """Why no temperature is fitted on ``n_photos`` validation photos, in one sentence; None where they are enough."""
    if n_photos >= MIN_PHOTOS_TO_CALIBRATE:
        return None
    return (
        f"temperature 1.0 kept: {n_photos} validation photos are too few to fit one on ({MIN_PHOTOS_TO_CALIBRATE} "
        "needed; more photos or a larger --val-fraction give them)"
    )


@dataclass(frozen=True)
class AsGoodAConstant:
    """A model right on no more validation photos than answering their commoner class for all would be."""

    commoner: str  # that class, named from the logits' columns (or "their commoner class")
    right: float  # the share of the photos the model is right on
    commoner_share: float  # the share of the photos of the commoner class

    def note(self, n_photos: int) -> str:
        """Why the temperature fitted on these photos may soften them but never sharpen, in one sentence.

        A seed-cnn that answered "dog" for every photo (48.8 % right on its validation photos, 22 wrong) was fitted
        0.42, surer than trained, and its log loss on other photos got worse than a 50/50 guess: the answers of a
        model at chance cannot say how sure it should be.
        """
        return (
            f"temperature fitted on {n_photos} validation photos, not below 1.0: the model is right on "
            f"{self.right:.1%} of them, no more than answering {self.commoner} for all would be "
            f"({self.commoner_share:.1%})"
        )


def as_good_a_constant(
    logits: torch.Tensor, labels: torch.Tensor, classes: list[str] | None = None
) -> AsGoodAConstant | None:
    """Whether answering the commoner class of these photos for all (named from ``classes``, the logits' columns)
    is right on as many of them as the model: how often each is right, or None where the model does better."""
    counts = torch.bincount(labels, minlength=logits.shape[1])
    right = int((logits.argmax(1) == labels).sum())
    if right > int(counts.max()):
        return None
    commoner = classes[int(counts.argmax())] if classes else "their commoner class"
    n = max(len(labels), 1)
    return AsGoodAConstant(commoner, right / n, int(counts.max()) / n)


def pets_part(logits: torch.Tensor, labels: torch.Tensor, n_pets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of the first ``n_pets`` classes on the photos of those classes: what the temperature of a net
    that learnt `neither` as its last class is fitted on (it scales the cat/dog logits alone)."""
    pets = labels < n_pets
    return logits[pets, :n_pets], labels[pets]


@dataclass(frozen=True)
class Calibration:
    """The temperature a model is deployed at, on ``n_photos`` validation photos; ``note``: why it was not fitted
    freely, in one sentence (1.0 kept on too few photos, or never below 1.0 for a model no better than its
    commoner class), None where it was."""

    temperature: float
    n_photos: int
    note: str | None

    @property
    def record(self) -> str:
        """config.json's ``calibration``: the note, or how many photos the temperature was fitted on."""
        return self.note or f"temperature fitted on {self.n_photos} validation photos"


def calibrate(logits: torch.Tensor, labels: torch.Tensor, classes: list[str] | None = None) -> Calibration:
    """The one place that decides how freely a temperature is fitted on the validation photos, and fits it:
    not at all on too few of them, never sharpening a model no better than their commoner class (named from
    ``classes``, the logits' columns)."""
    too_few = too_few_to_calibrate(len(labels))
    if too_few:
        return Calibration(1.0, len(labels), too_few)
    temperature = nll_temperature(logits, labels)
    at_chance = as_good_a_constant(logits, labels, classes)
    if at_chance:
        return Calibration(max(temperature, 1.0), len(labels), at_chance.note(len(labels)))
    return Calibration(temperature, len(labels), None)


def nll_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising the validation NLL of ``softmax(logits / T)`` (LBFGS on log T), on however
    few photos: the bare fit, which :func:`calibrate` alone calls, after asking whether the photos are enough and
    how good the model is. (Not named ``fit_temperature``: ``catdog.train.fit_temperature`` answers what calibrate
    decides.)"""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits.float() / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp().clamp(0.05, 20.0))
    if int((logits.argmax(1) != labels).sum()) < MIN_ERRORS_TO_SHARPEN:
        # How far to sharpen is set by the few wrong answers: with every photo right the loss falls without end
        # as T → 0 (a 300-photo run got T = 0.05), and with one wrong of 47 a 400-photo run got T = 0.117 and
        # answered "cat (100.0%)" for a dog it had not seen (log loss 0.173 on 120 other photos; 0.093 at T = 1).
        # Such a split cannot say how sure to be: it may soften, never sharpen.
        temperature = max(temperature, 1.0)
    return round(temperature, 5)


def calibrated_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(F.cross_entropy(logits.float() / temperature, labels))


def learnt_neither_nll(logits: torch.Tensor, labels: torch.Tensor, n_pets: int, temperature: float) -> float:
    """The log loss on every validation photo of a net that learnt `neither` after its ``n_pets`` classes, as it
    is deployed: whether a photo is a pet from its logits as trained, which pet at ``temperature`` (fitted on the
    pets' cat/dog logits alone). At 1.0 it is the plain loss over every class."""
    logits = logits.float()
    is_neither = labels == n_pets
    pet_or_neither = torch.stack([logits[:, :n_pets].logsumexp(1), logits[:, n_pets]], 1)
    losses = F.cross_entropy(pet_or_neither, is_neither.long(), reduction="none")
    pets = ~is_neither
    losses[pets] += F.cross_entropy(logits[pets, :n_pets] / temperature, labels[pets], reduction="none")
    return float(losses.mean())


def calibrated_loss(
    logits: torch.Tensor, labels: torch.Tensor, n_pets: int | None = None, classes: list[str] | None = None
) -> tuple[Calibration, float]:
    """The temperature and the calibrated validation loss the best epoch is chosen by, the same for the epoch lines
    and the saved model. ``n_pets``: a net that learnt `neither` after that many classes; its temperature scales
    the pets' cat/dog logits and is fitted on them, its loss counts the `neither` photos too
    (:func:`learnt_neither_nll`): on the pets alone, an epoch that took every `neither` photo for a pet was kept."""
    if n_pets is None:
        calibration = calibrate(logits, labels, classes)
        return calibration, calibrated_nll(logits, labels, calibration.temperature)
    calibration = calibrate(*pets_part(logits, labels, n_pets), classes)
    return calibration, learnt_neither_nll(logits, labels, n_pets, calibration.temperature)


def gate_config(
    val_pets: torch.Tensor | None,
    model: nn.Module,
    image_size: int,
    refitted_on: int = 0,
    architecture: str = BUILTIN_BACKBONE,
) -> dict:
    """The `neither` gate of a trained cat/dog model, its operating point set on the validation pets.

    A fine-tuned model's gate reads a pristine copy of the pretrained layers (``pristine_after_blocks``
    records where it starts), so it sees what the pretrained backbone sees: fine-tuned features made
    real pets score low (the 45-minute Lite0 run called 65 of 200 dev pets `neither`) and non-pets
    through. With a bundled backbone (EfficientNet-Lite0/1/2) the gate is catdog's open-set gate
    (:mod:`catdog.models.gate`): its bias moves so that at most 0.5 % of the validation photos (all cats
    and dogs) score below 0.5, or the smaller share the shipped gate records (``operating_target``).
    Other timm backbones keep the ImageNet pet mass, with the built-in threshold lowered, if needed, to
    0.9 x the validation photos' 1st percentile.
    """
    gate: dict = {}
    if getattr(model, "gate", None) is not None:
        gate["pristine_after_blocks"] = model.shared_blocks
    open_set = getattr(model, "open_set", None)
    if open_set is not None:
        gate.update(builtin_gate_record(image_size, architecture), threshold=0.5, kind=OPEN_SET)
        if refitted_on:
            gate["refitted_on"] = f"{refitted_on} photos of the data's neither folder (and their mirrors)"
        if val_pets is not None and len(val_pets):
            gate.update(_move_open_set_point(open_set, val_pets, gate["operating_target"]))
        return gate
    threshold = PET_MASS_THRESHOLD
    gate.update(threshold=threshold, kind="pet-mass")
    if val_pets is None or not len(val_pets):
        return gate
    # 0.9: a margin for the small numeric gap between the path validation measured (cached float16
    # activations for --freeze stages:N) and the exported model that later predicts.
    percentile = 0.9 * float(torch.quantile(val_pets.double(), 0.01, interpolation="lower"))
    gate.update(threshold=min(threshold, percentile), builtin_threshold=threshold)
    gate["val_pets_turned_away"] = round(float((val_pets < gate["threshold"]).double().mean()), 5)
    return gate


def _placeable(n_pets: int, target: float) -> bool:
    """Whether ``target`` of ``n_pets`` validation pets is enough photos to place an operating point on."""
    return n_pets * target >= MIN_PETS_BELOW


def _move_open_set_point(open_set, val_pets: torch.Tensor, target: float) -> dict:
    """Move the open-set gate's bias to where ``target`` of the validation pets score below; its record.

    A share is only placed on enough photos: with fewer than ``MIN_PETS_BELOW / target`` validation pets
    (667 at 0.3 %) the lowest pet would set it, and where a few validation pets all look like pets that
    made the gate 10 logits stricter than shipped and turned away half of all other pets (a 60-photo
    folder). Then the bias only moves to keep the validation pets, never to turn more photos away.
    """
    shipped = float(open_set.bias)
    logits = torch.logit(val_pets.double().clamp(1e-12, 1 - 1e-12)) - shipped
    moved = operating_bias(logits, open_set.bias.new_zeros(()), target)
    n = len(val_pets)
    enough = _placeable(n, target)
    open_set.bias.fill_(moved if enough else max(moved, shipped))
    turned_away = round(float((logits + float(open_set.bias) < 0).double().mean()), 5)
    if enough:
        point = f"P(cat or dog) = 0.5 where {turned_away:.2%} of this model's {n} validation photos score below"
        point += f" (target {target:.1%}, the shipped gate's)"
    else:
        needed = math.ceil(MIN_PETS_BELOW / target)
        point = (
            f"the gate's own, moved only to keep this model's {n} validation photos (too few to place {target:.1%} "
            f"of them on: {needed} needed); {turned_away:.2%} of them score below P(cat or dog) = 0.5"
        )
    return {"val_pets_turned_away": turned_away, "val_pets": n, "operating_point": point}


def learnt_neither_gate(model, logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> dict:
    """Set the operating point of a net that learnt `neither` as its last class; its config.json record.

    ``model`` is the :class:`~catdog.models.gate.LearntNeither`; ``logits`` and ``labels`` are the net's on
    the validation photos. Its ``neither_offset`` moves ``P(cat or dog) = 0.5`` to where 0.5 % of the
    validation pets score below, as the open-set gate's bias is moved.
    """
    from catdog.models.gate import NEITHER_CLASS, pet_log_odds

    odds = pet_log_odds(logits).double()
    pets, others = odds[labels < n_classes], odds[labels == n_classes]
    offset = 0.0
    enough = _placeable(len(pets), TARGET_PETS_TURNED_AWAY)
    if len(pets):
        # A margin below the quantile for the numeric gap between validation (autocast) and the exported model.
        offset = float(torch.quantile(pets, TARGET_PETS_TURNED_AWAY, interpolation="lower")) - LOG_ODDS_MARGIN
        offset = offset if enough else min(offset, 0.0)  # too few pets to place a share on: only keep them
    model.neither_offset.fill_(offset)
    gate = {
        "kind": NEITHER_CLASS,
        "score": "P(cat or dog) = 1 - P(neither): the data's neither folder learnt as one more class",
        "threshold": 0.5,
        "neither_offset": round(offset, 5),
        "val_pets": len(pets),
        "val_pets_turned_away": round(float((pets < offset).double().mean()), 5) if len(pets) else None,
        "val_neither": len(others),
        "val_neither_answered": round(float((others < offset).double().mean()), 5) if len(others) else None,
    }
    gate["operating_point"] = (
        f"P(cat or dog) = 0.5 where {TARGET_PETS_TURNED_AWAY:.1%} of the {len(pets)} validation pets score below"
        if enough
        else f"the net's own, moved only to keep its {len(pets)} validation pets (too few to place "
        f"{TARGET_PETS_TURNED_AWAY:.1%} of them on)"
    )
    return gate


def refit_gate(
    open_set,
    data: PreparedData,
    at_size: PreparedData,
    splits: dict,
    negatives: list[int],
    pre: Preprocess,
    cache_dir,
    architecture: str = BUILTIN_BACKBONE,
    say: Say | None = None,
) -> torch.Tensor:
    """Refit the open-set gate on the training pets and the `neither` folder's photos (and their mirrors).

    ``data``'s indices (``splits``, ``negatives``) name the photos; ``at_size`` holds them decoded for
    ``pre``, the size the model predicts at. Returns the refitted gate's ``P(cat or dog)`` for the
    validation photos, which then set its operating point. ``say`` hears of a damaged feature cache dropped.
    """
    pets = sorted(splits["train"], key=lambda i: data.hashes[i])[:GATE_REFIT_PETS]  # a random-like subset
    inputs = gate_inputs_of(open_set, data, at_size, pre, cache_dir, architecture, say)
    x_pets, x_others = inputs([(i, 0) for i in pets]), inputs([(i, v) for i in negatives for v in (0, 1)])
    x = torch.cat([x_pets, x_others])
    y = torch.cat([torch.ones(len(x_pets)), torch.zeros(len(x_others))])
    weight, bias = fit_weights(x, y, prior=open_set, l2=GATE_REFIT_L2)
    open_set.weight.copy_(weight)
    open_set.bias.fill_(float(bias))
    return pristine_val_pets(open_set, data, at_size, splits, pre, cache_dir, architecture, say)


def pristine_val_pets(
    open_set,
    data: PreparedData,
    at_size: PreparedData,
    splits: dict,
    pre: Preprocess,
    cache_dir,
    architecture: str,
    say: Say | None = None,
) -> torch.Tensor:
    """The open-set gate's ``P(cat or dog)`` for the validation photos, from the pretrained backbone's features.

    What the gate reads does not depend on training (it reads a pristine backbone), so this is what the
    trained model answers, computed once from cached features. ``at_size`` holds the photos decoded for ``pre``;
    ``say`` hears of a damaged feature cache dropped.
    """
    inputs = gate_inputs_of(open_set, data, at_size, pre, cache_dir, architecture, say)
    with torch.no_grad():
        return torch.sigmoid(inputs([(i, 0) for i in splits["val"]]) @ open_set.weight + open_set.bias)


def gate_inputs_of(
    open_set,
    data: PreparedData,
    at_size: PreparedData,
    pre: Preprocess,
    cache_dir,
    architecture: str,
    say: Say | None = None,
):
    """``jobs → gate inputs`` for ``(index into data, view)`` jobs, computed on ``at_size``'s decoded photos."""
    from catdog.features import pretrained_gate_inputs

    index = {path: i for i, path in enumerate(at_size.paths)}

    def inputs(jobs: list[tuple[int, int]]) -> torch.Tensor:
        jobs = [(index[data.paths[i]], view) for i, view in jobs]
        return pretrained_gate_inputs(at_size, jobs, pre, cache_dir, architecture, open_set.taps, say)

    return inputs


def frozen_val_pets(model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """The gate's ``P(cat or dog)`` for the validation photos, from their cached pooled features (and taps)."""
    from catdog.features import split_pooled

    taps = model.open_set.taps if model.open_set is not None else ()
    features, tapped = split_pooled(rows.float().to(model.head.weight.device), model.backbone, taps)
    with torch.no_grad():
        pets, *_ = model.judge(features, model.backbone.get_classifier()(features), dict(zip(taps, tapped)))
    return pets.cpu()


def builtin_gate_record(image_size: int, architecture: str = BUILTIN_BACKBONE) -> dict:
    """What the shipped open-set gate for ``image_size`` says of itself (score, fitted on what), for config.json.

    ``operating_target`` is the share of pets its operating point turns away (chosen when it was built, by
    cross-validation on its fitting data); a trained model moves its gate there on its own validation pets.
    """
    from catdog.models.builtin import gate_size
    from catdog.models.files import builtin_config, bundled_gates_config

    size = str(gate_size(image_size, architecture))
    # The records ship with catdog: a missing one is a ModelError there.
    if architecture == BUILTIN_BACKBONE:
        shipped = builtin_config()["gate"]
        fitted = shipped.get("other_sizes", {}).get(size) or shipped.get("fitted_on") or {}
    else:
        shipped = bundled_gates_config()[architecture]
        fitted = shipped["sizes"][size].get("fitted_on") or {}
    about_the_point = ("file", "operating_point", "operating_target", "cv_non_pets_answered_neither", "cv_taps")
    about_the_point += ("score", "taps")  # said apart: the score's own entry, and the gate's (gate_config)
    return {
        "score": fitted.get("score") or shipped.get("score"),
        "fitted_on": {k: v for k, v in fitted.items() if k not in about_the_point},
        "fitted_at_px": int(size),
        "operating_target": fitted.get("operating_target", TARGET_PETS_TURNED_AWAY),
    }
