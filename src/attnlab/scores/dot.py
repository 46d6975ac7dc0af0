"""Dot score, Luong et al. 2015, "Effective Approaches to Attention-based NMT": ``score(q, k) = q . k``.

No parameters and no scaling: with ``d_k`` features of unit variance the logits have variance ``d_k``, which
sharpens the softmax as models widen (``scaled_dot`` divides by ``sqrt(d_k)``).

Status: complete; runs through ``torch.nn.functional.scaled_dot_product_attention`` when weights are not requested.
"""

from __future__ import annotations

from torch import Tensor

from .base import DotProductScore, register_score


@register_score("dot")
class Dot(DotProductScore):
    """``q . k`` (Luong 2015): no parameters, no scaling."""

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
