"""SAGAN self-attention: global self-attention behind a zero-initialized scalar gate.

    beta_j = softmax_i(f(x_j) . g(x_i)),    o_j = W_v sum_i beta_{j,i} h(x_i),    y = gamma o + x,   gamma = 0 at init

Zhang, Goodfellow, Metaxas, Odena 2018/2019, "Self-Attention Generative Adversarial Networks". Query and key
projections to ``C / reduction`` channels (8 in the paper), value to ``C / value_reduction`` (2, as in the
authors' and BigGAN's code), an output 1x1 convolution back to ``C``; no logit scaling; no conv biases (BigGAN).
``kv_stride`` max-pools keys and values (2 in the authors' code): the keys shrink ``kv_stride**2``-fold.
Spectral normalization is the GAN's training choice, not part of the block: apply
``torch.nn.utils.parametrizations.spectral_norm`` to the convolutions if wanted.

Because ``gamma`` starts at exactly 0, the block is exactly the identity at initialization (``torch.equal``),
while ``gamma`` still receives a gradient.

Memory: the fused SDPA path of :func:`attnlab.attend` (query/key zero-padded to the value width so the flash
kernel applies): O(N) in pixels, no ``[N, M]`` matrix. Weights: ``"pixel" [B, Hk, Wk]``, the query pixel's
distribution over the (pooled) key grid.

Status: complete; matches a float64 reference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import masked_softmax
from .base import VisionBlock, check_positive_int, reduced
from .functional import dot_attend, pool_keys, to_map, to_tokens
from .registry import register_block

__all__ = ["SAGANAttention"]


@register_block("sagan")
class SAGANAttention(VisionBlock):
    """``get_block("sagan", channels, reduction=8, value_reduction=2, kv_stride=1)``."""

    def __init__(self, channels: int, reduction: int = 8, value_reduction: int = 2, kv_stride: int = 1) -> None:
        super().__init__(channels)
        inner = reduced(self.channels, reduction)
        value_inner = reduced(self.channels, value_reduction, "value_reduction")
        self.reduction, self.value_reduction = reduction, value_reduction
        self.kv_stride = check_positive_int(kv_stride, "kv_stride")
        self.query = nn.Conv2d(self.channels, inner, 1, bias=False)  # f
        self.key = nn.Conv2d(self.channels, inner, 1, bias=False)  # g
        self.value = nn.Conv2d(self.channels, value_inner, 1, bias=False)  # h
        self.out = nn.Conv2d(value_inner, self.channels, 1, bias=False)  # W_v
        self.gamma = nn.Parameter(torch.zeros(()))

    def _forward(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, dict[str, Tensor]]:
        height, width = x.shape[-2:]
        query = to_tokens(self.query(x))  # (B, N, C/8)
        key_map = pool_keys(self.key(x), self.kv_stride)  # (B, C/8, Hk, Wk)
        key = to_tokens(key_map)  # (B, M, C/8)
        value = to_tokens(pool_keys(self.value(x), self.kv_stride))  # (B, M, C/2)
        context = dot_attend(query, key, value)  # (B, N, C/2)
        y = self.gamma * self.out(to_map(context, height, width)) + x  # (B, C, Hs, Ws)
        if pixel is None:
            return y, {}
        p = pixel[0] * width + pixel[1]
        row = masked_softmax(query[:, p : p + 1] @ key.transpose(1, 2))  # (B, 1, M)
        return y, {"pixel": row.reshape(-1, *key_map.shape[-2:])}

    def sites(self, where: str) -> list[tuple[str, str, str]]:
        keys = f"every pixel of {where}" + (
            f", max-pooled {self.kv_stride}x{self.kv_stride}" if self.kv_stride > 1 else ""
        )
        return [("self", f"every pixel of {where}", keys)]

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, reduction={self.reduction}, value_reduction={self.value_reduction}, "
            f"kv_stride={self.kv_stride}"
        )
