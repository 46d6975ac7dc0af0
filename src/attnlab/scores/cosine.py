"""Content-based (cosine) score, Graves et al. 2014, "Neural Turing Machines": ``score(q, k) = beta * cos(q, k)``.

``beta`` is the key strength: large values sharpen the distribution toward the most similar key. It is either
given (a fixed float) or learned per head (stored as ``log beta`` so it stays positive; starts at
``init_strength``). Both sides are L2-normalised (with an epsilon, so all-zero padding vectors give 0, not NaN)
and ``beta`` is folded into the query, so the score is a dot product and takes the fused SDPA path.

Status: complete. The NTM emits ``beta`` from the controller per step; here it is a per-head parameter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DotProductScore, register_score


@register_score("cosine", "content")
class Cosine(DotProductScore):
    """``beta * cos(q, k)``; ``strength=None`` learns ``beta`` per head, a float fixes it."""

    def __init__(
        self,
        query_dim: int | None = None,
        key_dim: int | None = None,
        heads: int = 1,
        *,
        strength: float | None = None,
        init_strength: float = 10.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(query_dim, key_dim, heads)
        if query_dim is not None and key_dim is not None and query_dim != key_dim:
            raise ValueError(f"Cosine needs query_dim == key_dim; received {query_dim} and {key_dim}")
        self.eps = eps
        if strength is None:
            if init_strength <= 0:
                raise ValueError(f"init_strength must be > 0; received {init_strength}")
            self.log_strength = nn.Parameter(torch.full((heads,), math.log(init_strength)))
        else:
            if strength < 0:
                raise ValueError(f"strength must be >= 0; received {strength}")
            self.register_buffer("log_strength", torch.full((heads,), math.log(strength) if strength else -math.inf))

    @property
    def strength(self) -> Tensor:
        """``beta`` per head, ``[H]``."""
        return self.log_strength.exp()

    def prepare_query(self, query: Tensor) -> Tensor:
        self._check_features(query, self.query_dim, "query")
        beta = self.strength.to(query.dtype)[:, None, None]  # (H, 1, 1)
        return self._unit(query) * beta  # (B, H, Tq, D)

    def prepare_key(self, key: Tensor) -> Tensor:
        self._check_features(key, self.key_dim, "key")
        return self._unit(key)  # (B, H, Tk, D)

    def _unit(self, x: Tensor) -> Tensor:
        """``x / max(|x|, eps)``, in float32 for half inputs: ``eps = 1e-8`` is 0 in float16, and a zero vector
        (padding, which the core zeroes) would then give 0/0 = NaN."""
        if x.dtype in (torch.float16, torch.bfloat16):
            return F.normalize(x.float(), dim=-1, eps=self.eps).to(x.dtype)
        return F.normalize(x, dim=-1, eps=self.eps)
