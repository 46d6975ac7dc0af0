"""Attention masks: one convention everywhere.

A mask is a ``torch.bool`` tensor, ``True`` = *may attend*, broadcastable to ``[B, (H,) Tq, Tk]``. A mask of
at most three dimensions has no head axis (``[Tq, Tk]``, ``[B, Tq, Tk]`` or ``[B, 1, Tk]``); a 4-D mask is
``[B, H, Tq, Tk]``. Masks combine with ``&`` (both allow) and ``|``. They are applied once, in
:func:`attnlab.attend`; the core never sees a float 0/1 mask or an additive ``-inf`` mask (additive logits go
through ``attend(..., bias=...)``).

Alignment when ``Tq != Tk``: queries are aligned with the *end* of the keys. Query ``i`` sits at key position
``i + (Tk - Tq)``. This is what incremental decoding needs (the ``Tq`` new tokens are the last of ``Tk``), and it
equals the usual square mask when ``Tq == Tk``. (``torch.nn.functional.scaled_dot_product_attention`` with
``is_causal=True`` aligns at the *start* instead; we never rely on that for ``Tq != Tk``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .tracing import eager_on_cpu

__all__ = ["causal", "padding", "prefix", "window"]


def _as_lengths(lengths: Tensor | Sequence[int], name: str) -> Tensor:
    if isinstance(lengths, Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
            raise TypeError(f"{name} must be an integer tensor; received dtype {lengths.dtype}")
        if lengths.dim() != 1:
            raise ValueError(f"{name} must be 1-D [B]; received shape {tuple(lengths.shape)}")
        return lengths.long()
    return torch.as_tensor(list(lengths), dtype=torch.long)


def _check_size(value: int, name: str, minimum: int = 0) -> int:
    if isinstance(value, torch.SymInt):  # a traced (dynamic) size under torch.compile / torch.export
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; received {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; received {value}")
    return value


def padding(lengths: Tensor | Sequence[int], max_len: int | None = None) -> Tensor:
    """Key-padding mask from sequence lengths.

    Returns ``[B, 1, max_len]`` bool, ``True`` at the first ``lengths[b]`` positions of item ``b``. The middle
    axis broadcasts over queries. ``max_len`` defaults to ``max(lengths)``. Lengths must lie in
    ``[0, max_len]``; a zero length gives an all-padding item, whose context is 0 (see :func:`attnlab.attend`).
    """
    lengths = _as_lengths(lengths, "lengths")
    if max_len is None:  # the size depends on the values: eager only
        max_len = int(lengths.max()) if lengths.numel() else 0
    max_len = _check_size(max_len, "max_len")
    if eager_on_cpu(lengths) and lengths.numel():  # value checks where they break no graph and sync no device
        if int(lengths.min()) < 0:
            raise ValueError(f"lengths must be >= 0; received min {int(lengths.min())}")
        if int(lengths.max()) > max_len:
            raise ValueError(f"lengths must be <= max_len={max_len}; received max {int(lengths.max())}")
    positions = torch.arange(max_len, device=lengths.device)  # (T,)
    return (positions[None, :] < lengths[:, None])[:, None, :]  # (B, 1, T)


def window(
    tq: int,
    tk: int | None = None,
    *,
    left: int | None = None,
    right: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Band mask ``[Tq, Tk]``: query ``i`` may attend key ``j`` when ``-left <= j - pos(i) <= right``.

    ``pos(i) = i + (Tk - Tq)`` (end alignment, see the module docstring); ``None`` means unbounded on that side.
    ``window(t, left=r, right=r)`` is a symmetric local window; ``window(t, right=0)`` is causal.
    """
    tq = _check_size(tq, "tq")
    tk = tq if tk is None else _check_size(tk, "tk")
    offsets = torch.arange(tk, device=device)[None, :] - (torch.arange(tq, device=device)[:, None] + tk - tq)
    allowed = torch.ones(tq, tk, dtype=torch.bool, device=device)  # (Tq, Tk)
    if left is not None:
        allowed &= offsets >= -_check_size(left, "left")
    if right is not None:
        allowed &= offsets <= _check_size(right, "right")
    return allowed


def causal(tq: int, tk: int | None = None, *, device: torch.device | str | None = None) -> Tensor:
    """Causal mask ``[Tq, Tk]``: query ``i`` may attend keys ``j <= i + (Tk - Tq)`` (end-aligned).

    With ``Tq == Tk`` this is the lower triangle. With ``Tq < Tk`` (new tokens after a cache of ``Tk - Tq``)
    the last query sees every key. ``Tq > Tk`` leaves the first ``Tq - Tk`` queries with no key at all.
    """
    return window(tq, tk, right=0, device=device)


def prefix(prefix_lengths: Tensor | Sequence[int] | int, length: int, batch: int | None = None) -> Tensor:
    """Prefix-LM mask ``[B, T, T]`` for a decoder-only model over ``[source; separator; target]``.

    Positions ``< prefix_lengths[b]`` (the source) attend to each other in both directions; later positions
    attend to the whole prefix and causally to the target so far. This is how self-attention simulates an
    encoder-decoder's cross-attention in one stream. An int prefix length needs ``batch`` (or gives ``B = 1``).
    """
    length = _check_size(length, "length")
    if isinstance(prefix_lengths, int) and not isinstance(prefix_lengths, bool):
        prefix_lengths = [prefix_lengths] * (1 if batch is None else _check_size(batch, "batch", 1))
    lengths = _as_lengths(prefix_lengths, "prefix_lengths")
    if eager_on_cpu(lengths) and lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > length):
        raise ValueError(
            f"prefix_lengths must lie in [0, length={length}]; received [{int(lengths.min())}, {int(lengths.max())}]"
        )
    positions = torch.arange(length, device=lengths.device)
    in_prefix = positions[None, :] < lengths[:, None]  # (B, T): key j is in the prefix
    lower = causal(length, device=lengths.device)  # (T, T)
    return lower[None, :, :] | in_prefix[:, None, :]  # (B, T, T)
