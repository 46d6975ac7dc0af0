"""The score-function contract and its open registry.

A score turns queries and keys into logits, ``[B, H, Tq, Dq] x [B, H, Tk, Dk] -> [B, H, Tq, Tk]``, and is
split into three hooks so that the expensive part of each side is done once where it belongs:

    logits = combine(prepare_query(query), prepare_key(key))

``prepare_key`` runs once per key sequence (a recurrent decoder projects the encoder states once, not once per
step; a key/value cache stores prepared keys), ``prepare_query`` once per query, ``combine`` pairs them. A
*dot-family* score has ``combine(q, k) = scale * q k^T``; the core then runs it through PyTorch's fused
``scaled_dot_product_attention`` with the prepared query and key. Every other score overrides ``combine``.

Parameters are per head (leading ``H`` axis), so one score object serves every head of a multi-head module.
A score called directly also accepts 3-D inputs ``[B, T, D]`` (one head).

New scores register with ``@register_score("name")``; ``get_score(name, **dims)`` builds one and an unknown
name raises ``KeyError`` listing the registered names.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "DotProductScore",
    "Score",
    "available_scores",
    "broadcast_sizes",
    "get_score",
    "per_head_linear",
    "register_score",
]


def per_head_linear(x: Tensor, weight: Tensor) -> Tensor:
    """``x [B, H|1, T, D]`` times a per-head ``weight [H, D, E]`` -> ``[B, H, T, E]``.

    A broadcast ``x @ weight`` would copy the weight once per batch row; this runs one GEMM for a single head
    and one batched GEMM over heads otherwise.
    """
    heads = weight.shape[0]
    if heads == 1:
        return x @ weight[0]  # (B, 1, T, D) @ (D, E): folded into one (B*T, D) @ (D, E) product
    return torch.einsum("bhtd,hde->bhte", x.expand(-1, heads, -1, -1), weight)  # (B, H, T, E)


def broadcast_sizes(*shapes: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    """The broadcast of equally long shapes, like ``torch.broadcast_shapes`` but without its first-call cost
    (that one imports ``torch._refs`` and sympy: seconds, on the first attention call of every process)."""
    out = []
    for sizes in zip(*shapes, strict=True):
        wide = {size for size in sizes if size != 1}
        if len(wide) > 1:
            raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast: sizes {sorted(wide)} on one axis")
        out.append(wide.pop() if wide else 1)
    return tuple(out)


class Score(nn.Module, abc.ABC):
    """Base class of every score function (see the module docstring for the contract)."""

    #: True when ``combine(q, k) == scale(dk) * q @ k^T``: the fused SDPA path applies.
    is_dot: ClassVar[bool] = False
    #: True when the logits need no keys, only their number (location-based attention).
    uses_keys: ClassVar[bool] = True

    def __init__(self, query_dim: int | None = None, key_dim: int | None = None, heads: int = 1) -> None:
        super().__init__()
        for name, value in (("query_dim", query_dim), ("key_dim", key_dim)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None; received {value!r}")
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be a positive int; received {heads!r}")
        self.query_dim = query_dim
        self.key_dim = key_dim
        self.heads = heads

    def prepare_query(self, query: Tensor) -> Tensor:
        """``[B, H, Tq, Dq] -> [B, H, Tq, D']``: the per-query part of the score."""
        return query

    def prepare_key(self, key: Tensor) -> Tensor:
        """``[B, H, Tk, Dk] -> [B, H, Tk, D']``: the per-key part, computed once per key sequence."""
        return key

    @abc.abstractmethod
    def combine(self, query: Tensor, key: Tensor) -> Tensor:
        """Prepared ``[B, H, Tq, D'] x [B, H, Tk, D'] -> logits [B, H, Tq, Tk]``."""

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        """Logits ``[B, (H,) Tq, Tk]`` from raw queries ``[B, (H,) Tq, Dq]`` and keys ``[B, (H,) Tk, Dk]``."""
        if query.dim() != key.dim() or query.dim() not in (3, 4):
            raise ValueError(
                "query and key must both be [B, T, D] or [B, H, T, D]; "
                f"received {tuple(query.shape)} and {tuple(key.shape)}"
            )
        one_head = query.dim() == 3
        if one_head:
            query, key = query.unsqueeze(1), key.unsqueeze(1)  # (B, 1, T, D)
        logits = self.combine(self.prepare_query(query), self.prepare_key(key))
        return logits.squeeze(1) if one_head else logits

    # -- helpers for subclasses ----------------------------------------------------------------------------
    def _check_features(self, tensor: Tensor, expected: int | None, name: str) -> None:
        if expected is not None and tensor.shape[-1] != expected:
            raise ValueError(
                f"{type(self).__name__}: {name} must have {expected} features (last dim); "
                f"received shape {tuple(tensor.shape)}"
            )
        if tensor.dim() == 4 and tensor.shape[1] not in (1, self.heads) and self.heads > 1:
            raise ValueError(
                f"{type(self).__name__} has {self.heads} heads; {name} has {tensor.shape[1]} "
                f"(shape {tuple(tensor.shape)})"
            )

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, key_dim={self.key_dim}, heads={self.heads}"


class DotProductScore(Score):
    """A score of the form ``scale * prepare_query(q) . prepare_key(k)``: eligible for the fused SDPA path."""

    is_dot: ClassVar[bool] = True

    def scale(self, dim: int) -> float:
        """The factor applied to the dot product of prepared vectors of ``dim`` features."""
        return 1.0

    def combine(self, query: Tensor, key: Tensor) -> Tensor:
        if query.shape[-1] != key.shape[-1]:
            raise ValueError(
                f"{type(self).__name__}: prepared query and key must have the same features; "
                f"received {query.shape[-1]} and {key.shape[-1]}"
            )
        scale = self.scale(query.shape[-1])
        if scale != 1.0:
            query = query * scale  # scaling [.., Tq, D] is cheaper than scaling the [.., Tq, Tk] logits
        return query @ key.transpose(-1, -2)  # (B, H, Tq, Tk)


_REGISTRY: dict[str, type[Score]] = {}
S = TypeVar("S", bound=type[Score])


def register_score(*names: str) -> Callable[[S], S]:
    """Class decorator: register a :class:`Score` subclass under one or more names."""

    def decorate(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Score)):
            raise TypeError(f"register_score expects a Score subclass; received {cls!r}")
        for name in names:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise ValueError(f"score name {name!r} is already registered to {_REGISTRY[name].__name__}")
            _REGISTRY[name] = cls
        return cls

    return decorate


def available_scores() -> list[str]:
    """Registered score names, sorted."""
    return sorted(_REGISTRY)


def score_class(name: str) -> type[Score]:
    """The class registered as ``name``; ``KeyError`` listing the names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"score name must be a str; received {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown score {name!r}; available: {', '.join(available_scores())}") from None


def get_score(name: str, **dims: object) -> Score:
    """Build the score registered as ``name``: ``get_score("additive", query_dim=64, key_dim=32, heads=4)``.

    Keyword arguments go to the score's constructor unchanged, so a misspelt one raises ``TypeError``.
    """
    return score_class(name)(**dims)
