"""Criss-cross attention: each pixel attends to its row and its column; applied twice, every pixel reaches every other.

    A_u = softmax over the H + W - 1 pixels of u's row and column of (Q_u . K_j),
    y_u = gamma sum_j A_uj V_j + x_u,   gamma = 0 at init,   recurrence: x <- CCA(x), R times, shared weights

Huang et al. 2019, "CCNet: Criss-Cross Attention for Semantic Segmentation" (R = 2). Queries and keys at
``C / reduction`` channels (8 in the paper), values at ``C``, no logit scaling; the pixel itself is counted once
(the authors mask it out of the column branch). Pure PyTorch: two einsums per branch and the core's masked
softmax, no CUDA extension. CCNet's surrounding 3x3 convolutions and concatenation belong to its segmentation
head, not to this block.

Memory: logits and weights ``[B, Hs, Ws, Hs + Ws]`` per recurrence: O(N * (Hs + Ws)), i.e. N^1.5 on a square
map, never ``[N, N]``. Weights: ``"pixel" [B, R, Hs, Ws]``, the query pixel's weights at each recurrence
(non-zero only on its row and column).

Status: complete; matches a float64 reference that masks a full ``[N, N]`` softmax to the cross.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import masked_softmax
from .base import VisionBlock, check_positive_int, reduced
from .registry import register_block

__all__ = ["CrissCrossAttention"]


@register_block("criss_cross")
class CrissCrossAttention(VisionBlock):
    """``get_block("criss_cross", channels, reduction=8, recurrence=2)``."""

    def __init__(self, channels: int, reduction: int = 8, recurrence: int = 2) -> None:
        super().__init__(channels)
        inner = reduced(self.channels, reduction)
        self.reduction, self.recurrence = reduction, check_positive_int(recurrence, "recurrence")
        self.query = nn.Conv2d(self.channels, inner, 1)
        self.key = nn.Conv2d(self.channels, inner, 1)
        self.value = nn.Conv2d(self.channels, self.channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def _forward(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, dict[str, Tensor]]:
        maps = []
        for _ in range(self.recurrence):
            x, weights = self._once(x, pixel)
            maps.append(weights)
        return x, {} if pixel is None else {"pixel": torch.stack(maps, dim=1)}  # (B, R, Hs, Ws)

    def _once(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, Tensor | None]:
        height, width = x.shape[-2:]
        query, key, value = self.query(x), self.key(x), self.value(x)  # (B, C', Hs, Ws) x2, (B, C, Hs, Ws)
        column = torch.einsum("bcyx,bczx->byxz", query, key)  # (B, Hs, Ws, Hs): u=(y,x) with (z,x)
        row = torch.einsum("bcyx,bcyz->byxz", query, key)  # (B, Hs, Ws, Ws): u=(y,x) with (y,z)
        eye = torch.eye(height, dtype=torch.bool, device=x.device)
        allowed = torch.cat(
            [(~eye)[:, None, :].expand(height, width, height), eye.new_ones(height, width, width)], dim=-1
        )  # (Hs, Ws, Hs+Ws): u itself counts once, in its row
        weights = masked_softmax(torch.cat([column, row], dim=-1), allowed)  # (B, Hs, Ws, Hs+Ws)
        on_column, on_row = weights.split([height, width], dim=-1)
        context = torch.einsum("byxz,bczx->bcyx", on_column, value) + torch.einsum(
            "byxz,bcyz->bcyx", on_row, value
        )  # (B, C, Hs, Ws)
        y = self.gamma * context + x
        if pixel is None:
            return y, None
        py, px = pixel
        cross = weights.new_zeros(x.shape[0], height, width)
        cross[:, :, px] = on_column[:, py, px]  # (B, Hs): its column
        cross[:, py, :] += on_row[:, py, px]  # (B, Ws): its row (itself included once)
        return y, cross

    def sites(self, where: str) -> list[tuple[str, str, str]]:
        query = f"every pixel of {where} ({self.recurrence} passes, shared weights)"
        return [("self", query, f"its row and column in {where}")]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, recurrence={self.recurrence}"
