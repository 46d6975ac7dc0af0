"""Efficient channel attention: a channel gate from a 1-D convolution across the pooled channels.

    y = x * sigmoid(conv1d_k(mean_{Hs,Ws}(x)))        k = nearest odd of |(log2 C + b) / gamma|, gamma=2, b=1

Wang et al. 2020, "ECA-Net: Efficient Channel Attention for Deep CNNs". No dimensionality reduction: each channel's
gate sees its ``k`` neighbouring channels (zero-padded at the ends), ``k`` adaptive to ``C`` unless given.

Memory: O(B*C). Status: complete; matches a float64 reference.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import VisionBlock, check_odd
from .registry import register_block

__all__ = ["EfficientChannelAttention", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The paper's adaptive kernel size: the odd number nearest above ``|(log2 C + b) / gamma|``."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@register_block("eca")
class EfficientChannelAttention(VisionBlock):
    """``get_block("eca", channels, kernel_size=None)`` (None: adaptive); weights: ``"channel" [B, C]``."""

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__(channels)
        self.kernel_size = (
            eca_kernel_size(self.channels) if kernel_size is None else check_odd(kernel_size, "kernel_size")
        )
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=self.kernel_size // 2, bias=False)

    def _forward(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, dict[str, Tensor]]:
        squeezed = x.mean(dim=(2, 3)).unsqueeze(1)  # (B, 1, C): channels as a 1-D signal
        gate = torch.sigmoid(self.conv(squeezed)).squeeze(1)  # (B, C)
        return x * gate[:, :, None, None], {"channel": gate}

    def sites(self, where: str) -> list[tuple[str, str, str]]:
        k = self.kernel_size
        return [("channel", f"global average of {where} (one vector)", f"the channels of {where}, {k} at a time")]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
