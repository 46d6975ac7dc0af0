"""Multi-head self-attention over a map with 2D relative position logits (shared by AA-conv and BoTNet).

    logits_ij = (q_i . k_j + q_i . r^H[y_j - y_i] + q_i . r^W[x_j - x_i]) / sqrt(d_h)

Bello et al. 2019 (Sec. 3.2) and Srinivas et al. 2021: one learned embedding per row offset and one per column
offset, shared by the heads. **Any input size**: offsets are clipped to ``[-max_offset, max_offset]`` (Shaw et al.
2018 clip relative distances the same way), so the offsets a map never saw in training share the edge
embedding; on maps up to ``(max_offset + 1)`` pixels per side this is exactly the papers' unclipped form.

The relative logits ``q_i . r[o]`` are computed for every offset once, ``[B, H, N, 2*max_offset + 1]``, and
gathered into row and column logits ``[B, H, N, Hs]`` and ``[B, H, N, Ws]`` (Bello's "relative to absolute").
Their sum is passed to :func:`attnlab.attend` as ``bias=``, a dense ``[B, H, N, N]`` tensor: the core adds it to
the logits. Memory is therefore quadratic in pixels (about 6 such tensors with autograd: the bias, its gradient
and SDPA's math path, which a bias that needs a gradient forces): it is estimated before anything is allocated
and refused above ``memory_limit``. These blocks belong on low-resolution stages (BoTNet: the last one).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import masked_softmax
from .base import check_divides, check_positive_int
from .functional import dot_attend, merge_heads, split_heads
from .memory import check_limit, check_memory

__all__ = ["RelativePosition2d", "RelativeSelfAttention2d"]


class RelativePosition2d(nn.Module):
    """Learned row and column offset embeddings ``r^H, r^W [2*max_offset + 1, head_dim]``, clipped beyond."""

    def __init__(self, head_dim: int, max_offset: int = 32) -> None:
        super().__init__()
        self.head_dim = check_positive_int(head_dim, "head_dim")
        self.max_offset = check_positive_int(max_offset, "max_offset")
        self.height = nn.Parameter(torch.randn(2 * max_offset + 1, head_dim) * head_dim**-0.5)  # r^H
        self.width = nn.Parameter(torch.randn(2 * max_offset + 1, head_dim) * head_dim**-0.5)  # r^W

    def bias(self, query: Tensor, height: int, width: int) -> Tensor:
        """``q_i . (r^H[y_j - y_i] + r^W[x_j - x_i])`` for queries ``[B, H, N, D]`` on the map: ``[B, H, N, N]``."""
        device = query.device
        rows_of = torch.arange(height * width, device=device) // width  # (N,): y of each pixel, ONNX-safe
        cols_of = torch.arange(width, device=device).repeat(height)  # (N,): x of each pixel
        rows = self._axis(query, self.height, rows_of, height)  # (B, H, N, Hs)
        cols = self._axis(query, self.width, cols_of, width)  # (B, H, N, Ws)
        return (rows[..., :, None] + cols[..., None, :]).flatten(-2)  # (B, H, N, Hs, Ws) -> (B, H, N, N)

    def _axis(self, query: Tensor, table: Tensor, positions: Tensor, size: int) -> Tensor:
        every = query @ table.t()  # (B, H, N, D) @ (D, 2M+1) -> (B, H, N, 2M+1): q . r[o] for each offset
        keys = torch.arange(size, device=query.device)
        offsets = (keys[None, :] - positions[:, None]).clamp(-self.max_offset, self.max_offset) + self.max_offset
        return every.gather(-1, offsets.expand(*every.shape[:2], *offsets.shape))  # (B, H, N, size)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, max_offset={self.max_offset}"


class RelativeSelfAttention2d(nn.Module):
    """Heads, scaling, relative bias and the core call, on query/key/value maps projected by the owning block."""

    def __init__(
        self, key_dim: int, value_dim: int, heads: int, max_offset: int, memory_limit: int | None, block: str
    ) -> None:
        super().__init__()
        self.heads = heads
        self.key_head_dim = check_divides(heads, key_dim, "key channels")
        check_divides(heads, value_dim, "value channels")
        self.memory_limit = check_limit(memory_limit)
        self.block = block
        self.relative = RelativePosition2d(self.key_head_dim, max_offset)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, pixel: tuple[int, int] | None
    ) -> tuple[Tensor, Tensor | None]:
        """Maps ``query, key [B, Dk, Hs, Ws]``, ``value [B, Dv, Hs, Ws]`` -> context ``[B, Dv, Hs, Ws]`` and, for
        ``pixel``, that query's weights ``[B, H, Hs, Ws]``."""
        batch, _, height, width = query.shape
        pixels = height * width
        check_memory(
            self.block,
            "relative logits [B, H, N, N]",
            (batch, self.heads, pixels, pixels),
            query.dtype,
            6 if torch.is_grad_enabled() else 2,
            self.memory_limit,
            "Place the block at a lower-resolution stage or use fewer heads",
        )
        q = split_heads(query, self.heads) * self.key_head_dim**-0.5  # (B, H, N, Dk/H)
        k, v = split_heads(key, self.heads), split_heads(value, self.heads)  # (B, H, N, Dk/H), (B, H, N, Dv/H)
        bias = self.relative.bias(q, height, width)  # (B, H, N, N)
        context = merge_heads(dot_attend(q, k, v, bias=bias), height, width)  # (B, Dv, Hs, Ws)
        if pixel is None:
            return context, None
        p = pixel[0] * width + pixel[1]
        logits = q[:, :, p : p + 1] @ k.transpose(-1, -2) + bias[:, :, p : p + 1]  # (B, H, 1, N)
        return context, masked_softmax(logits).reshape(batch, self.heads, height, width)
