"""Squeeze-and-excitation: a channel gate computed from the map's global average.

    y = x * sigmoid(W_2 relu(W_1 mean_{Hs,Ws}(x)))        W_1: C -> C/r,  W_2: C/r -> C

Hu, Shen, Sun 2018, "Squeeze-and-Excitation Networks" (r = 16 in the paper). Channel attention: the "query" is the
map's global descriptor, the gate weights are per channel, not a distribution over positions.

Memory: O(B*C) beyond the input. Status: complete; matches a float64 reference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import VisionBlock, reduced
from .registry import register_block

__all__ = ["SqueezeExcitation"]


@register_block("se")
class SqueezeExcitation(VisionBlock):
    """``get_block("se", channels, reduction=16)``; weights: ``"channel" [B, C]`` (the gates)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__(channels)
        hidden = reduced(self.channels, reduction)
        self.reduction = reduction
        self.fc1 = nn.Linear(self.channels, hidden)
        self.fc2 = nn.Linear(hidden, self.channels)

    def _forward(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, dict[str, Tensor]]:
        squeezed = x.mean(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))  # (B, C)
        return x * gate[:, :, None, None], {"channel": gate}

    def sites(self, where: str) -> list[tuple[str, str, str]]:
        return [("channel", f"global average of {where} (one vector)", f"the channels of {where} (a gate each)")]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
