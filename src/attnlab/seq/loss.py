"""Token-level cross-entropy for sequence outputs, padding ignored.

    loss = sum over real target tokens of -log p(y_t | y_<t, x)         (and the number of those tokens)

The sum and the count come back separately, so a data-parallel trainer can all-reduce both and divide by the
*global* token count: the mean of per-rank means is wrong when ranks hold different numbers of tokens.

Status: complete.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TokenLoss", "token_cross_entropy"]


class TokenLoss(NamedTuple):
    """``total``: summed cross-entropy (float scalar); ``tokens``: how many targets counted (int64 scalar)."""

    total: Tensor
    tokens: Tensor

    def mean(self) -> Tensor:
        """``total / tokens``; 0 when there are no tokens (not NaN)."""
        return self.total / self.tokens.clamp(min=1).to(self.total.dtype)


def token_cross_entropy(logits: Tensor, targets: Tensor, *, pad_id: int = 0, label_smoothing: float = 0.0) -> TokenLoss:
    """Cross-entropy of ``logits [B, T, V]`` against ``targets [B, T]``; positions where ``targets == pad_id``
    count for nothing (loss and gradient). Half-precision logits are upcast: the loss is float32 or float64."""
    if not isinstance(logits, Tensor) or logits.dim() != 3 or not logits.dtype.is_floating_point:
        got = f"{tuple(logits.shape)} {logits.dtype}" if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"logits must be a floating-point tensor [B, T, V]; received {got}")
    if not isinstance(targets, Tensor) or targets.dtype.is_floating_point or targets.dtype.is_complex:
        got = targets.dtype if isinstance(targets, Tensor) else type(targets).__name__
        raise TypeError(f"targets must be an integer tensor [B, T]; received {got}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(
            f"targets must be [B, T] = {list(logits.shape[:2])} like logits {tuple(logits.shape)}; "
            f"received {tuple(targets.shape)}"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); received {label_smoothing}")
    targets = targets.long()
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    total = F.cross_entropy(
        logits.flatten(0, 1),  # (B*T, V)
        targets.flatten(),
        ignore_index=pad_id,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return TokenLoss(total, (targets != pad_id).sum())
