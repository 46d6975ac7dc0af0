"""Stand-alone local self-attention: each pixel attends to its ``k x k`` neighbourhood, with relative positions.

    y_ij = sum_{(a,b) in N_k(i,j)} softmax_ab(q_ij . k_ab + q_ij . r_{a-i,b-j}) v_ab,   r_{dy,dx} = [r^row_dy; r^col_dx]

Ramachandran, Parmar, Vaswani, Bello, Levskaya, Shlens 2019, "Stand-Alone Self-Attention in Vision Models"
(Sec. 3): multi-head (heads split the channels), queries/keys/values from 1x1 convolutions, no logit scaling,
relative embeddings of the row offset (first half of each head's features) and of the column offset (second
half), shared by the heads. Neighbours outside the image are masked out of the softmax (not zero-padded into
it), so border pixels attend over fewer positions. A *layer* (it replaces a convolution): no residual, no gate.
The paper's "spatially-aware" stem is not included.

Memory, without unfolding a ``k*k`` copy of the feature map: keys and values are padded once (O(C*N)); a loop
over the ``k*k`` offsets reads shifted *views* of them, so the features are never copied per offset. What is
materialized is one logit per pixel, head and offset, ``[B, H, Hs, Ws, k*k]``: the logits and the weights in
the forward (the weights are kept for the backward), two more of that shape in the backward. That is
``head_dim`` times smaller than an unfold of the keys, ``[B, C, Hs, Ws, k*k]``, plus another for the values.
The backward is written by hand (``_LocalAttention``): autograd through ``k*k`` slices would allocate a full
padded gradient per offset. It gives first derivatives only (no double backward).
Weights: ``"window" [B, H, k, k]`` of the query pixel (0 outside the image).

Status: complete; matches a float64 reference that builds the full ``[N, N]`` logits with a window mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import masked_softmax
from .base import VisionBlock, check_divides, check_odd
from .registry import register_block

__all__ = ["LocalSelfAttention"]


@register_block("sasa")
class LocalSelfAttention(VisionBlock):
    """``get_block("sasa", channels, heads=4, kernel_size=7)``."""

    def __init__(self, channels: int, heads: int = 4, kernel_size: int = 7) -> None:
        super().__init__(channels)
        head_dim = check_divides(heads, self.channels, "channels")
        if head_dim < 2:
            raise ValueError(
                f"sasa splits each head's features between row and column offsets: channels // heads must be >= 2; "
                f"received channels={self.channels}, heads={heads}"
            )
        self.heads, self.kernel_size = heads, check_odd(kernel_size, "kernel_size")
        self.qkv = nn.Conv2d(self.channels, 3 * self.channels, 1, bias=False)
        half = head_dim // 2
        self.rows = nn.Parameter(torch.randn(kernel_size, half) * half**-0.5)  # r^row[dy], dy = -k//2 .. k//2
        self.cols = nn.Parameter(torch.randn(kernel_size, head_dim - half) * (head_dim - half) ** -0.5)

    def _forward(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, dict[str, Tensor]]:
        batch, channels, height, width = x.shape
        k, r, heads = self.kernel_size, self.kernel_size // 2, self.heads
        query, key, value = (
            t.reshape(batch, heads, channels // heads, height, width) for t in self.qkv(x).chunk(3, dim=1)
        )  # 3 x (B, H, D, Hs, Ws)
        key, value = F.pad(key, (r, r, r, r)), F.pad(value, (r, r, r, r))  # (B, H, D, Hs+2r, Ws+2r), padded once
        half = self.rows.shape[1]
        row_logits = torch.einsum("bhdyx,od->bhoyx", query[:, :, :half], self.rows)  # (B, H, k, Hs, Ws)
        col_logits = torch.einsum("bhdyx,od->bhoyx", query[:, :, half:], self.cols)  # (B, H, k, Hs, Ws)
        inside = self._inside(height, width, x.device)  # (Hs, Ws, k*k)
        context, weights = _LocalAttention.apply(query, key, value, row_logits, col_logits, inside)
        y = context.reshape(batch, channels, height, width)  # (B, H, D, Hs, Ws) -> (B, C, Hs, Ws)
        if pixel is None:
            return y, {}
        return y, {"window": weights[:, :, pixel[0], pixel[1]].reshape(batch, heads, k, k)}

    def _inside(self, height: int, width: int, device: torch.device) -> Tensor:
        """``[Hs, Ws, k*k]`` bool: the neighbour at each offset lies inside the image."""
        r = self.kernel_size // 2
        shifts = torch.arange(-r, r + 1, device=device)  # (k,)
        rows = torch.arange(height, device=device)[:, None] + shifts  # (Hs, k)
        cols = torch.arange(width, device=device)[:, None] + shifts  # (Ws, k)
        rows_in, cols_in = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
        return (rows_in[:, None, :, None] & cols_in[None, :, None, :]).flatten(-2)  # (Hs, Ws, k, k) -> (Hs, Ws, k*k)

    def sites(self, where: str) -> list[tuple[str, str, str]]:
        k = self.kernel_size
        return [("self", f"every pixel of {where} ({self.heads} heads)", f"its {k}x{k} neighbourhood in {where}")]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, heads={self.heads}, kernel_size={self.kernel_size}"


def _windows(kernel_size: int) -> list[tuple[int, int, int]]:
    """``(o, dy, dx)``: offset ``o`` of the ``k*k`` window reads padded rows ``dy..``, columns ``dx..``."""
    return [(dy * kernel_size + dx, dy, dx) for dy in range(kernel_size) for dx in range(kernel_size)]


class _LocalAttention(torch.autograd.Function):
    """Windowed attention over shifted views of the padded keys/values, with a hand-written backward.

    Autograd through ``k*k`` slices would allocate and zero a full padded gradient per offset (measured: 8.9 s of
    a 10.5 s step at 64x64); here every offset accumulates into one padded buffer instead. Inputs: ``query
    [B, H, D, Hs, Ws]``, padded ``key``/``value [B, H, D, Hs+2r, Ws+2r]``, ``row_logits``/``col_logits
    [B, H, k, Hs, Ws]`` (``q . r^row[dy]``, ``q . r^col[dx]``), ``inside [Hs, Ws, k*k]``. Returns the context
    ``[B, H, D, Hs, Ws]`` and the weights ``[B, H, Hs, Ws, k*k]``. First derivatives only.
    """

    @staticmethod
    def forward(ctx, query, key, value, row_logits, col_logits, inside):
        height, width = query.shape[-2:]
        k = row_logits.shape[2]
        logits = query.new_empty(*query.shape[:2], height, width, k * k)  # (B, H, Hs, Ws, k*k)
        for o, dy, dx in _windows(k):
            window = key[..., dy : dy + height, dx : dx + width]  # (B, H, D, Hs, Ws): a view
            logits[..., o] = torch.linalg.vecdot(query, window, dim=2) + row_logits[:, :, dy] + col_logits[:, :, dx]
        weights = masked_softmax(logits, inside)  # (B, H, Hs, Ws, k*k)
        context = torch.zeros_like(query)
        for o, dy, dx in _windows(k):
            context.addcmul_(weights[..., o].unsqueeze(2), value[..., dy : dy + height, dx : dx + width])
        ctx.save_for_backward(query, key, value, weights)
        ctx.mark_non_differentiable(weights)
        return context, weights

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_context, _grad_of_returned_weights):
        query, key, value, weights = ctx.saved_tensors
        height, width = query.shape[-2:]
        k = math.isqrt(weights.shape[-1])
        grad_value = torch.zeros_like(value)
        grad_weights = torch.empty_like(weights)  # dL/dw: the returned weights are data, not differentiable
        for o, dy, dx in _windows(k):
            grad_weights[..., o] = torch.linalg.vecdot(
                grad_context, value[..., dy : dy + height, dx : dx + width], dim=2
            )
            grad_value[..., dy : dy + height, dx : dx + width].addcmul_(weights[..., o].unsqueeze(2), grad_context)
        # softmax backward; masked offsets have weight 0, hence logit gradient 0
        grad_logits = weights * (grad_weights - (weights * grad_weights).sum(-1, keepdim=True))
        grad_query, grad_key = torch.zeros_like(query), torch.zeros_like(key)
        for o, dy, dx in _windows(k):
            g = grad_logits[..., o].unsqueeze(2)  # (B, H, 1, Hs, Ws)
            grad_query.addcmul_(g, key[..., dy : dy + height, dx : dx + width])
            grad_key[..., dy : dy + height, dx : dx + width].addcmul_(g, query)
        per_offset = grad_logits.reshape(*grad_logits.shape[:4], k, k)  # (B, H, Hs, Ws, dy, dx)
        grad_rows = per_offset.sum(-1).permute(0, 1, 4, 2, 3)  # (B, H, k, Hs, Ws)
        grad_cols = per_offset.sum(-2).permute(0, 1, 4, 2, 3)
        return grad_query, grad_key, grad_value, grad_rows, grad_cols, None
