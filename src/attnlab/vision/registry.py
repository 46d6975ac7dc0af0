"""The open registry of vision blocks: ``get_block(name, channels, **options)``.

Blocks register with ``@register_block("name")``; an unknown name raises ``KeyError`` listing the registered
ones. Options go to the block's constructor unchanged, so a misspelt one raises ``TypeError``.
Every block maps ``[B, C, Hs, Ws] -> [B, C, Hs, Ws]`` (see :mod:`attnlab.vision.base`), except ``"vit"``, a
model: ``[B, C, Hs, Ws] -> [B, dim]`` pooled features (see :mod:`attnlab.vision.vit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

__all__ = ["available_blocks", "block_class", "get_block", "register_block"]

_REGISTRY: dict[str, type[nn.Module]] = {}
M = TypeVar("M", bound=type[nn.Module])


def register_block(*names: str) -> Callable[[M], M]:
    """Class decorator: register a block under one or more names (the first becomes its ``mechanism``)."""
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"register_block needs one or more non-empty names; received {names!r}")

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_block expects an nn.Module subclass; received {cls!r}")
        for name in names:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise ValueError(f"block name {name!r} is already registered to {_REGISTRY[name].__name__}")
            _REGISTRY[name] = cls
        cls.mechanism = names[0]
        return cls

    return decorate


def available_blocks() -> list[str]:
    """Registered block names, sorted."""
    return sorted(_REGISTRY)


def block_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; ``KeyError`` listing the names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"block name must be a str; received {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown block {name!r}; available: {', '.join(available_blocks())}") from None


def get_block(name: str, channels: int, **options: object) -> nn.Module:
    """Build the block registered as ``name`` for ``channels`` input channels: ``get_block("se", 64)``."""
    return block_class(name)(channels, **options)
