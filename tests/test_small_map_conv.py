"""catnet's convolutions compute the weight gradient of small bf16 maps on a CPU as one matrix product.

That path (``SmallMapConv2d``) must give the gradients oneDNN gives, be taken only where it measured
faster (maps of at most 6x6, bf16 autocast on a CPU, training), and leave everything else to
``nn.Conv2d``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from catdog.models import build_model
from catdog.models.scratch import SmallMapConv2d


def twins(c_in: int, c_out: int, kernel: int, stride: int) -> tuple[SmallMapConv2d, nn.Conv2d]:
    ours = SmallMapConv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
    plain = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
    plain.load_state_dict(ours.state_dict())
    return ours, plain


def gradients(conv: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", torch.bfloat16):
        y = conv(x)
    y.backward(grad_out.to(y.dtype))
    return y.detach().float(), x.grad.float(), conv.weight.grad.float(), y.grad_fn


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize(("side", "kernel", "stride"), [(4, 3, 1), (8, 3, 2), (6, 3, 1), (3, 1, 1), (5, 3, 1)])
def test_small_map_gradients_match_onednn(side: int, kernel: int, stride: int) -> None:
    torch.manual_seed(0)
    ours, plain = twins(32, 48, kernel, stride)
    x = torch.randn(8, 32, side, side).contiguous(memory_format=torch.channels_last)
    out_side = (side + 2 * (kernel // 2) - kernel) // stride + 1
    grad_out = torch.randn(8, 48, out_side, out_side)
    y, grad_x, grad_w, grad_fn = gradients(ours, x, grad_out)
    y_ref, grad_x_ref, grad_w_ref, ref_fn = gradients(plain, x, grad_out)
    assert "ConvGemmWeightGrad" in type(grad_fn).__name__  # the matrix-product path was taken ...
    assert "ConvGemmWeightGrad" not in type(ref_fn).__name__
    assert torch.equal(y, y_ref)  # ... with nn.Conv2d's forward pass,
    assert relative_error(grad_x, grad_x_ref) < 1e-6  # its input gradient,
    assert relative_error(grad_w, grad_w_ref) < 1e-2  # and its weight gradient up to bf16 rounding
    assert ours.weight.grad.dtype == torch.float32  # the fp32 master weights get fp32 gradients


@pytest.mark.parametrize("case", ["8x8 map", "fp32", "no grad", "bias"])
def test_everything_else_stays_with_nn_conv2d(case: str) -> None:
    conv = SmallMapConv2d(16, 16, 3, 1, 1, bias=case == "bias")
    x = torch.randn(2, 16, 8 if case == "8x8 map" else 4, 8 if case == "8x8 map" else 4)
    with torch.autocast("cpu", torch.bfloat16, enabled=case != "fp32"), torch.set_grad_enabled(case != "no grad"):
        y = conv(x)
    assert y.grad_fn is None if case == "no grad" else "ConvGemmWeightGrad" not in type(y.grad_fn).__name__


def test_a_catnet_training_step_gets_the_same_gradients_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = build_model("catnet", 2, pretrained=False).to(memory_format=torch.channels_last).train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)  # not the zero-initialised last norm of each block: every layer learns
    x = torch.randn(16, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (16,))

    def step_gradients() -> dict[str, torch.Tensor]:
        torch.manual_seed(1)  # the same dropout mask
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16):
            nn.functional.cross_entropy(model(x), labels).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    ours = step_gradients()
    monkeypatch.setattr(SmallMapConv2d, "MAX_POSITIONS", 0)  # every convolution back on oneDNN
    reference = step_gradients()
    # Only the 4x4 stage's weight gradients took the other path; after it, they differ by bf16 rounding
    # (8 bits: the same sum summed in another order; 0.58 % for one of them on an AVX2-only EPYC, under
    # 0.1 % on the CPUs before it). A wrong gradient is off by its own size.
    assert any(not torch.equal(ours[name], reference[name]) for name in ours if name.startswith("stages.3"))
    for name in ours:
        assert relative_error(ours[name], reference[name]) < 1e-2, name
