"""Networks trained from scratch: the ``seed-cnn`` baseline and ``catnet``, a small residual net.

Both take any square input size: ``seed-cnn`` derives its flatten size at the first forward
pass (a lazy Dense layer, materialised by a dummy batch before training and by the saved
weights when a model directory is loaded); ``catnet`` pools globally.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _conv_pool(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2)]


def _glorot(layer: nn.Module) -> None:
    """Keras' default initialisation: Glorot-uniform weights, zero biases."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


class _GlorotLazyLinear(nn.LazyLinear):
    """A LazyLinear initialised like a Keras Dense layer when its input size becomes known."""

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            _glorot(self)


class SeedCNN(nn.Sequential):
    """The classic baseline, exactly: Conv32-Pool-Conv64-Pool-Conv128-Pool-Conv128-Pool-Dense512-Dropout-Dense.

    3x3 'valid' convolutions, 2x2 max pooling and Keras' default initialisation as in the
    original Keras model (PyTorch's default initialisation leaves this deep plain ReLU net
    stuck at chance for thousands of steps); softmax is applied by the loss (cross-entropy)
    and by the Predictor, so the net returns logits.
    """

    # Four rounds of a 3x3 'valid' convolution and a 2x2 pooling leave at least one pixel from 46 px up.
    MIN_SIZE = 46

    def __init__(self, num_classes: int) -> None:
        super().__init__(
            *_conv_pool(3, 32),
            *_conv_pool(32, 64),
            *_conv_pool(64, 128),
            *_conv_pool(128, 128),
            nn.Flatten(),
            _GlorotLazyLinear(512),  # in_features = 128 * side * side, derived from the input size
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(512, num_classes),
        )
        for layer in self:
            if isinstance(layer, nn.Conv2d | nn.Linear) and not isinstance(layer, nn.LazyLinear):
                _glorot(layer)


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight gradient, on maps of at most 6x6 in bf16 on a CPU, is one matrix product.

    oneDNN's AMX kernel for the weight gradient works image by image, and on catnet's last stage
    (4x4 at 128 px, 3x3 at 96 px) that leaves its tiles nearly empty: for 384 channels at 4x4 it took
    9.3 ms, against 2.5 ms for the same sum written as im2col and one bf16 matrix product over the whole
    batch (docs/benchmarks.md). From 8x8 up, and in fp32, oneDNN is as fast or faster, so everything else,
    the forward pass and the input gradient included, stays with ``nn.Conv2d``. The weights, their
    names and the outputs are those of ``nn.Conv2d``: saved models, ONNX export and the GPU are untouched.
    """

    MAX_POSITIONS = 36  # output positions (6x6) up to which the matrix product measured faster

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._gemm_weight_grad_pays(x):
            dtype = torch.get_autocast_dtype("cpu")
            return _ConvGemmWeightGrad.apply(x.to(dtype), self.weight.to(dtype), self.stride, self.padding)
        return super().forward(x)

    def _gemm_weight_grad_pays(self, x: torch.Tensor) -> bool:
        if not (x.device.type == "cpu" and torch.is_grad_enabled() and self.weight.requires_grad):
            return False
        if not (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16):
            return False
        if self.bias is not None or self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros":
            return False
        out_h, out_w = (
            (size + 2 * pad - kernel) // stride + 1
            for size, pad, kernel, stride in zip(x.shape[-2:], self.padding, self.kernel_size, self.stride)
        )
        return out_h * out_w <= self.MAX_POSITIONS


class _ConvGemmWeightGrad(torch.autograd.Function):
    """conv2d (no bias, one group) with the weight gradient as ``grad_out^T @ im2col(x)``."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            # oneDNN's input gradient as nn.Conv2d's backward asks for it, from the saved input itself:
            # torch.nn.grad.conv2d_input (which passes a stand-in for x) rounded differently in bf16 on an
            # AVX2-only EPYC (0.5 % relative error).
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, ctx.stride, ctx.padding, (1, 1), False, (0, 0), 1, (True, False, False)
            )[0]
        c_out, c_in, k_h, k_w = weight.shape
        (s_h, s_w), (p_h, p_w) = ctx.stride, ctx.padding
        out_h, out_w = grad_out.shape[-2:]
        # Channels-last views: a row per output position, (kernel row, kernel column, channel) along it.
        padded = F.pad(x, (p_w, p_w, p_h, p_h)).permute(0, 2, 3, 1)
        taps = [
            padded[:, i : i + s_h * (out_h - 1) + 1 : s_h, j : j + s_w * (out_w - 1) + 1 : s_w]
            for i in range(k_h)
            for j in range(k_w)
        ]
        columns = torch.stack(taps, 3).reshape(-1, k_h * k_w * c_in)
        grad_w = grad_out.permute(0, 2, 3, 1).reshape(-1, c_out).t() @ columns
        return grad_x, grad_w.view(c_out, k_h, k_w, c_in).permute(0, 3, 1, 2), None, None


# SiLU is never in place: its backward needs its input, so autograd would save a copy of it first.
def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(SmallMapConv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.SiLU())


class ResidualBlock(nn.Module):
    """Pre-activation-free basic block (conv-BN-SiLU, conv-BN, add, SiLU) with a projected shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, stride)
        self.conv2 = nn.Sequential(SmallMapConv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            # Average-pool then 1x1 conv ("ResNet-D" shortcut): no input pixel is skipped.
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity(),
                SmallMapConv2d(c_in, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out),
            )
        self.act = nn.SiLU()
        nn.init.zeros_(self.conv2[1].weight)  # each block starts as an identity: faster, stabler early training

    def forward(self, x):
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class CatNet(nn.Module):
    """A compact ResNet for small CPUs: stride-2 stem, four residual stages, global pooling.

    Sized so one training step costs about as much as ``seed-cnn`` at the same resolution,
    but with batch norm, residual connections and global pooling it trains far faster and
    generalises better.

    Every width is a multiple of 16: PyTorch's channels-last CPU batch norm works on 16 channels
    at a time, and on 24 it ran about 3x slower per element (docs/benchmarks.md). Models trained before the
    stem went from 24 to 32 channels still load: :meth:`options_for` reads the width from their weights.
    """

    def __init__(
        self,
        num_classes: int,
        widths: tuple[int, ...] = (48, 96, 192, 384),
        depths: tuple[int, ...] = (1, 2, 2, 1),
        dropout: float = 0.2,
        stem_width: int = 32,
    ) -> None:
        super().__init__()
        # Two stride-2 convolutions: the expensive full-resolution layers are what makes small CPUs slow.
        self.stem = nn.Sequential(_conv_bn(3, stem_width, stride=2), _conv_bn(stem_width, widths[0], stride=2))
        stages = []
        c_in = widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            first = ResidualBlock(c_in, width, stride=1 if i == 0 else 2)
            stages.append(nn.Sequential(first, *[ResidualBlock(width, width, 1) for _ in range(depth - 1)]))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, num_classes)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))

    @staticmethod
    def options_for(state: dict) -> dict:
        """The constructor options that ``state`` (saved weights) was trained with."""
        return {"stem_width": state["stem.0.0.weight"].shape[0]} if "stem.0.0.weight" in state else {}


SCRATCH_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "seed-cnn": SeedCNN,
    "catnet": CatNet,
}
