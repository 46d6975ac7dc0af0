"""Self-attention: queries, keys and values all come from the same layer's input.

    p(x_k | x_q) = softmax_k(score(W_q x_q, W_k x_k)),    y_q = W_o E_p[W_v x]

Cheng et al. 2016 (LSTMN intra-attention) and Vaswani et al. 2017 (the Transformer). It is *the same module* as
:class:`~attnlab.attention.CrossAttention` called with ``context = x``: ``SelfAttention(x)`` equals
``CrossAttention(x, context=x)`` exactly when they share parameters (a test checks it bit for bit). What it adds
is what only makes sense when a sequence reads itself: ``causal=True`` (a position may not read later ones) and
a :class:`~attnlab.attention.KVCache` for incremental decoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..core import Attended
from ..scores import Score
from .cache import KVCache
from .cross_attention import CrossAttention, _check_mha, _load_mha

__all__ = ["SelfAttention"]


class SelfAttention(CrossAttention):
    """Multi-head self-attention over ``x [B, T, dim]`` with any score; ``causal=True`` for decoders."""

    def __init__(
        self,
        dim: int,
        heads: int = 1,
        score: str | Score = "scaled_dot",
        *,
        causal: bool = False,
        project: bool = True,
        head_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        score_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            dim,
            dim,
            heads,
            score,
            project=project,
            head_dim=head_dim,
            bias=bias,
            dropout=dropout,
            score_options=score_options,
        )
        self.causal = causal

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> Tensor | Attended:
        """Attend from ``x [B, T, dim]`` over itself (and over ``cache``'s earlier positions, if given).

        Returns the context ``[B, T, dim]``, or an :class:`~attnlab.core.Attended` with the weights when
        ``return_weights=True``. With ``causal=True`` a given ``mask`` is and-ed with the causal mask (end-aligned
        under a cache), in the core.
        """
        return self._attend(x, x, mask=mask, causal=self.causal, cache=cache, return_weights=return_weights)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, causal={self.causal}"

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, *, causal: bool = False) -> SelfAttention:  # type: ignore[override]
        """An equivalent self-attention with ``mha``'s weights (``mha`` must have kdim == vdim == embed_dim)."""
        _check_mha(mha)
        if mha.kdim != mha.embed_dim:
            raise ValueError(f"self-attention needs kdim == embed_dim ({mha.embed_dim}); received kdim={mha.kdim}")
        attn = cls(
            mha.embed_dim,
            mha.num_heads,
            "scaled_dot",
            causal=causal,
            bias=mha.in_proj_bias is not None,
            dropout=mha.dropout,
        )
        return _load_mha(attn, mha)
