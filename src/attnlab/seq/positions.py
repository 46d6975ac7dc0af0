"""Absolute position encodings added to token embeddings (self-attention alone is permutation-equivariant).

- ``sinusoidal`` (Vaswani et al. 2017): ``PE[p, 2i] = sin(p / 10000^(2i/D))``, ``PE[p, 2i+1] = cos(...)``; no
  parameters, defined for every position, computed from the position ids on the fly.
- ``learned`` (Devlin et al. 2018, BERT): one trained vector per position up to ``max_len``.

Both take position ids ``[..., T]`` (so a decoder-only model can skip padding in the middle of its stream, and
an incremental decoder can ask for position ``t`` alone) and return ``[..., T, D]``.

Status: complete.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..tracing import eager_on_cpu
from .base import check_positive

__all__ = ["LearnedPositions", "SinusoidalPositions", "get_positions"]

POSITIONS = ("sinusoidal", "learned")


class SinusoidalPositions(nn.Module):
    """Fixed sinusoids of geometrically spaced wavelengths, ``2*pi`` to ``10000 * 2*pi``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        check_positive("dim", dim)
        if dim % 2:
            raise ValueError(f"sinusoidal positions need an even dim; received {dim}")
        self.dim = dim

    def forward(self, positions: Tensor) -> Tensor:
        """``positions [..., T]`` -> ``[..., T, D]`` in float32 (computed here, never stored: a buffer would be cast
        to bf16 with the model, and position 500's angles would be off by radians)."""
        exponents = torch.arange(0, self.dim, 2, dtype=torch.float32, device=positions.device) / self.dim
        inv_freq = torch.exp(exponents * -math.log(10000.0))  # (D/2,)
        angles = positions.unsqueeze(-1).float() * inv_freq  # (..., T, D/2)
        return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (..., T, D/2, 2) -> (..., T, D)


class LearnedPositions(nn.Module):
    """A trained vector per position ``0 .. max_len - 1``; a later position raises ``ValueError``."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.dim, self.max_len = check_positive("dim", dim), check_positive("max_len", max_len)
        self.table = nn.Embedding(max_len, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, positions: Tensor) -> Tensor:
        if eager_on_cpu(positions) and positions.numel() and int(positions.max()) >= self.max_len:
            raise ValueError(
                f"learned positions were built with max_len={self.max_len}; received position {int(positions.max())}"
            )
        return self.table(positions)  # (..., T, D)


def get_positions(name: str, dim: int, max_len: int) -> nn.Module:
    """``"sinusoidal"`` or ``"learned"`` position encodings of ``dim`` features."""
    if name == "sinusoidal":
        return SinusoidalPositions(dim)
    if name == "learned":
        return LearnedPositions(dim, max_len)
    raise ValueError(f"positions must be one of {POSITIONS}; received {name!r}")
