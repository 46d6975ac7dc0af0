"""Vision Transformer: image patches as tokens, then Transformer encoder layers of self-attention only.

    z_0 = [x_class; E x_p^1; ...; E x_p^T] + E_pos,    z_l = z_l' + MLP(LN z_l'),  z_l' = z_{l-1} + SA(LN z_{l-1})

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words". The all-attention end of the CNN-attention spectrum:
no convolution beyond the patch embedding (a ``patch x patch`` convolution with stride ``patch``).

Contract (a model, not a shape-preserving block):
- :class:`ViTEncoder`, registered as ``"vit"``: ``get_block("vit", channels, dim=64, ...)`` maps
  ``[B, C, Hs, Ws] -> [B, dim]`` pooled features (class token, or the mean of the tokens with
  ``class_token=False``); ``encode(x)`` gives all tokens ``[B, T (+1), dim]``.
- :class:`VisionTransformer`: the encoder plus a linear head, ``[B, C, Hs, Ws] -> logits [B, classes]``.
- Any ``Hs, Ws``: the image is zero-padded on the bottom/right to a multiple of ``patch``, giving a
  ``ceil(Hs/patch) x ceil(Ws/patch)`` grid. Position embeddings are learned for the grid of ``image_size`` and
  bilinearly interpolated to any other grid (the paper's recipe for fine-tuning at another resolution).
- Self-attention is :class:`attnlab.SelfAttention` (fused SDPA path; pre-norm layers). With
  ``return_weights=True`` the output is a :class:`~attnlab.vision.base.VisionOutput` whose weights are
  ``"layer{i}" [B, H, T, T]`` (``[B, T, T]`` for one head), the class token first when there is one.

Status: complete; matches a float64 reference (explicit patches, attention and layer norms).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import SelfAttention, context_and_weights
from .base import AttentionSite, VisionOutput, check_image, check_positive_int
from .functional import to_tokens
from .registry import register_block

__all__ = ["EncoderLayer", "ViTEncoder", "VisionTransformer"]


class EncoderLayer(nn.Module):
    """Pre-norm Transformer encoder layer over tokens ``[B, T, dim]``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        if hidden < 1:
            raise ValueError(
                f"mlp_ratio must leave a hidden layer of >= 1 unit; received dim={dim}, mlp_ratio={mlp_ratio}"
            )
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads, dropout=dropout)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, *, return_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        attended, weights = context_and_weights(self.attention(self.attention_norm(x), return_weights=return_weights))
        x = x + attended  # (B, T, dim)
        return x + self.mlp(self.mlp_norm(x)), weights


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a (height, width) pair; received {value!r}")
    return check_positive_int(pair[0], name), check_positive_int(pair[1], name)


@register_block("vit")
class ViTEncoder(nn.Module):
    """``get_block("vit", channels, dim=64, depth=4, heads=4, patch_size=4, mlp_ratio=2.0, image_size=32,
    class_token=True, dropout=0.0)``: ``[B, C, Hs, Ws] -> [B, dim]``."""

    mechanism = "vit"

    def __init__(
        self,
        channels: int,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        patch_size: int = 4,
        mlp_ratio: float = 2.0,
        image_size: int | tuple[int, int] = 32,
        class_token: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        self.dim, self.depth = check_positive_int(dim, "dim"), check_positive_int(depth, "depth")
        self.patch_size = check_positive_int(patch_size, "patch_size")
        height, width = _pair(image_size, "image_size")
        self.grid = (-(-height // patch_size), -(-width // patch_size))
        self.patch = nn.Conv2d(channels, dim, patch_size, stride=patch_size)  # E
        self.position = nn.Parameter(torch.zeros(1, dim, *self.grid))  # E_pos on the patch grid
        nn.init.trunc_normal_(self.position, std=0.02)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def patches(self, x: Tensor) -> Tensor:
        """``[B, C, Hs, Ws] -> [B, T (+1), dim]``: padded patches, embedded, plus positions (class token first)."""
        check_image(x, self.channels)
        p = self.patch_size
        x = F.pad(x, (0, -x.shape[3] % p, 0, -x.shape[2] % p))  # (B, C, ceil(Hs/p)*p, ceil(Ws/p)*p)
        embedded = self.patch(x)  # (B, dim, gh, gw)
        # Resized to the grid, unconditionally: at the trained grid bilinear resizing is the identity (exactly), and
        # a branch on the size would make an exported program specialise to one grid.
        position = F.interpolate(self.position, size=embedded.shape[-2:], mode="bilinear", align_corners=False)
        tokens = to_tokens(embedded + position)  # (B, T, dim)
        if self.class_token is not None:
            tokens = torch.cat([self.class_token.expand(x.shape[0], 1, -1), tokens], dim=1)  # (B, 1+T, dim)
        return tokens

    def encode(self, x: Tensor, *, return_weights: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """All output tokens ``[B, T (+1), dim]`` (after the final norm) and, if asked, each layer's weights."""
        tokens, weights = self.patches(x), {}
        for i, layer in enumerate(self.layers):
            tokens, layer_weights = layer(tokens, return_weights=return_weights)
            if layer_weights is not None:
                weights[f"layer{i}"] = layer_weights
        return self.norm(tokens), weights

    def forward(self, x: Tensor, *, return_weights: bool = False) -> Tensor | VisionOutput:
        """Pooled features ``[B, dim]``: the class token, or the tokens' mean without one."""
        tokens, weights = self.encode(x, return_weights=return_weights)
        pooled = tokens[:, 0] if self.class_token is not None else tokens.mean(dim=1)  # (B, dim)
        return VisionOutput(pooled, weights) if return_weights else pooled

    def attention_sites(self, prefix: str = "") -> list[AttentionSite]:
        tokens = "patch tokens" + (" and the class token" if self.class_token is not None else "")
        return [
            AttentionSite(
                f"{prefix}layers.{i}.attention", self.mechanism, "self", f"{tokens} of layer {i}", f"the same {tokens}"
            )
            for i in range(self.depth)
        ]


class VisionTransformer(nn.Module):
    """A ViT classifier: :class:`ViTEncoder` then a linear head; ``[B, C, Hs, Ws] -> logits [B, num_classes]``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, **encoder: object) -> None:
        super().__init__()
        self.encoder = ViTEncoder(in_channels, **encoder)
        self.head = nn.Linear(self.encoder.dim, check_positive_int(num_classes, "num_classes"))

    def forward(self, x: Tensor, *, return_weights: bool = False) -> Tensor | VisionOutput:
        encoded = self.encoder(x, return_weights=return_weights)
        if not return_weights:
            return self.head(encoded)
        return VisionOutput(self.head(encoded.output), encoded.weights)

    def attention_sites(self) -> list[AttentionSite]:
        """One self-attention site per encoder layer."""
        return self.encoder.attention_sites("encoder.")
