"""Reshapes and the fused attention call shared by the vision blocks (one place, so they cannot drift).

Axis letters as in :mod:`attnlab.core`: B batch, H heads, C channels, Hs x Ws the map, N = Hs*Ws query pixels,
M key pixels (N, or fewer after key/value pooling), D features per head.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..core import attend

__all__ = ["dot_attend", "merge_heads", "pool_keys", "split_heads", "to_map", "to_tokens"]


def to_tokens(x: Tensor) -> Tensor:
    """``[B, C, Hs, Ws] -> [B, N, C]`` (pixels in row-major order)."""
    return x.flatten(2).transpose(1, 2)  # (B, C, N) -> (B, N, C)


def to_map(tokens: Tensor, height: int, width: int) -> Tensor:
    """``[B, N, C] -> [B, C, Hs, Ws]``."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)  # (B, C, Hs, Ws)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``[B, H*D, Hs, Ws] -> [B, H, N, D]``: head ``h`` owns channels ``h*D .. (h+1)*D - 1``."""
    batch, channels = x.shape[:2]
    return x.reshape(batch, heads, channels // heads, -1).transpose(-1, -2)  # (B, H, D, N) -> (B, H, N, D)


def merge_heads(x: Tensor, height: int, width: int) -> Tensor:
    """``[B, H, N, D] -> [B, H*D, Hs, Ws]`` (inverse of :func:`split_heads`)."""
    batch, heads, _, dim = x.shape
    return x.transpose(-1, -2).reshape(batch, heads * dim, height, width)  # (B, H, D, N) -> (B, H*D, Hs, Ws)


def pool_keys(x: Tensor, stride: int) -> Tensor:
    """Key/value downsampling by ``stride x stride`` max-pooling (Wang 2018 Sec. 3.3; SAGAN/BigGAN code).

    ``ceil_mode`` keeps the last, partial window, so odd sizes work: 17x23 with stride 2 gives 9x12 keys.
    """
    return x if stride == 1 else F.max_pool2d(x, stride, stride, ceil_mode=True)


def dot_attend(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None = None) -> Tensor:
    """``softmax(query key^T + bias) value`` through :func:`attnlab.attend` with the unscaled ``"dot"`` score.

    Callers scale ``query`` themselves. The core's fused path keeps memory linear in pixels (it pads unequal
    query/key and value widths for SDPA's fused kernels); a float ``bias`` is itself ``[.., N, M]``.
    """
    return attend(query, key, value, "dot", bias=bias).context  # (B, (H,) N, Dv)
