"""Scaled dot-product score, Vaswani et al. 2017, "Attention Is All You Need": ``score(q, k) = q . k / sqrt(d_k)``.

The scaling keeps the logits' variance near 1 for unit-variance features, so the softmax does not saturate as
``d_k`` grows. No parameters.

Status: complete; runs through ``torch.nn.functional.scaled_dot_product_attention`` when weights are not requested.
"""

from __future__ import annotations

import math

from .base import register_score
from .dot import Dot


@register_score("scaled_dot")
class ScaledDot(Dot):
    """``q . k / sqrt(d_k)`` (Vaswani 2017): no parameters."""

    def scale(self, dim: int) -> float:
        return 1.0 / math.sqrt(dim)
