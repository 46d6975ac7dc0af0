"""Location-based score, Luong et al. 2015: ``a_t = softmax(W_a h_t)`` over source positions.

The logits depend on the query alone and on the key *positions*, not on key contents: the model learns where
to look, ``p(t | X)``, not what to look for. ``W_a`` maps a query to ``max_len`` position logits (per head, with
a bias); a key sequence of ``Tk <= max_len`` uses the first ``Tk``.

Beyond ``max_len``: a key sequence longer than ``max_len`` raises ``ValueError`` naming both lengths. There is
no learned logit for those positions, and inventing one (clamping, repeating) would silently change the
mechanism. Choose ``max_len`` as the longest source you will attend over.

Status: complete; not a dot product, so it takes the explicit-logits path (``[B, H, Tq, Tk]``, no feature axis).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Score, per_head_linear, register_score


@register_score("location")
class Location(Score):
    """``(W_a q + b)[:Tk]`` with ``W_a`` per head, ``[H, Dq, max_len]``."""

    uses_keys = False

    def __init__(self, query_dim: int, key_dim: int | None = None, heads: int = 1, *, max_len: int) -> None:
        super().__init__(query_dim, key_dim, heads)
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive int; received {max_len!r}")
        self.max_len = max_len
        bound = query_dim**-0.5
        self.weight = nn.Parameter(torch.empty(heads, query_dim, max_len).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(heads, 1, max_len))

    def prepare_query(self, query: Tensor) -> Tensor:
        self._check_features(query, self.query_dim, "query")
        return per_head_linear(query, self.weight) + self.bias  # (B, H, Tq, Dq) @ (H, Dq, L) -> (B, H, Tq, L)

    def combine(self, query: Tensor, key: Tensor) -> Tensor:
        tk = key.shape[-2]
        if tk > self.max_len:
            raise ValueError(
                f"Location score was built with max_len={self.max_len}; received {tk} keys. "
                "Build it with a larger max_len."
            )
        # The first Tk of the L learned logits. index_select rather than a slice: slicing up to a traced length
        # makes torch.export guard on Tk != L (a full slice is a special case), so Tk = max_len would not export.
        return query.index_select(-1, torch.arange(tk, device=query.device))  # (B, H, Tq, Tk)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_len={self.max_len}"
