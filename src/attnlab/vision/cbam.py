"""Convolutional block attention module: a channel gate, then a spatial gate.

    x' = x  * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))              channel gate [B, C], shared MLP C -> C/r -> C
    y  = x' * sigmoid(BN(conv_7x7([mean_C(x'); max_C(x')])))           spatial gate [B, Hs, Ws]

Woo, Park, Lee, Kweon 2018, "CBAM: Convolutional Block Attention Module" (r = 16, k = 7; the BatchNorm after the
spatial convolution follows the authors' code). The spatial gate is returned as data: ``weights["spatial"]``.

Memory: O(B*C + B*Hs*Ws). Status: complete; matches a float64 reference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import VisionBlock, check_odd, reduced
from .registry import register_block

__all__ = ["CBAM"]


@register_block("cbam")
class CBAM(VisionBlock):
    """``get_block("cbam", channels, reduction=16, kernel_size=7)``.

    Weights: ``"channel" [B, C]`` and ``"spatial" [B, Hs, Ws]`` (the gates, each in (0, 1)).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__(channels)
        hidden = reduced(self.channels, reduction)
        self.reduction, self.kernel_size = reduction, check_odd(kernel_size, "kernel_size")
        self.mlp = nn.Sequential(nn.Linear(self.channels, hidden), nn.ReLU(), nn.Linear(hidden, self.channels))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_norm = nn.BatchNorm2d(1)

    def _forward(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, dict[str, Tensor]]:
        channel = torch.sigmoid(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3))))  # (B, C)
        x = x * channel[:, :, None, None]
        pooled = torch.stack([x.mean(dim=1), x.amax(dim=1)], dim=1)  # (B, 2, Hs, Ws)
        spatial = torch.sigmoid(self.spatial_norm(self.spatial(pooled)))  # (B, 1, Hs, Ws)
        return x * spatial, {"channel": channel, "spatial": spatial.squeeze(1)}

    def sites(self, where: str) -> list[tuple[str, str, str]]:
        k = self.kernel_size
        return [
            ("channel", f"average- and max-pooled {where} (two vectors)", f"the channels of {where} (a gate each)"),
            (
                "spatial",
                f"channel mean and max of {where}, {k}x{k} around each pixel",
                f"the pixels of {where} (a gate each)",
            ),
        ]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, kernel_size={self.kernel_size}"
