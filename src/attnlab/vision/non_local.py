"""Non-local block: every pixel reads every pixel of the same map, behind a zero-initialized residual.

    y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j),        z = BN(W_z y) + x        (BN's scale initialized to 0)

Wang, Girshick, Gupta, He 2018, "Non-local Neural Networks". Pairwise functions ``f`` (Sec. 3.2), with
``theta``, ``phi``, ``g`` 1x1 convolutions to ``C / reduction`` channels (reduction 2 in the paper):

- ``embedded_gaussian``: ``f = exp(theta(x_i) . phi(x_j))``, ``C(x) = sum_j f``: a softmax, self-attention;
- ``gaussian``: ``f = exp(x_i . x_j)`` on the raw features (no theta/phi parameters);
- ``dot``: ``f = theta(x_i) . phi(x_j)``, ``C(x) = N`` (the number of key positions);
- ``concatenation``: ``f = relu(w_f . [theta(x_i); phi(x_j)])``, ``C(x) = N``.

``kv_stride`` max-pools phi and g (Sec. 3.3, "subsampling"), shrinking the keys by ``kv_stride**2``. ``scale``
multiplies the Gaussian logits (1 in the paper; timm's ``NonLocalAttn`` uses ``channels ** -0.5``).

Memory (beyond the O(N*C) projections):
- Gaussians run through :func:`attnlab.attend`'s fused SDPA path (query/key/value padded to one width so the
  flash kernel applies): O(N) in pixels, forward and backward; no ``[N, M]`` matrix exists.
- ``dot`` is not a distribution, so it is not an expectation under the core; by associativity
  ``y = theta (phi^T g) / N`` costs a ``[C', C']`` matrix: O(N) as well, same result up to rounding.
- ``concatenation`` materializes ``relu(a_i + b_j)`` as ``[B, N, M]`` (about 4 copies with autograd): estimated
  first, refused above ``memory_limit`` with :class:`~attnlab.vision.memory.MemoryLimitError`. (Sorting the
  ``b_j`` would give an exact O(N log N) form; not done.)

Weights (``return_weights=True``): ``"pixel" [B, Hk, Wk]``, ``f(x_p, x_j) / C(x_p)`` of the query pixel ``p``
over the key grid (a distribution for the Gaussians; ``f / N`` for dot and concatenation).

Status: complete; every pairwise function matches a float64 reference that builds the full ``[N, M]`` matrix.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..core import masked_softmax
from .base import VisionBlock, check_positive_int, reduced
from .functional import dot_attend, pool_keys, to_map, to_tokens
from .memory import DEFAULT_MEMORY_LIMIT, check_limit, check_memory
from .registry import register_block

__all__ = ["PAIRWISE", "Concatenation", "DotPairwise", "EmbeddedGaussian", "Gaussian", "NonLocal", "Pairwise"]


class Pairwise(nn.Module, abc.ABC):
    """A pairwise function ``f`` with its normalization ``C(x)``; owns its embeddings (theta, phi)."""

    #: C(x) = sum_j f: a softmax, an expectation under the core
    softmax: ClassVar[bool] = False
    #: the aggregation forms ``[B, N, M]`` (checked against ``memory_limit`` first)
    materializes: ClassVar[bool] = False

    def __init__(self, channels: int, inner: int) -> None:
        super().__init__()

    @abc.abstractmethod
    def embed(self, x: Tensor, kv_stride: int) -> tuple[Tensor, Tensor]:
        """Queries ``[B, N, Dq]`` from every pixel, keys ``[B, M, Dk]`` from the (pooled) map."""

    @abc.abstractmethod
    def aggregate(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """``y_i = 1/C(x) sum_j f(q_i, k_j) v_j``: ``[B, N, Dq] x [B, M, Dk] x [B, M, Dv] -> [B, N, Dv]``."""

    @abc.abstractmethod
    def row(self, query: Tensor, key: Tensor) -> Tensor:
        """``f(q, k_j) / C(x)`` of one query ``[B, 1, Dq]`` over the keys: ``[B, M]``."""


class _ThetaPhi(Pairwise):
    """Embedded pairwise functions: queries ``theta(x)``, keys ``phi(x)``, 1x1 convolutions to ``inner``."""

    def __init__(self, channels: int, inner: int) -> None:
        super().__init__(channels, inner)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)

    def embed(self, x: Tensor, kv_stride: int) -> tuple[Tensor, Tensor]:
        return to_tokens(self.theta(x)), to_tokens(pool_keys(self.phi(x), kv_stride))  # (B, N, C'), (B, M, C')


class _Softmax(Pairwise):
    """``f = exp(q . k)``, ``C(x) = sum_j f``: the core's expectation, on the fused path."""

    softmax = True

    def aggregate(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        return dot_attend(query, key, value)  # (B, N, Dv)

    def row(self, query: Tensor, key: Tensor) -> Tensor:
        return masked_softmax(query @ key.transpose(1, 2)).squeeze(1)  # (B, 1, M) -> (B, M)


class EmbeddedGaussian(_ThetaPhi, _Softmax):
    """``exp(theta_i . phi_j)`` normalized by its sum: self-attention."""


class Gaussian(_Softmax):
    """``exp(x_i . x_j)`` on the raw features: no parameters."""

    def embed(self, x: Tensor, kv_stride: int) -> tuple[Tensor, Tensor]:
        return to_tokens(x), to_tokens(pool_keys(x, kv_stride))  # (B, N, C), (B, M, C)


class DotPairwise(_ThetaPhi):
    """``theta_i . phi_j / N``: linear in the pixels by associativity."""

    def aggregate(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        summary = key.transpose(1, 2) @ value  # (B, C', M) @ (B, M, C') -> (B, C', C')
        return (query @ summary) / key.shape[1]  # (B, N, C')

    def row(self, query: Tensor, key: Tensor) -> Tensor:
        return (query @ key.transpose(1, 2)).squeeze(1) / key.shape[1]  # (B, M)


class Concatenation(_ThetaPhi):
    """``relu(w_f . [theta_i; phi_j]) / N = relu(a_i + b_j) / N``: materializes ``[B, N, M]``."""

    materializes = True

    def __init__(self, channels: int, inner: int) -> None:
        super().__init__(channels, inner)
        self.weight = nn.Parameter(torch.randn(2 * inner) / math.sqrt(2 * inner))  # w_f = [w_theta; w_phi]

    def embed(self, x: Tensor, kv_stride: int) -> tuple[Tensor, Tensor]:
        theta, phi = super().embed(x, kv_stride)
        inner = theta.shape[-1]
        return theta @ self.weight[:inner, None], phi @ self.weight[inner:, None]  # a (B, N, 1), b (B, M, 1)

    def aggregate(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        pairs = torch.relu(query + key.transpose(1, 2))  # (B, N, 1) + (B, 1, M) -> (B, N, M)
        return (pairs @ value) / key.shape[1]  # (B, N, C')

    def row(self, query: Tensor, key: Tensor) -> Tensor:
        return torch.relu(query + key.transpose(1, 2)).squeeze(1) / key.shape[1]  # (B, M)


PAIRWISE: dict[str, type[Pairwise]] = {
    "embedded_gaussian": EmbeddedGaussian,
    "gaussian": Gaussian,
    "dot": DotPairwise,
    "concatenation": Concatenation,
}


@register_block("nonlocal")
class NonLocal(VisionBlock):
    """``get_block("nonlocal", channels, pairwise="embedded_gaussian", reduction=2, kv_stride=1, scale=1.0,
    memory_limit=1 GiB)``; weights: ``"pixel" [B, Hk, Wk]``."""

    def __init__(
        self,
        channels: int,
        pairwise: str = "embedded_gaussian",
        reduction: int = 2,
        kv_stride: int = 1,
        scale: float = 1.0,
        memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        super().__init__(channels)
        if pairwise not in PAIRWISE:
            raise KeyError(f"unknown pairwise function {pairwise!r}; available: {', '.join(PAIRWISE)}")
        if scale != 1.0 and not PAIRWISE[pairwise].softmax:
            raise ValueError(f"scale multiplies the Gaussian logits; pairwise={pairwise!r} has none")
        inner = reduced(self.channels, reduction)
        self.pairwise_name, self.reduction, self.scale = pairwise, reduction, float(scale)
        self.kv_stride = check_positive_int(kv_stride, "kv_stride")
        self.memory_limit = check_limit(memory_limit)
        self.pairwise = PAIRWISE[pairwise](self.channels, inner)
        self.g = nn.Conv2d(self.channels, inner, 1)
        self.out = nn.Conv2d(inner, self.channels, 1)  # W_z
        self.norm = nn.BatchNorm2d(self.channels)
        nn.init.zeros_(self.norm.weight)  # the block starts as the identity (Sec. 4.1)

    def _forward(self, x: Tensor, pixel: tuple[int, int] | None) -> tuple[Tensor, dict[str, Tensor]]:
        height, width = x.shape[-2:]
        query, key = self.pairwise.embed(x, self.kv_stride)  # (B, N, Dq), (B, M, Dk)
        if self.scale != 1.0:
            query = query * self.scale
        value = to_tokens(pool_keys(self.g(x), self.kv_stride))  # (B, M, C')
        if self.pairwise.materializes:
            check_memory(
                "nonlocal (concatenation)",
                "pairwise terms [B, N, M]",
                (x.shape[0], query.shape[1], key.shape[1]),
                query.dtype,
                4 if torch.is_grad_enabled() else 2,
                self.memory_limit,
                "Use pairwise='embedded_gaussian' (fused, linear memory) or 'dot' (linear), kv_stride=2, or a "
                "lower-resolution stage",
            )
        context = self.pairwise.aggregate(query, key, value)  # (B, N, C')
        z = self.norm(self.out(to_map(context, height, width))) + x  # (B, C, Hs, Ws)
        if pixel is None:
            return z, {}
        key_height, key_width = -(-height // self.kv_stride), -(-width // self.kv_stride)
        p = pixel[0] * width + pixel[1]
        row = self.pairwise.row(query[:, p : p + 1], key)  # (B, M)
        return z, {"pixel": row.reshape(-1, key_height, key_width)}

    def sites(self, where: str) -> list[tuple[str, str, str]]:
        keys = f"every pixel of {where}" + (
            f", max-pooled {self.kv_stride}x{self.kv_stride}" if self.kv_stride > 1 else ""
        )
        return [("self", f"every pixel of {where} ({self.pairwise_name})", keys)]

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, pairwise={self.pairwise_name!r}, reduction={self.reduction}, "
            f"kv_stride={self.kv_stride}, scale={self.scale}"
        )
