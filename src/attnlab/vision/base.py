"""The contract every vision block keeps, and the types it returns.

A block is channels-first and shape-preserving: ``x [B, C, Hs, Ws] -> y [B, C, Hs, Ws]`` for any ``Hs, Ws >= 1``
(odd sizes included). It is built as ``get_block(name, channels, **options)`` and called as

    y = block(x)                                                  # the training path: a tensor
    out = block(x, return_weights=True, query_pixel=(row, col))   # VisionOutput(output, weights)

``weights`` maps a documented name to a tensor (data, never a plot): ``"channel" [B, C]`` gates (SE, ECA, CBAM),
``"spatial" [B, Hs, Ws]`` (CBAM), ``"pixel" [B, (H,) Hk, Wk]`` the attention weights of the one query pixel
``query_pixel`` (default: the centre) over the key grid (non-local, SAGAN, AA, BoTNet, criss-cross), ``"window"
[B, H, k, k]`` (SASA). Asking for weights only adds the computation of that one row: the training path is untouched.

``attention_sites()`` lists where a block attends, as :class:`AttentionSite` records (``kind`` is ``"self"``:
pixels read the same map's pixels; ``"channel"``: a per-channel gate computed from the map's statistics;
``"spatial"``: a per-pixel gate).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

__all__ = [
    "KINDS",
    "AttentionSite",
    "VisionBlock",
    "VisionOutput",
    "check_divides",
    "check_image",
    "check_odd",
    "check_positive_int",
    "reduced",
    "resolve_pixel",
]

KINDS = ("self", "channel", "spatial")


@dataclass(frozen=True)
class VisionOutput:
    """A block's (or model's) output together with its attention maps, as data."""

    output: Tensor  # [B, C, Hs, Ws] for blocks; logits or pooled features for models
    weights: dict[str, Tensor]


@dataclass(frozen=True)
class AttentionSite:
    """One place where a model attends: who asks (query) and what is read (keys/values)."""

    name: str  # module path inside the model, e.g. "attention.stage3.0"
    mechanism: str  # registry name, e.g. "nonlocal"
    kind: str  # "self" | "channel" | "spatial"
    query: str  # where the queries come from
    key: str  # where the keys and values come from


class VisionBlock(nn.Module, abc.ABC):
    """Base of the registered blocks: validates the input, resolves the query pixel, packs the weights."""

    #: registry name, set by :func:`attnlab.vision.register_block`
    mechanism: ClassVar[str] = ""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = check_positive_int(channels, "channels")

    def forward(
        self, x: Tensor, *, return_weights: bool = False, query_pixel: tuple[int, int] | None = None
    ) -> Tensor | VisionOutput:
        """``x [B, C, Hs, Ws] -> [B, C, Hs, Ws]``; with ``return_weights=True`` a :class:`VisionOutput`."""
        height, width = check_image(x, self.channels)
        if not return_weights:
            if query_pixel is not None:
                raise ValueError("query_pixel selects the weights to return; pass it with return_weights=True")
            return self._forward(x, None)[0]
        output, weights = self._forward(x, resolve_pixel(query_pixel, height, width))
        return VisionOutput(output, weights)

    @abc.abstractmethod
    def _forward(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, dict[str, Tensor]]:
        """The block on a validated ``x``; weights (for ``pixel``) only when ``pixel`` is not None."""

    @abc.abstractmethod
    def sites(self, where: str) -> list[tuple[str, str, str]]:
        """``(kind, query, key)`` of each place this block attends, reading the map described by ``where``."""

    def attention_sites(self, prefix: str = "", where: str = "its input map") -> list[AttentionSite]:
        """This block's attention sites, named ``prefix`` (or the mechanism's name); ``where`` names the map."""
        name = prefix or self.mechanism
        return [AttentionSite(name, self.mechanism, kind, query, key) for kind, query, key in self.sites(where)]


# -- validation shared by the blocks ----------------------------------------------------------------------------
def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; received {value!r}")
    return value


def reduced(channels: int, reduction: int, name: str = "reduction") -> int:
    """``channels // reduction``, refusing a reduction that leaves no channel."""
    check_positive_int(reduction, name)
    if channels // reduction < 1:
        raise ValueError(
            f"channels // {name} must be >= 1; received channels={channels}, {name}={reduction} "
            f"(channels // {name} = {channels // reduction})"
        )
    return channels // reduction


def check_odd(value: object, name: str) -> int:
    check_positive_int(value, name)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd (a centred window keeps the map's size); received {value}")
    return value


def check_divides(heads: int, dim: int, name: str) -> int:
    check_positive_int(heads, "heads")
    if dim % heads:
        raise ValueError(f"heads ({heads}) must divide {name} ({dim})")
    return dim // heads


def check_image(x: object, channels: int) -> tuple[int, int]:
    """``(Hs, Ws)`` of a float ``x [B, channels, Hs, Ws]``; ``TypeError``/``ValueError`` otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor [B, C, Hs, Ws]; received {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor; received dtype {x.dtype}")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"x must be [B, C, Hs, Ws] with C = {channels}; received shape {tuple(x.shape)}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"x must have Hs, Ws >= 1; received shape {tuple(x.shape)}")
    return x.shape[2], x.shape[3]


def resolve_pixel(pixel: tuple[int, int] | None, height: int, width: int) -> tuple[int, int]:
    """``(row, col)`` of the query whose weights are returned; the centre when None."""
    if pixel is None:
        return height // 2, width // 2
    if (
        not isinstance(pixel, tuple | list)
        or len(pixel) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in pixel)
    ):
        raise TypeError(f"query_pixel must be a (row, col) pair of ints; received {pixel!r}")
    row, col = pixel
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"query_pixel must lie in the {height}x{width} map; received {tuple(pixel)}")
    return row, col
