"""Dot and scaled dot-product scores.

- ``dot`` (Luong et al. 2015, "Effective Approaches to Attention-based NMT"): ``score(q, k) = q . k``.
- ``scaled_dot`` (Vaswani et al. 2017, "Attention Is All You Need"): ``score(q, k) = q . k / sqrt(d_k)``; the
  scaling keeps the logits' variance near 1 so the softmax does not saturate as ``d_k`` grows.

Status: both run through ``torch.nn.functional.scaled_dot_product_attention`` when weights are not requested.
"""

from __future__ import annotations

import math

from torch import Tensor

from .base import DotProductScore, register_score


class _SameDims(DotProductScore):
    def __init__(self, query_dim: int | None = None, key_dim: int | None = None, heads: int = 1) -> None:
        super().__init__(query_dim, key_dim, heads)
        if query_dim is not None and key_dim is not None and query_dim != key_dim:
            raise ValueError(
                f"{type(self).__name__} needs query_dim == key_dim; received {query_dim} and {key_dim} "
                "(use 'general' for different sizes)"
            )

    def prepare_query(self, query: Tensor) -> Tensor:
        self._check_features(query, self.query_dim, "query")
        return query

    def prepare_key(self, key: Tensor) -> Tensor:
        self._check_features(key, self.key_dim, "key")
        return key


@register_score("dot")
class Dot(_SameDims):
    """``q . k`` (Luong 2015): no parameters, no scaling."""


@register_score("scaled_dot")
class ScaledDot(_SameDims):
    """``q . k / sqrt(d_k)`` (Vaswani 2017): no parameters."""

    def scale(self, dim: int) -> float:
        return 1.0 / math.sqrt(dim)
