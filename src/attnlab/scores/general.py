"""General (bilinear) score, Luong et al. 2015: ``score(q, k) = q^T W k``.

``W`` is ``[Dq, Dk]`` per head, so queries and keys may have different sizes (a decoder state attending over a
bidirectional encoder). The query side is prepared as ``q W``, after which the score is a plain dot product:
the fused SDPA path applies, and a decoder's per-step cost is one ``[Dq, Dk]`` product per query.

Status: complete; initialised so that the logits start with variance about 1 for unit-variance inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import DotProductScore, per_head_linear, register_score


@register_score("general", "bilinear")
class General(DotProductScore):
    """``q^T W k`` with a learned ``W`` per head, ``[H, Dq, Dk]``."""

    def __init__(self, query_dim: int, key_dim: int | None = None, heads: int = 1) -> None:
        key_dim = query_dim if key_dim is None else key_dim
        super().__init__(query_dim, key_dim, heads)
        self.weight = nn.Parameter(torch.empty(heads, query_dim, key_dim))
        nn.init.normal_(self.weight, std=(query_dim * key_dim) ** -0.5)

    def prepare_query(self, query: Tensor) -> Tensor:
        self._check_features(query, self.query_dim, "query")
        return per_head_linear(query, self.weight)  # (B, H, Tq, Dq) @ (H, Dq, Dk) -> (B, H, Tq, Dk)

    def prepare_key(self, key: Tensor) -> Tensor:
        self._check_features(key, self.key_dim, "key")
        return key
