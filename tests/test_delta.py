"""A fine-tune packed as its change to pretrained weights (catdog.models.delta), and back."""

from __future__ import annotations

import torch

from catdog.models.delta import FACTORS, pack_change, unpack_change


def pretrained_and_tuned() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    pretrained = {
        "conv.weight": torch.randn(96, 128, 1, 1, generator=generator),  # a 1x1 convolution, changed at rank 3
        "bn.running_var": torch.rand(96, generator=generator) + 0.5,  # changed, small
        "dw.weight": torch.randn(96, 1, 3, 3, generator=generator),  # changed; too narrow for rank 8
        "frozen.weight": torch.randn(200, 300, generator=generator),  # left as it was
        "bn.num_batches_tracked": torch.tensor(10),
    }
    low_rank = torch.randn(96, 3, generator=generator) @ torch.randn(3, 128, generator=generator)
    tuned = {
        "conv.weight": pretrained["conv.weight"] + 0.05 * low_rank.view(96, 128, 1, 1),
        "bn.running_var": pretrained["bn.running_var"] * 1.3,
        "dw.weight": pretrained["dw.weight"] + 0.01,
        "frozen.weight": pretrained["frozen.weight"].clone(),
        "bn.num_batches_tracked": torch.tensor(250),
        "head.weight": torch.randn(2, 96, generator=generator),  # new: not in the pretrained weights
    }
    return pretrained, tuned


def test_a_low_rank_change_comes_back_within_int8_rounding_and_the_rest_exactly():
    pretrained, tuned = pretrained_and_tuned()
    packed = pack_change(tuned, pretrained, rank=8)
    restored = unpack_change(pretrained, packed)
    assert set(restored) == set(tuned)
    change = tuned["conv.weight"] - pretrained["conv.weight"]
    error = restored["conv.weight"] - tuned["conv.weight"]
    assert error.norm() < 0.02 * change.norm()  # int8 factors of an exact rank-3 change
    assert torch.equal(restored["frozen.weight"], pretrained["frozen.weight"])
    assert torch.equal(restored["head.weight"], tuned["head.weight"])  # new: as it was
    assert restored["bn.num_batches_tracked"].item() == 250
    for name in ("dw.weight", "bn.running_var"):  # other changes: whole, in half precision
        assert torch.allclose(restored[name], tuned[name], rtol=1e-3, atol=2e-3)
        assert restored[name].dtype == torch.float32


def test_only_the_change_is_stored_and_large_matrices_as_int8_factors():
    pretrained, tuned = pretrained_and_tuned()
    packed = pack_change(tuned, pretrained, rank=8)
    assert "frozen.weight" not in packed and "conv.weight" not in packed
    u, v = (packed["conv.weight" + suffix] for suffix in FACTORS)
    assert u.dtype == v.dtype == torch.int8 and u.shape == (96, 8) and v.shape == (8, 128)
    assert packed["dw.weight"].dtype == packed["bn.running_var"].dtype == torch.float16
    assert packed["head.weight"].dtype == torch.float32
    stored = sum(t.numel() * t.element_size() for t in packed.values())
    assert stored < sum(t.numel() * t.element_size() for t in tuned.values()) / 8


def test_a_rank_above_what_pays_stores_the_change_whole():
    pretrained, tuned = pretrained_and_tuned()
    packed = pack_change(tuned, pretrained, rank=40)  # 4 * 40 * (96 + 128) bytes > 96 * 128 * 2
    assert packed["conv.weight"].dtype == torch.float16
    restored = unpack_change(pretrained, packed)
    assert torch.allclose(restored["conv.weight"], tuned["conv.weight"], atol=5e-3)
