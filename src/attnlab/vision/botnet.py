"""Bottleneck Transformer block: a ResNet bottleneck whose 3x3 convolution is 2D-relative multi-head self-attention.

    h = relu(BN(W_1 x)),  h = relu(BN(MHSA_rel(h))),  y = relu(x + BN_0(W_2 h))     W_1: C -> C/4, W_2: C/4 -> C

Srinivas, Lin, Parmar, Shlens, Abbeel, Vaswani 2021, "Bottleneck Transformers for Visual Recognition". MHSA has
no output projection (``W_2`` follows); logits ``(q_i . k_j + q_i . r^H[dy] + q_i . r^W[dx]) / sqrt(d_h)`` with
relative embeddings that **work at any input size**: offsets beyond ``max_offset`` are clipped to the edge
embedding (see :mod:`attnlab.vision.relative`), exact below it. The last BatchNorm's scale ``BN_0`` starts at 0
(the residual gate, as timm's bottlenecks do; Goyal et al. 2017): the block starts as ``relu(x)``, which is ``x``
after a ReLU stage. Stride-2 variants (BoTNet's first c5 block) are not provided: the block keeps the shape.

Memory: the dense relative bias ``[B, H, N, N]`` (at the bottleneck width), estimated and refused above
``memory_limit``; place it on the last, low-resolution stage as the paper does. Weights: ``"pixel" [B, H, Hs, Ws]``.

Status: complete; matches a float64 reference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import VisionBlock, reduced
from .memory import DEFAULT_MEMORY_LIMIT
from .registry import register_block
from .relative import RelativeSelfAttention2d

__all__ = ["BoTBlock"]


@register_block("botnet")
class BoTBlock(VisionBlock):
    """``get_block("botnet", channels, heads=4, reduction=4, max_offset=32, memory_limit=1 GiB)``."""

    def __init__(
        self,
        channels: int,
        heads: int = 4,
        reduction: int = 4,
        max_offset: int = 32,
        memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        super().__init__(channels)
        mid = reduced(self.channels, reduction)
        self.heads, self.reduction = heads, reduction
        self.reduce = nn.Conv2d(self.channels, mid, 1, bias=False)
        self.reduce_norm = nn.BatchNorm2d(mid)
        self.qkv = nn.Conv2d(mid, 3 * mid, 1, bias=False)
        self.attention = RelativeSelfAttention2d(mid, mid, heads, max_offset, memory_limit, "botnet")
        self.attention_norm = nn.BatchNorm2d(mid)
        self.expand = nn.Conv2d(mid, self.channels, 1, bias=False)
        self.expand_norm = nn.BatchNorm2d(self.channels)
        nn.init.zeros_(self.expand_norm.weight)  # residual gate: the branch starts at 0

    def _forward(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, dict[str, Tensor]]:
        h = torch.relu(self.reduce_norm(self.reduce(x)))  # (B, C/4, Hs, Ws)
        query, key, value = self.qkv(h).chunk(3, dim=1)  # 3 x (B, C/4, Hs, Ws)
        context, weights = self.attention(query, key, value, pixel)
        h = torch.relu(self.attention_norm(context))
        y = torch.relu(x + self.expand_norm(self.expand(h)))  # (B, C, Hs, Ws)
        return y, {} if weights is None else {"pixel": weights}

    def sites(self, where: str) -> list[tuple[str, str, str]]:
        return [
            (
                "self",
                f"every pixel of {where}, bottlenecked ({self.heads} heads, 2D relative positions)",
                f"every pixel of {where}, bottlenecked",
            )
        ]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, heads={self.heads}, reduction={self.reduction}"
