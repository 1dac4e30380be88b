"""The open-set `neither` gate: is there a cat or a dog in the photo at all?

The gate reads what a pristine (never fine-tuned) ImageNet backbone sees — its pooled features,
its ImageNet logits and, for some gates, the pooled output of earlier blocks ("taps") — and answers
``P(cat or dog)``. It is a logistic fit, chosen by measurement (``python -m benchmarks neither``;
the candidates and their figures are in docs/benchmarks.md):

    z = w · [features / ‖features‖, tap / ‖tap‖ ..., logit(ImageNet pet mass) / 10] + b,   P(cat or dog) = sigmoid(z)

fitted on pets against photos of everything else (outlier exposure, Hendrycks et al. 2019), with
the ImageNet probability mass on the domestic cat and dog classes (the gate before this one) as
one more input. ``b`` puts the operating point at 0.5: on photos of pets held out from the fit,
at most 0.5 % score below it, or fewer where the gate's features allow (:func:`choose_operating_target`).
``catdog train`` moves that point on its own validation pets, and refits ``w`` with the user's own
`neither` photos when the data has them (:func:`refit`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

PET_MASS_SCALE = 10.0  # logit(pet mass) spans about ±20; /10 puts it on the scale of the unit-norm features
OPEN_SET = "open-set"  # config.json's gate.kind for this gate; "pet-mass" for the ImageNet pet mass alone
NEITHER_CLASS = "neither-class"  # gate.kind of a from-scratch net that learnt `neither` as one more class
PET_MASS_THRESHOLD = 0.1  # the pet-mass gate's threshold (catdog before the open-set gate; other backbones)
TARGET_PETS_TURNED_AWAY = 0.005  # the default operating point: at most this share of pets is called `neither`
# The operating points a shipped gate may take, from the default down, and the least share of non-pets it must
# still answer `neither` there (cross-validated on its fitting data: cross_validated_shares).
OPERATING_TARGETS = (0.005, 0.004, 0.003, 0.002, 0.001)
NON_PET_FLOOR = 0.97


def pet_mass(imagenet_logits: torch.Tensor, pet_classes: torch.Tensor) -> torch.Tensor:
    """ImageNet probability mass on the domestic cat and dog classes."""
    return imagenet_logits.softmax(dim=1).index_select(1, pet_classes).sum(dim=1)


def gate_inputs(
    features: torch.Tensor,
    imagenet_logits: torch.Tensor,
    pet_classes: torch.Tensor,
    tapped: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """``[features / ‖features‖, tap / ‖tap‖ for each tap, logit(pet mass) / 10]``: what the gate's fit reads.

    ``tapped`` are the pooled outputs of the backbone blocks the gate taps (:attr:`OpenSetGate.taps`), in order.
    """
    mass = pet_mass(imagenet_logits.float(), pet_classes).clamp(1e-6, 1 - 1e-6)
    mass_logit = (mass.log() - (-mass).log1p()) / PET_MASS_SCALE
    return torch.cat([unit_rows(features), *(unit_rows(t) for t in tapped), mass_logit[:, None]], dim=1)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row divided by its Euclidean norm."""
    x = x.float()
    # Not F.normalize or norm(): ONNX Runtime's symbolic shape inference (before int8 quantization) cannot
    # follow the ReduceL2 node they export; a sum of squares it can.
    return x * (x * x).sum(dim=1, keepdim=True).clamp_min(1e-24).rsqrt()


class OpenSetGate(nn.Module):
    """Pooled features + ImageNet logits → ``P(cat or dog)``; its weights are buffers (never trained by SGD).

    ``taps`` are the indices of the backbone's blocks (stages) whose output, averaged over the image, the gate
    reads too (``tap_channels`` values in all): the middle of the network still sees the textures and shapes
    that the last layers pool away (a horse's coat, a sheep's fleece). The shipped gate files record them
    (:func:`catdog.models.builtin.load_builtin_gate`), a model directory in config.json's ``gate.taps``.
    """

    def __init__(self, num_features: int, taps: Sequence[int] = (), tap_channels: int = 0) -> None:
        super().__init__()
        self.taps = tuple(int(i) for i in taps)
        self.register_buffer("weight", torch.zeros(num_features + tap_channels + 1))
        self.register_buffer("bias", torch.zeros(()))

    def logit(
        self,
        features: torch.Tensor,
        imagenet_logits: torch.Tensor,
        pet_classes: torch.Tensor,
        tapped: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        return gate_inputs(features, imagenet_logits, pet_classes, tapped) @ self.weight + self.bias

    def forward(self, *inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``P(cat or dog)`` from the inputs of :meth:`logit`."""
        return torch.sigmoid(self.logit(*inputs))

    def extra_repr(self) -> str:
        return f"inputs={self.weight.numel()}, taps={self.taps}"


def tap_widths(backbone: nn.Module, taps: Sequence[int]) -> list[int]:
    """How many values the pooled output of each of an EfficientNet-family ``backbone``'s blocks ``taps`` holds."""
    # A stage's output is its last batch norm's (timm's BatchNormAct2d is a BatchNorm2d).
    norms = [[m for m in backbone.blocks[i].modules() if isinstance(m, nn.BatchNorm2d)] for i in taps]
    return [norm[-1].num_features for norm in norms]


def tap_channels(backbone: nn.Module, taps: Sequence[int]) -> int:
    """How many values the pooled outputs of blocks ``taps`` hold in all (what the gate reads besides)."""
    return sum(tap_widths(backbone, taps))


def run_blocks(
    blocks: Sequence[nn.Module], x: torch.Tensor, first: int, taps: Sequence[int], tapped: dict[int, torch.Tensor]
) -> torch.Tensor:
    """``x`` through ``blocks`` (numbered from ``first``), keeping in ``tapped`` the mean output of ``taps``."""
    for index, block in enumerate(blocks, start=first):
        x = block(x)
        if index in taps:
            tapped[index] = x.mean(dim=(2, 3))
    return x


def fit_weights(
    inputs: torch.Tensor, is_pet: torch.Tensor, *, prior: OpenSetGate | None = None, l2: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression on gate inputs, pets and non-pets weighted equally; ``(weight, bias)``.

    With ``prior``, the fit starts from the prior's weights and its penalty pulls towards them, so a
    few hundred of the user's own `neither` photos adjust the shipped gate instead of replacing what
    it learnt from catdog's. ``l2`` is the penalty per example (1e-3 ≈ scikit-learn's C = 1000 / n).
    """
    x, y = inputs.double(), is_pet.double()
    w0 = prior.weight.double() if prior is not None else torch.zeros(x.shape[1], dtype=torch.float64)
    b0 = prior.bias.double() if prior is not None else torch.zeros((), dtype=torch.float64)
    weight, bias = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    sample_weight = torch.where(y > 0, 0.5 / y.sum().clamp(min=1), 0.5 / (1 - y).sum().clamp(min=1))
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        losses = F.binary_cross_entropy_with_logits(x @ weight + bias, y, reduction="none")
        loss = (losses * sample_weight).sum() + l2 * (weight - w0).square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach().float(), bias.detach().float()


def fit_gate(
    pets: torch.Tensor,
    negatives: torch.Tensor,
    calibration: torch.Tensor,
    c: float,
    target: float = TARGET_PETS_TURNED_AWAY,
    taps: Sequence[int] = (),
) -> tuple[OpenSetGate, float]:
    """A gate fitted on gate inputs of pets against negatives, its bias set on the ``calibration`` pets.

    ``c`` is scikit-learn's inverse regularisation strength (the penalty is its objective divided by
    C x n). ``taps`` are the blocks whose pooled output the inputs hold (:class:`OpenSetGate`). Returns the gate
    and the share of the calibration pets it turns away.
    """
    x = torch.cat([pets, negatives])
    y = torch.cat([torch.ones(len(pets)), torch.zeros(len(negatives))])
    weight, bias = fit_weights(x, y, l2=1.0 / (2 * c * len(x)))
    gate = OpenSetGate(weight.numel() - 1, taps)  # the taps' values are among the weight's inputs already
    gate.weight.copy_(weight)
    gate.bias.fill_(float(bias))
    return gate, move_operating_point(gate, calibration, target)


def move_operating_point(gate: OpenSetGate, calibration: torch.Tensor, target: float) -> float:
    """Move ``gate``'s bias so that ``target`` of the ``calibration`` pets (gate inputs) score below 0.5.

    Returns the share of them that does.
    """
    logits, before = calibration @ gate.weight + gate.bias, float(gate.bias)
    gate.bias.fill_(operating_bias(logits, gate.bias, target))
    return float(((logits - before + gate.bias) < 0).double().mean())


def cross_validated_shares(
    pets: torch.Tensor,
    negatives: torch.Tensor,
    mirrors: torch.Tensor,
    calibration: torch.Tensor,
    folds: torch.Tensor,
    c: float,
    targets: tuple[float, ...],
    always: torch.Tensor | None = None,
) -> list[float]:
    """The share of non-pets a gate answers `neither` at each of ``targets``, by cross-validation.

    ``negatives[i]`` and ``mirrors[i]`` are one photo and its mirror image; ``folds[i]`` its fold. Each
    fold refits the gate (as :func:`fit_gate`) on the pets and the other folds' non-pets with their
    mirrors, sets its bias at each target on the ``calibration`` pets, and counts its fold's photos
    (not their mirrors) scored below 0.5. Only the fitting data is read: no held-out photo takes part.
    ``always`` are more negatives (gate inputs) that every fold fits on and none counts.
    """
    if always is None:
        always = negatives[:0]
    answered = torch.zeros(len(targets), dtype=torch.float64)
    for fold in folds.unique().tolist():
        kept = folds != fold
        x = torch.cat([pets, negatives[kept], mirrors[kept], always])
        y = torch.cat([torch.ones(len(pets)), torch.zeros(2 * int(kept.sum()) + len(always))])
        with torch.enable_grad():
            weight, bias = fit_weights(x, y, l2=1.0 / (2 * c * len(x)))
        held_apart, calibration_logits = negatives[~kept] @ weight + bias, calibration @ weight + bias
        for t, target in enumerate(targets):
            moved = operating_bias(calibration_logits, bias, target)
            answered[t] += float((held_apart - bias + moved < 0).sum())
    return (answered / len(negatives)).tolist()


def choose_operating_target(shares: list[float]) -> tuple[float, dict[str, float]]:
    """The fewest pets turned away, of ``OPERATING_TARGETS``, at which a gate holds ``NON_PET_FLOOR``.

    ``shares`` are :func:`cross_validated_shares` at ``OPERATING_TARGETS``; where none holds the floor, the
    default 0.5 %. Returns the target and the shares by target, for the gate's record.
    """
    passing = [target for target, share in zip(OPERATING_TARGETS, shares) if share >= NON_PET_FLOOR]
    by_target = {f"{t:.1%}": round(share, 4) for t, share in zip(OPERATING_TARGETS, shares)}
    return (min(passing) if passing else TARGET_PETS_TURNED_AWAY), by_target


def choose_taps(shares_by_taps: dict[tuple[int, ...], list[float]]) -> tuple[int, ...]:
    """Of candidate taps (each with its :func:`cross_validated_shares`), the one that turns away fewest pets.

    Ranked by the operating target :func:`choose_operating_target` gives it, then by its share of non-pets
    answered `neither` there; on a tie the candidate listed first (list the simpler ones first).
    """

    def rank(item: tuple[int, tuple[tuple[int, ...], list[float]]]) -> tuple[float, float, int]:
        order, (_, shares) = item
        target, _ = choose_operating_target(shares)
        return target, -shares[OPERATING_TARGETS.index(target)], order

    return min(enumerate(shares_by_taps.items()), key=rank)[1][0]


def operating_bias(logits_of_pets: torch.Tensor, bias: torch.Tensor, target: float = TARGET_PETS_TURNED_AWAY) -> float:
    """The bias that puts ``P(cat or dog) = 0.5`` where ``target`` of these pets score below it.

    ``logits_of_pets`` are the gate's logits (with ``bias``) on photos of cats and dogs that the
    fit did not see. The lower empirical quantile: on few photos, fewer rather than more are turned away.
    """
    quantile = torch.quantile(logits_of_pets.double(), target, interpolation="lower")
    # A hair above the quantile: the photo at it stays a pet under the float noise between PyTorch and ONNX Runtime.
    return float(bias) - float(quantile) + 1e-3


class LearntNeither(nn.Module):
    """A from-scratch net that learnt `neither` as its last class, answering as a gated cat/dog model does.

    A from-scratch net has no ImageNet backbone to ask what else a photo could be; trained with the data's
    `neither` folder as one more class, its softmax holds ``P(neither)`` itself. Outside it is a gated model:
    ``(cat/dog logits, P(cat or dog))``, so the predictor, the ONNX export, ``evaluate`` and ``serve`` need
    nothing of their own. ``neither_offset`` is added to the `neither` logit: ``catdog train`` sets it so that
    ``P(cat or dog) = 0.5`` is the operating point, as the open-set gate's bias does.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("neither_offset", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        pets, neither = logits[:, :-1], logits[:, -1:] + self.neither_offset
        # softmax, not logsumexp: ONNX Runtime's symbolic shape inference (before int8 quantization) cannot
        # follow the ReduceLogSumExp node logsumexp exports.
        return pets, 1.0 - torch.cat([pets, neither], dim=1).float().softmax(dim=1)[:, -1]


def pet_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """``log P(cat or dog) / P(neither)`` of a net whose last class is `neither`."""
    logits = logits.float()
    return logits[:, :-1].logsumexp(dim=1) - logits[:, -1]
