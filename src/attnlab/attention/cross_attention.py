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

Calling the module returns the context tensor (it drops into ``nn.Sequential``, as SDPA, timm and x-transformers
modules do); ``return_weights=True`` returns an :class:`~attnlab.core.Attended` with the weights as well.
``from_torch(mha)`` and ``to_torch()`` migrate from and back to ``torch.nn.MultiheadAttention`` (batch-first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core import Attended, _as_4d, attend_prepared
from ..scores import Score, get_score
from ..scores.scaled_dot import ScaledDot
from .cache import KVCache

__all__ = ["CrossAttention", "Memory", "upgrade_state_dict"]


@dataclass(frozen=True)
class Memory:
    """A context's keys and values, projected, split into heads and prepared by the score (once per sequence)."""

    key: Tensor  # [B, H, Tk, D'] prepared keys
    value: Tensor  # [B, H, Tk, Dv]


class CrossAttention(nn.Module):
    """Multi-head attention from ``x [B, Tq, dim]`` over ``context [B, Tk, context_dim]`` with any score.

    Parameters (one layout whatever the widths): ``q_proj`` (``dim -> H*Dh``), ``kv_proj`` (``context_dim ->
    2*H*Dh``, ``[W_k; W_v]``) and ``out_proj`` (``H*Dh -> dim``); none of them with ``project=False``.
    ``state_dict``s of ``torch.nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``, ``out_proj.*``, or
    ``q/k/v_proj_weight``) and of earlier attnlab files (one fused ``in_proj``) load into it directly.
    """

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
        self.q_proj = self.kv_proj = self.out_proj = None
        if project:
            if head_dim is None:
                if dim % heads:
                    raise ValueError(f"heads ({heads}) must divide dim ({dim}), or pass head_dim")
                head_dim = dim // heads
            inner = heads * head_dim
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
        self._register_load_state_dict_pre_hook(_load_fused_projections, with_module=True)

    # -- public calls --------------------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, context: Tensor | Memory, *, mask: Tensor | None = None, return_weights: bool = False
    ) -> Tensor | Attended:
        """Attend from ``x [B, Tq, dim]`` over ``context [B, Tk, context_dim]`` (or a :class:`Memory`).

        ``mask``: bool, True = may attend, broadcastable to ``[B, (H,) Tq, Tk]``. Returns the context ``[B, Tq,
        out_dim]``; with ``return_weights=True`` an :class:`~attnlab.core.Attended` instead, whose ``.context`` is
        that tensor and ``.weights`` is ``[B, Tq, Tk]`` (one head) or ``[B, H, Tq, Tk]`` (``.path`` and ``.reason``
        say which kernel ran).
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
    ) -> Tensor | Attended:
        self._check_features(x, self.dim, "x")
        batch, tq = x.shape[:2]
        if isinstance(context, Memory):
            _check_same_kind(x, context.value, "the Memory's values")
            tk = context.key.shape[2]
        elif isinstance(context, Tensor):
            self._check_features(context, self.context_dim, "context")
            _check_same_kind(x, context, "context")
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
        if not return_weights:
            return out
        weights = attended.weights
        if self.heads == 1:
            weights = weights.squeeze(1)  # (B, Tq, Tk)
        return Attended(out, weights, attended.path, attended.reason)

    def _split_heads(self, tensor: Tensor) -> Tensor:
        batch, length = tensor.shape[:2]
        return tensor.view(batch, length, self.heads, -1).transpose(1, 2)  # (B, T, H*D) -> (B, H, T, D)

    def projection(self, which: str) -> tuple[Tensor, Tensor | None] | None:
        """``(weight [out, in], bias)`` of the ``"query"``, ``"key"`` or ``"value"`` projection (views of the stored
        parameters), or None without projections. ``"output"`` gives the output projection."""
        if which not in ("query", "key", "value", "output"):
            raise ValueError(f"which must be 'query', 'key', 'value' or 'output'; received {which!r}")
        if self.out_proj is None:
            return None
        if which in ("output", "query"):
            layer = self.out_proj if which == "output" else self.q_proj
            return layer.weight, layer.bias
        rows = slice(0, self.inner) if which == "key" else slice(self.inner, 2 * self.inner)
        bias = self.kv_proj.bias
        return self.kv_proj.weight[rows], None if bias is None else bias[rows]

    def _project_query(self, x: Tensor) -> Tensor:
        if self.out_proj is None:
            return self._split_heads(x)
        return self._split_heads(self.q_proj(x))

    def _project_context(self, context: Tensor) -> tuple[Tensor, Tensor]:
        if self.out_proj is None:
            return self._split_heads(context), self._split_heads(context)
        key, value = self.kv_proj(context).chunk(2, dim=-1)  # (B, Tk, 2*inner) -> 2 x (B, Tk, inner)
        return self._split_heads(key), self._split_heads(value)

    def _project_all(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Self-attention is this with context = x: the same two products, W_q x and [W_k; W_v] x.
        return (self._project_query(x), *self._project_context(context))

    def _check_features(self, tensor: Tensor, features: int, name: str) -> None:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; received {type(tensor).__name__}")
        if tensor.dim() != 3 or tensor.shape[-1] != features:
            raise ValueError(f"{name} must be [B, T, {features}]; received shape {tuple(tensor.shape)}")
        if not tensor.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor; received dtype {tensor.dtype}")

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}, heads={self.heads}, dropout={self.dropout}"

    # -- migration from and back to torch.nn.MultiheadAttention ----------------------------------------------------
    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> CrossAttention:
        """An equivalent module with ``mha``'s weights (inputs batch-first; our mask is ``~key_padding_mask``)."""
        _check_mha(mha)
        attn = cls(
            mha.embed_dim, mha.kdim, mha.num_heads, "scaled_dot", bias=mha.in_proj_bias is not None, dropout=mha.dropout
        )
        return _load_mha(attn, mha)

    def to_torch(self) -> nn.MultiheadAttention:
        """A ``torch.nn.MultiheadAttention`` (``batch_first=True``) computing exactly this module.

        Only a projected scaled-dot module with ``H * Dh == dim`` has an equivalent; any other score, ``project=
        False`` or a custom ``head_dim`` raises ``ValueError`` saying why. Call the result as ``mha(x, m, m,
        key_padding_mask=~mask)`` (and, for a causal :class:`SelfAttention`, ``attn_mask=~masks.causal(t),
        is_causal=True``): MHA takes masks per call, with True meaning *masked*.
        """
        if type(self.score) is not ScaledDot:
            raise ValueError(
                f"to_torch: nn.MultiheadAttention computes scaled dot-product scores only; this module's score is "
                f"{type(self.score).__name__}"
            )
        if self.out_proj is None:
            raise ValueError("to_torch: nn.MultiheadAttention always projects; this module has project=False")
        if self.inner != self.dim:
            raise ValueError(
                f"to_torch: nn.MultiheadAttention needs heads x head_dim == dim; received {self.heads} x "
                f"{self.inner // self.heads} != {self.dim}"
            )
        weight = self.out_proj.weight
        mha = nn.MultiheadAttention(
            self.dim,
            self.heads,
            dropout=self.dropout,
            bias=self.out_proj.bias is not None,
            kdim=self.context_dim,
            vdim=self.context_dim,
            batch_first=True,
            device=weight.device,
            dtype=weight.dtype,
        )
        own = {"out_proj.weight": self.out_proj.weight, "out_proj.bias": self.out_proj.bias}
        (wq, bq), (wk, bk), (wv, bv) = (self.projection(which) for which in ("query", "key", "value"))
        if mha._qkv_same_embed_dim:
            own["in_proj_weight"] = torch.cat((wq, wk, wv))
        else:
            own.update(q_proj_weight=wq, k_proj_weight=wk, v_proj_weight=wv)
        if bq is not None:
            own["in_proj_bias"] = torch.cat((bq, bk, bv))
        mha.load_state_dict({name: value.detach().clone() for name, value in own.items() if value is not None})
        return mha.train(self.training)


def _check_same_kind(x: Tensor, other: Tensor, name: str) -> None:
    """``x`` and what it reads must agree in dtype and device (a bare error from ``Linear`` would name neither).
    Under autocast mixed dtypes are expected: autocast casts both for every product."""
    if other.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} dtype must match x's {x.dtype}; received {other.dtype} (convert one of them)")
    if other.device != x.device:
        raise ValueError(f"{name} must be on x's device {x.device}; received {other.device}")


def upgrade_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A copy of ``state_dict`` with every attention module of ``model`` renamed into the current layout.

    ``model.load_state_dict`` does this by itself (a load pre-hook); a loader that checks the keys first calls
    this so that files written before the one-layout change, and ``nn.MultiheadAttention`` weights, fit.
    """
    upgraded = dict(state_dict)
    for name, module in model.named_modules():
        if isinstance(module, CrossAttention):
            _load_fused_projections(module, upgraded, f"{name}." if name else "")
    return upgraded


def _load_fused_projections(module: CrossAttention, state_dict: dict, prefix: str, *args: Any) -> None:
    """Before loading: rename a ``torch.nn.MultiheadAttention`` or earlier-attnlab layout into ours, in place.

    ``in_proj_weight``/``in_proj_bias`` (MHA) and ``in_proj.weight``/``in_proj.bias`` (attnlab before one layout)
    hold ``[W_q; W_k; W_v]``; MHA with other key/value widths has ``q_proj_weight``, ``k_proj_weight`` and
    ``v_proj_weight``. MHA's ``bias_k``/``bias_v`` have no equivalent and stay, so a strict load reports them.
    """
    if module.out_proj is None:
        return
    inner = module.inner
    for weight_key, bias_key in (
        (prefix + "in_proj_weight", prefix + "in_proj_bias"),
        (prefix + "in_proj.weight", prefix + "in_proj.bias"),
    ):
        if weight_key in state_dict:
            weight = state_dict.pop(weight_key)
            state_dict[prefix + "q_proj.weight"], state_dict[prefix + "kv_proj.weight"] = weight[:inner], weight[inner:]
        if bias_key in state_dict:
            bias = state_dict.pop(bias_key)
            state_dict[prefix + "q_proj.bias"], state_dict[prefix + "kv_proj.bias"] = bias[:inner], bias[inner:]
    separate = [prefix + f"{which}_proj_weight" for which in "qkv"]
    if all(name in state_dict for name in separate):
        wq, wk, wv = (state_dict.pop(name) for name in separate)
        state_dict[prefix + "q_proj.weight"], state_dict[prefix + "kv_proj.weight"] = wq, torch.cat((wk, wv))


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
    attn.to(device=mha.out_proj.weight.device, dtype=mha.out_proj.weight.dtype)
    attn.load_state_dict(mha.state_dict())  # renamed by _load_fused_projections
    return attn.train(mha.training)
