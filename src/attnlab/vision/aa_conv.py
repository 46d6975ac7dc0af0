"""Attention-augmented convolution: a convolution's channels concatenated with multi-head self-attention's.

    AAConv(x) = concat[ Conv_k(x),  W_O MHA(x) ],   MHA logits (q_i . k_j + q_i . r^H[dy] + q_i . r^W[dx]) / sqrt(d_h)

Bello, Zoph, Vaswani, Shlens, Le 2019, "Attention Augmented Convolutional Networks". Of the ``C`` output
channels, ``C // reduction`` come from attention (``d_v``; ``d_k = d_v``) and the rest from a ``k x k``
convolution; queries, keys and values come from one 1x1 convolution, heads split the channels, the relative
logits (height and width, shared by the heads) go to the core as ``bias=``. With ``reduction=1`` the layer is
fully attentional (no convolution). It is a *layer* (it replaces a convolution), with no residual and no gate.

Positions work at any size: offsets are clipped at ``max_offset`` (see :mod:`attnlab.vision.relative`).
Memory: the dense relative bias is ``[B, H, N, N]``, estimated and refused above ``memory_limit``; the rest is
O(N). Weights: ``"pixel" [B, H, Hs, Ws]``, per head, of the query pixel.

Status: complete; matches a float64 reference that forms every pair's logit from the offset tables.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import VisionBlock, check_odd, reduced
from .memory import DEFAULT_MEMORY_LIMIT
from .registry import register_block
from .relative import RelativeSelfAttention2d

__all__ = ["AugmentedConv"]


@register_block("aa_conv")
class AugmentedConv(VisionBlock):
    """``get_block("aa_conv", channels, heads=4, reduction=2, kernel_size=3, max_offset=32, memory_limit=1 GiB)``."""

    def __init__(
        self,
        channels: int,
        heads: int = 4,
        reduction: int = 2,
        kernel_size: int = 3,
        max_offset: int = 32,
        memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        super().__init__(channels)
        self.attention_channels = reduced(self.channels, reduction)  # d_v = d_k
        self.reduction, self.heads, self.kernel_size = reduction, heads, check_odd(kernel_size, "kernel_size")
        dv = self.attention_channels
        conv_channels = self.channels - dv
        self.conv = (
            nn.Conv2d(self.channels, conv_channels, kernel_size, padding=kernel_size // 2) if conv_channels else None
        )
        self.qkv = nn.Conv2d(self.channels, 3 * dv, 1)  # [W_q; W_k; W_v]
        self.attention = RelativeSelfAttention2d(dv, dv, heads, max_offset, memory_limit, "aa_conv")
        self.attention_out = nn.Conv2d(dv, dv, 1)  # W_O

    def _forward(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, dict[str, Tensor]]:
        query, key, value = self.qkv(x).chunk(3, dim=1)  # 3 x (B, d_v, Hs, Ws)
        context, weights = self.attention(query, key, value, pixel)  # (B, d_v, Hs, Ws)
        attended = self.attention_out(context)
        y = attended if self.conv is None else torch.cat([self.conv(x), attended], dim=1)  # (B, C, Hs, Ws)
        return y, {} if weights is None else {"pixel": weights}

    def sites(self, where: str) -> list[tuple[str, str, str]]:
        query = f"every pixel of {where} ({self.heads} heads, 2D relative positions)"
        return [("self", query, f"every pixel of {where}")]

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, heads={self.heads}, attention_channels={self.attention_channels}, "
            f"kernel_size={self.kernel_size}"
        )
