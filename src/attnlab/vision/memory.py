"""Memory estimates for blocks that must materialize pairwise ``[.., N, M]`` terms, and the refusal.

Global attention through the fused kernel needs memory linear in the pixels and is never refused. What cannot go
through it (non-local's concatenation function, the dense relative-position logits of AA-conv and BoTNet) is
estimated before anything is allocated; above ``memory_limit`` bytes the block raises
:class:`MemoryLimitError` saying what it would have allocated and what to change, instead of exhausting RAM.

The copy counts were measured on CPU (peak RSS, float32): a ``[B, H, N, N]`` float bias that needs a gradient
costs about 4 such tensors inside SDPA's math path plus the bias and its gradient (6); without autograd, the bias
and the weights (2).
"""

from __future__ import annotations

import math

import torch

__all__ = ["DEFAULT_MEMORY_LIMIT", "MemoryLimitError", "check_limit", "check_memory"]

DEFAULT_MEMORY_LIMIT = 1 << 30  # bytes (1 GiB)


class MemoryLimitError(MemoryError):
    """A block refused to allocate pairwise terms above its ``memory_limit``."""


def check_memory(
    block: str, what: str, shape: tuple[int, ...], dtype: torch.dtype, copies: int, limit: int | None, advice: str
) -> int:
    """Estimated bytes of ``copies`` tensors of ``shape``/``dtype``; :class:`MemoryLimitError` above ``limit``.

    ``limit=None`` disables the check (the estimate is still returned).
    """
    itemsize = torch.empty((), dtype=dtype, device="meta").element_size()
    need = copies * math.prod(shape) * itemsize
    if limit is not None and need > limit:
        raise MemoryLimitError(
            f"{block}: {what} {list(shape)} in {dtype} would need about {need / 2**30:.2f} GiB "
            f"({copies} tensors of that shape, autograd included), above memory_limit={limit / 2**30:.2f} GiB. "
            f"{advice} (or raise memory_limit, or pass memory_limit=None to skip the check)."
        )
    return need


def check_limit(limit: int | None) -> int | None:
    """Validate a ``memory_limit`` argument: positive bytes or None."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"memory_limit must be a positive number of bytes or None; received {limit!r}")
    return limit
