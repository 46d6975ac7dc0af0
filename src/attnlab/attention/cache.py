"""Key/value cache for incremental (token-by-token) decoding.

Self-attention over a growing prefix recomputes nothing: each step projects only the new tokens, appends their
prepared keys and values here, and attends over the whole prefix. The buffers grow by doubling, so appending a
token costs amortised O(1) copies and one step costs O(prefix) attention, not O(prefix^2).

Inference only: appending writes into shared buffers in place, which autograd cannot differentiate through.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache"]


class KVCache:
    """Prepared keys ``[B, H, T, D']`` and values ``[B, H, T, Dv]`` of the positions seen so far."""

    def __init__(self) -> None:
        self._key: Tensor | None = None
        self._value: Tensor | None = None
        self.length = 0

    @property
    def key(self) -> Tensor | None:
        return None if self._key is None else self._key[:, :, : self.length]

    @property
    def value(self) -> Tensor | None:
        return None if self._value is None else self._value[:, :, : self.length]

    def extend(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``key [B, H, t, D']`` and ``value [B, H, t, Dv]``; return all keys and values so far."""
        if torch.is_grad_enabled() and (key.requires_grad or value.requires_grad):
            raise RuntimeError("KVCache is for inference: wrap decoding in torch.no_grad() or torch.inference_mode()")
        if key.dim() != 4 or value.dim() != 4 or key.shape[:3] != value.shape[:3]:
            raise ValueError(
                "key and value must be [B, H, t, D] with equal B, H, t; "
                f"received {tuple(key.shape)}, {tuple(value.shape)}"
            )
        new = key.shape[2]
        if self._key is None:
            self._key, self._value = self._grow(key, value, max(16, new))
        elif key.shape[:2] != self._key.shape[:2] or key.shape[-1] != self._key.shape[-1]:
            raise ValueError(
                f"cache holds keys [B, H, *, D] = {tuple(self._key.shape[:2])} x {self._key.shape[-1]}; "
                f"received {tuple(key.shape)}"
            )
        end = self.length + new
        if end > self._key.shape[2]:
            self._key, self._value = self._grow(key, value, max(end, 2 * self._key.shape[2]))
        self._key[:, :, self.length : end] = key
        self._value[:, :, self.length : end] = value
        self.length = end
        return self._key[:, :, :end], self._value[:, :, :end]  # (B, H, T, D'), (B, H, T, Dv)

    def _grow(self, key: Tensor, value: Tensor, capacity: int) -> tuple[Tensor, Tensor]:
        batch, heads = key.shape[:2]
        grown_key = key.new_empty(batch, heads, capacity, key.shape[-1])
        grown_value = value.new_empty(batch, heads, capacity, value.shape[-1])
        if self._key is not None:
            grown_key[:, :, : self.length] = self._key[:, :, : self.length]
            grown_value[:, :, : self.length] = self._value[:, :, : self.length]
        return grown_key, grown_value

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search: follow the surviving hypotheses)."""
        if self._key is not None:
            self._key = self._key.index_select(0, index)
            self._value = self._value.index_select(0, index)
