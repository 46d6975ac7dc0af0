"""Attention ("cross"): queries from one stream, keys and values from another.

    context = E_p[V],  p = softmax(score(W_q x, W_k m)),  V = W_v m,  output = W_o context

``x`` is the reading stream (a decoder state, a text token), ``m`` the read one (encoder states, image
features). Bahdanau et al. 2014 introduced it for translation (RNNsearch); Vaswani et al. 2017 made it
multi-head with projections. This module owns the parameters and calls :func:`attnlab.core.attend_prepared`;
:class:`~attnlab.attention.SelfAttention` is this same module called with ``m = x``.

- ``score``: any registered score, with one head or many (multi-head additive, general, cosine, location...).
- ``project=False``: no query/key/value/output projections, as in Luong et al. 2015 and RNNsearch, where the
  context is a weighted sum of the raw encoder states; heads then split the raw features.
- ``precompute(m)`` projects and prepares the keys once per sequence (a recurrent decoder calls the module once
  per step with the returned :class:`Memory`).

Status: complete. ``from_torch`` reproduces ``torch.nn.MultiheadAttention`` (batch-first inputs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Attended, _as_4d, attend_prepared, masks
from ..scores import Score, get_score
from .cache import KVCache

__all__ = ["CrossAttention", "Memory"]


@dataclass(frozen=True)
class Memory:
    """A context's keys and values, projected, split into heads and prepared by the score (once per sequence)."""

    key: Tensor  # [B, H, Tk, D'] prepared keys
    value: Tensor  # [B, H, Tk, Dv]


class CrossAttention(nn.Module):
    """Multi-head attention from ``x [B, Tq, dim]`` over ``context [B, Tk, context_dim]`` with any score."""

    def __init__(
        self,
        dim: int,
        context_dim: int | None = None,
        heads: int = 1,
        score: str | Score = "scaled_dot",
        *,
        project: bool = True,
        head_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        score_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        context_dim = dim if context_dim is None else context_dim
        for name, value in (("dim", dim), ("context_dim", context_dim), ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; received {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); received {dropout}")
        self.dim, self.context_dim, self.heads, self.dropout = dim, context_dim, heads, dropout
        self.in_proj = self.q_proj = self.kv_proj = self.out_proj = None
        if project:
            if head_dim is None:
                if dim % heads:
                    raise ValueError(f"heads ({heads}) must divide dim ({dim}), or pass head_dim")
                head_dim = dim // heads
            inner = heads * head_dim
            if context_dim == dim:  # one fused [W_q; W_k; W_v]: self-attention projects with one product
                self.in_proj = nn.Linear(dim, 3 * inner, bias=bias)
            else:
                self.q_proj = nn.Linear(dim, inner, bias=bias)
                self.kv_proj = nn.Linear(context_dim, 2 * inner, bias=bias)  # [W_k; W_v]
            self.out_proj = nn.Linear(inner, dim, bias=bias)
            self.inner = inner
            query_dim = key_dim = head_dim
            self.out_dim = dim
        else:
            if head_dim is not None:
                raise ValueError("head_dim applies to projections; with project=False heads split the raw features")
            for name, value in (("dim", dim), ("context_dim", context_dim)):
                if value % heads:
                    raise ValueError(f"heads ({heads}) must divide {name} ({value}) when project=False")
            query_dim, key_dim = dim // heads, context_dim // heads
            self.inner = 0
            self.out_dim = context_dim
        if isinstance(score, Score):
            if score_options:
                raise ValueError("score_options apply to a score name; this score is already built")
            self.score = score
        else:
            self.score = get_score(score, query_dim=query_dim, key_dim=key_dim, heads=heads, **(score_options or {}))

    # -- public calls --------------------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, context: Tensor | Memory, *, mask: Tensor | None = None, return_weights: bool = False
    ) -> Attended:
        """Attend from ``x [B, Tq, dim]`` over ``context [B, Tk, context_dim]`` (or a :class:`Memory`).

        ``mask``: bool, True = may attend, broadcastable to ``[B, (H,) Tq, Tk]``. Returns ``context
        [B, Tq, out_dim]`` and, if asked, ``weights [B, Tq, Tk]`` (one head) or ``[B, H, Tq, Tk]``.
        """
        return self._attend(x, context, mask=mask, causal=False, cache=None, return_weights=return_weights)

    def precompute(self, context: Tensor, mask: Tensor | None = None) -> Memory:
        """Project and prepare ``context``'s keys and values once, for many calls (one per decoder step)."""
        self._check_features(context, self.context_dim, "context")
        if mask is not None:
            mask4 = _as_4d(mask, "mask", context.shape[0], self.heads, 1, context.shape[1], context.device)
            context = _zero_unreadable(context, mask4)
        key, value = self._project_context(context)
        return Memory(self.score.prepare_key(key), value)

    # -- the computation -----------------------------------------------------------------------------------------
    def _attend(
        self,
        x: Tensor,
        context: Tensor | Memory,
        *,
        mask: Tensor | None,
        causal: bool,
        cache: KVCache | None,
        return_weights: bool,
    ) -> Attended:
        self._check_features(x, self.dim, "x")
        batch, tq = x.shape[:2]
        if isinstance(context, Memory):
            tk = context.key.shape[2]
        elif isinstance(context, Tensor):
            self._check_features(context, self.context_dim, "context")
            if context.shape[0] != batch:
                raise ValueError(f"context batch must match x's {batch}; received shape {tuple(context.shape)}")
            tk = context.shape[1]
        else:
            raise TypeError(
                f"context must be a Tensor [B, Tk, {self.context_dim}] or a Memory; received {type(context).__name__}"
            )
        if cache is not None:
            tk += cache.length
        mask4 = _as_4d(mask, "mask", batch, self.heads, tq, tk, x.device)
        if mask4 is not None and cache is None and isinstance(context, Tensor):
            if context is x:
                x = context = _zero_unreadable(x, mask4)
            else:
                context = _zero_unreadable(context, mask4)
        if mask4 is not None and causal:
            mask4 = mask4 & masks.causal(tq, tk, device=x.device)
            causal = False

        if isinstance(context, Memory):
            query, key, value = self._project_query(x), context.key, context.value
        else:
            query, key, value = self._project_all(x, context)
            key = self.score.prepare_key(key)
        query = self.score.prepare_query(query)
        if cache is not None:
            key, value = cache.extend(key, value)
        attended = attend_prepared(
            query,
            key,
            value,
            self.score,
            mask=mask4,
            causal=causal,
            dropout=self.dropout if self.training else 0.0,
            return_weights=return_weights,
        )
        out = attended.context.transpose(1, 2).reshape(batch, tq, -1)  # (B, H, Tq, Dv) -> (B, Tq, H*Dv)
        if self.out_proj is not None:
            out = self.out_proj(out)
        weights = attended.weights
        if weights is not None and self.heads == 1:
            weights = weights.squeeze(1)  # (B, Tq, Tk)
        return Attended(out, weights, attended.path, attended.reason)

    def _split_heads(self, tensor: Tensor) -> Tensor:
        batch, length = tensor.shape[:2]
        return tensor.view(batch, length, self.heads, -1).transpose(1, 2)  # (B, T, H*D) -> (B, H, T, D)

    def projection(self, which: str) -> tuple[Tensor, Tensor | None] | None:
        """``(weight [out, in], bias)`` of the ``"query"``, ``"key"`` or ``"value"`` projection (views of the stored
        parameters), or None without projections. ``"output"`` gives the output projection."""
        if which == "output":
            return None if self.out_proj is None else (self.out_proj.weight, self.out_proj.bias)
        if which not in ("query", "key", "value"):
            raise ValueError(f"which must be 'query', 'key', 'value' or 'output'; received {which!r}")
        if self.out_proj is None:
            return None
        if self.in_proj is not None:
            layer, index = self.in_proj, ("query", "key", "value").index(which)
        else:
            layer, index = (self.q_proj, 0) if which == "query" else (self.kv_proj, ("key", "value").index(which))
        rows = slice(index * self.inner, (index + 1) * self.inner)
        return layer.weight[rows], None if layer.bias is None else layer.bias[rows]

    def _project_query(self, x: Tensor) -> Tensor:
        if self.out_proj is None:
            return self._split_heads(x)
        if self.q_proj is not None:
            return self._split_heads(self.q_proj(x))
        return self._split_heads(F.linear(x, *self.projection("query")))

    def _project_context(self, context: Tensor) -> tuple[Tensor, Tensor]:
        if self.out_proj is None:
            return self._split_heads(context), self._split_heads(context)
        if self.kv_proj is not None:
            kv = self.kv_proj(context)  # (B, Tk, 2*inner)
        else:
            weight, bias = (
                self.in_proj.weight[self.inner :],
                None if self.in_proj.bias is None else self.in_proj.bias[self.inner :],
            )
            kv = F.linear(context, weight, bias)  # (B, Tk, 2*inner)
        key, value = kv.chunk(2, dim=-1)
        return self._split_heads(key), self._split_heads(value)

    def _project_all(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if context is not x or self.in_proj is None:
            return (self._project_query(x), *self._project_context(context))
        # Self-attention: one matrix product for queries, keys and values (a fused qkv layer).
        qkv = self.in_proj(x)  # (B, T, 3*inner)
        return tuple(self._split_heads(t) for t in qkv.chunk(3, dim=-1))  # 3 x (B, H, T, D)

    def _check_features(self, tensor: Tensor, features: int, name: str) -> None:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; received {type(tensor).__name__}")
        if tensor.dim() != 3 or tensor.shape[-1] != features:
            raise ValueError(f"{name} must be [B, T, {features}]; received shape {tuple(tensor.shape)}")
        if not tensor.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor; received dtype {tensor.dtype}")

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}, heads={self.heads}, dropout={self.dropout}"

    # -- migration from torch.nn.MultiheadAttention --------------------------------------------------------------
    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> CrossAttention:
        """An equivalent module with ``mha``'s weights (inputs batch-first; our mask is ``~key_padding_mask``)."""
        _check_mha(mha)
        attn = cls(
            mha.embed_dim, mha.kdim, mha.num_heads, "scaled_dot", bias=mha.in_proj_bias is not None, dropout=mha.dropout
        )
        return _load_mha(attn, mha)


def _zero_unreadable(context: Tensor, mask4: Tensor) -> Tensor:
    """Zero the positions of ``context [B, Tk, D]`` that no query of any head may read (padding)."""
    unreadable = ~mask4.any(dim=2).any(dim=1)  # (B|1, H|1, Tq|1, Tk) -> (B|1, Tk)
    return context.masked_fill(unreadable.unsqueeze(-1), 0.0)


def _check_mha(mha: nn.MultiheadAttention) -> None:
    if not isinstance(mha, nn.MultiheadAttention):
        raise TypeError(f"from_torch expects torch.nn.MultiheadAttention; received {type(mha).__name__}")
    if mha.bias_k is not None or mha.add_zero_attn:
        raise ValueError("from_torch: add_bias_kv and add_zero_attn have no equivalent here")
    if mha.kdim != mha.vdim:
        raise ValueError(
            f"from_torch needs kdim == vdim (one context tensor); received kdim={mha.kdim}, vdim={mha.vdim}"
        )


def _load_mha(attn: CrossAttention, mha: nn.MultiheadAttention) -> CrossAttention:
    if mha._qkv_same_embed_dim:
        weights = mha.in_proj_weight.chunk(3)
    else:
        weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
    biases = (None,) * 3 if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)
    attn.to(device=mha.out_proj.weight.device, dtype=mha.out_proj.weight.dtype)
    with torch.no_grad():
        for which, weight, bias in zip(("query", "key", "value"), weights, biases, strict=True):
            own_weight, own_bias = attn.projection(which)
            own_weight.copy_(weight)
            if bias is not None:
                own_bias.copy_(bias)
        attn.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.out_proj.bias is not None:
            attn.out_proj.bias.copy_(mha.out_proj.bias)
    return attn.train(mha.training)
