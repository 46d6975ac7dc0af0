"""Cross-modal readers: a text decoder reads the digit string in an image, by attention across the two modalities.

    features F = CNN(image) + P_2d                                           [B, N, D],  N = Hs*Ws
    cross:   c_t = E_p[W_v F], p = softmax(score(W_q s_{t-1}, W_k F));   s_t = GRU([E y_{t-1}; c_t], s_{t-1})
             logits_t = W_o tanh(W_c [s_t; c_t])
    single:  [F; E y_0 .. E y_{T-1}] through pre-LN self-attention layers, mask = prefix(N): image bidirectional,
             text causal; logits_t = W_o LN(h_{N+t})

Two ways to let text read an image (DESIGN claim 5):

- :class:`CrossReader` (attention, "AT"): Xu et al. 2015, "Show, Attend and Tell", and Li et al. 2019, "Show,
  Attend and Read": a recurrent decoder whose query is its previous state ``s_{t-1}`` (Bahdanau order), reading CNN
  features through :class:`attnlab.CrossAttention`; the image's keys and values are projected once per image
  (``CrossAttention.precompute`` -> :class:`attnlab.Memory`). Input feeding (``c_t`` enters the GRU) tells the
  next query where the last digit was read, through the positions inside ``c_t``. The score is additive by
  default, Xu et al.'s MLP attention: with it the reader finds the left-to-right alignment early (85% of test
  strings read exactly after 600 steps of the quick budget, against 33% with ``scaled_dot`` and 40% with
  ``scaled_dot`` and 4 heads; one seed each).
- :class:`SingleStreamReader` (self-attention, "SA" across modalities): image feature tokens followed by text
  tokens in one sequence, :class:`attnlab.SelfAttention` layers with :func:`attnlab.masks.prefix` (a prefix LM
  over image and text, as in Wang et al. 2021, "SimVLM"). Self vs cross is only how the layers are called.

The CNN is :class:`~attnlab.vision.backbone.BasicBlock` residual stages: ``stem -> block -> block (/2) -> block ->
1x1 conv to D``, so a ``12 x 64`` canvas gives a ``6 x 32`` grid (``N = 192``). ``P_2d``: fixed sinusoids, the
first ``D/2`` features encode the row, the last ``D/2`` the column (Vaswani et al. 2017's formula per axis).

Tokens: ``PAD = 0``, ``BOS = 1``, ``EOS = 2``, digit ``d`` is ``d + 3`` (``VOCAB = 13``); :func:`targets` and
:func:`strings` convert. Weights (``return_weights=True``) are per-token maps over the feature grid, as data,
named like ``attention_sites()``: ``"decoder.cross" [B, (H,) T, Hs, Ws]`` (each map sums to 1), and for the single
stream ``"stream.{i}.self" [B, (H,) T, Hs, Ws]``: the text queries' weights on the image keys (the rest of
each row, ``1 - sum``, went to earlier text tokens). The head axis is there only when ``heads > 1``.

Decoding: both readers implement :mod:`attnlab.seq.decode`'s protocol (``encode / step / reorder``), so
``greedy`` and ``beam_search`` work unchanged. That protocol passes integer tokens ``src [B, S]``, so an image
enters as its pixel levels: ``src, lengths = pixel_tokens(images)`` (digit canvases are exact multiples of 1/16;
anything else is refused) and ``encode`` rebuilds the ``image_size`` image from them.

Status: complete; teacher forcing equals step-by-step decoding (tested), and a tiny set of canvases is learned
exactly. Reading >= 95% of test strings exactly is a training recipe's job (see RESULTS.md when recorded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import masks
from ..attention import CrossAttention, KVCache, Memory, context_and_weights
from .backbone import BasicBlock
from .base import AttentionSite, VisionOutput, check_divides, check_image, check_positive_int
from .vit import EncoderLayer

__all__ = [
    "BOS",
    "DIGIT_OFFSET",
    "EOS",
    "PAD",
    "VOCAB",
    "CrossReader",
    "CrossReaderState",
    "ImageEncoder",
    "SingleStreamReader",
    "SingleStreamState",
    "pixel_tokens",
    "sinusoids",
    "sinusoids_2d",
    "strings",
    "targets",
]

PAD, BOS, EOS = 0, 1, 2
DIGIT_OFFSET = 3  # digit d is token d + 3
VOCAB = DIGIT_OFFSET + 10
LEVELS = 16  # load_digits pixels are integers 0..16, canvases hold them / 16


# -- tokens ------------------------------------------------------------------------------------------------------
def targets(labels: Sequence[Sequence[int]], device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """``(tgt_in, tgt_out)`` ``[B, T]`` long, ``T = longest + 1``: ``BOS d_1 .. d_n PAD..`` and
    ``d_1 .. d_n EOS PAD..`` for digit strings ``labels`` (e.g. ``digit_strings(...).labels``)."""
    if not isinstance(labels, Sequence) or not all(isinstance(row, Sequence) for row in labels):
        raise TypeError(f"labels must be a list of digit lists; received {type(labels).__name__}")
    longest = max((len(row) for row in labels), default=0)
    tgt_in = torch.full((len(labels), longest + 1), PAD, dtype=torch.long)
    tgt_out = torch.full((len(labels), longest + 1), PAD, dtype=torch.long)
    for b, row in enumerate(labels):
        if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 9 for d in row):
            raise ValueError(f"labels[{b}] must hold digits 0..9; received {list(row)!r}")
        ids = torch.tensor([d + DIGIT_OFFSET for d in row], dtype=torch.long)
        tgt_in[b, 0] = BOS
        tgt_in[b, 1 : len(row) + 1] = ids
        tgt_out[b, : len(row)] = ids
        tgt_out[b, len(row)] = EOS
    return tgt_in.to(device), tgt_out.to(device)


def strings(tokens: Tensor) -> list[list[int]]:
    """Digit strings from decoded ``tokens [B, T]`` (output ids, no BOS): digits up to the first EOS or PAD.

    A non-digit token before EOS (BOS) is kept as -1, so a malformed read never equals a true string."""
    out = []
    for row in tokens.tolist():
        digits = []
        for token in row:
            if token in (EOS, PAD):
                break
            digits.append(token - DIGIT_OFFSET if token >= DIGIT_OFFSET else -1)
        out.append(digits)
    return out


def pixel_tokens(images: Tensor, levels: int = LEVELS) -> tuple[Tensor, Tensor]:
    """``images [B, 1, Hs, Ws]`` in ``{0, 1/levels, .., 1}`` as ``(src [B, Hs*Ws] long, src_lengths [B])``, the
    integer source that :mod:`attnlab.seq.decode` passes to ``encode``. Exact for digit canvases; ``ValueError``
    for values that are not multiples of ``1/levels`` (they would be silently quantized)."""
    check_image(images, 1)
    scaled = images.double() * levels
    src = scaled.round()
    if bool(((scaled - src).abs() > 1e-4).any()) or bool((src < 0).any()) or bool((src > levels).any()):
        raise ValueError(f"images must hold multiples of 1/{levels} in [0, 1] (digit canvases do)")
    batch, pixels = images.shape[0], images.shape[2] * images.shape[3]
    return src.long().view(batch, pixels), torch.full((batch,), pixels, dtype=torch.long, device=images.device)


def _log_probs(logits: Tensor) -> Tensor:
    """``log_softmax`` in float32 at least (half precision upcast, float64 kept), as the decoders expect."""
    return (logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits).log_softmax(-1)


# -- positions ---------------------------------------------------------------------------------------------------
def sinusoids(positions: Tensor, dim: int) -> Tensor:
    """``positions [..., T]`` -> ``[..., T, dim]`` float32: ``sin(p w_i), cos(p w_i)`` interleaved,
    ``w_i = 10000^(-2i/dim)`` (Vaswani et al. 2017)."""
    exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim
    angles = positions.unsqueeze(-1).float() * torch.exp(exponents * -math.log(10000.0))  # (..., T, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (..., T, dim/2, 2) -> (..., T, dim)


def sinusoids_2d(height: int, width: int, dim: int, device: torch.device | str | None = None) -> Tensor:
    """``[Hs*Ws, dim]`` (row-major pixels): the row's sinusoids in ``dim/2`` features, then the column's."""
    if dim % 4:
        raise ValueError(f"2D sinusoids need dim divisible by 4; received {dim}")
    rows = sinusoids(torch.arange(height, device=device), dim // 2)  # (Hs, D/2)
    cols = sinusoids(torch.arange(width, device=device), dim // 2)  # (Ws, D/2)
    grid = torch.cat((rows[:, None].expand(-1, width, -1), cols[None].expand(height, -1, -1)), dim=-1)  # (Hs, Ws, D)
    return grid.reshape(height * width, dim)  # (N, D)


# -- the image side ----------------------------------------------------------------------------------------------
class ImageEncoder(nn.Module):
    """``[B, 1, H, W] -> (features [B, N, dim], (Hs, Ws))``: residual CNN, 1x1 conv to ``dim``, 2D sinusoids."""

    def __init__(self, dim: int, widths: tuple[int, int] = (32, 64), in_channels: int = 1) -> None:
        super().__init__()
        if len(widths) != 2:
            raise ValueError(f"widths must give 2 stage widths; received {tuple(widths)}")
        first, second = (check_positive_int(w, "widths") for w in widths)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.dim = check_positive_int(dim, "dim")
        self.cnn = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, padding=1, bias=False),
            nn.BatchNorm2d(first),
            nn.ReLU(),
            BasicBlock(first, first),
            BasicBlock(first, second, stride=2),
            BasicBlock(second, second),
            nn.Conv2d(second, dim, 1),
        )

    def forward(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        check_image(images, self.in_channels)
        grid = self.cnn(images)  # (B, D, Hs, Ws)
        height, width = grid.shape[-2:]
        tokens = grid.flatten(2).transpose(1, 2)  # (B, D, N) -> (B, N, D)
        positions = sinusoids_2d(height, width, self.dim, device=images.device).to(tokens.dtype)  # (N, D)
        return tokens + positions, (height, width)


class _Reader(nn.Module):
    """What both readers share: the CNN, token embeddings, the image size that ``encode`` rebuilds."""

    def __init__(self, dim: int, widths: tuple[int, int], image_size: tuple[int, int], dropout: float) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"dim must be divisible by 4 (2D sinusoids); received {dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); received {dropout}")
        if len(image_size) != 2:
            raise ValueError(f"image_size must be (height, width); received {image_size!r}")
        self.image_size = tuple(check_positive_int(s, "image_size") for s in image_size)
        self.dim = dim
        self.encoder = ImageEncoder(dim, widths)
        self.embed = nn.Embedding(VOCAB, dim)
        self.dropout = nn.Dropout(dropout)

    def images_from_tokens(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        """Inverse of :func:`pixel_tokens` for ``image_size`` images: ``[B, H*W]`` levels -> ``[B, 1, H, W]``."""
        height, width = self.image_size
        if src.dim() != 2 or src.dtype.is_floating_point or src.shape[1] != height * width:
            raise ValueError(
                f"src must be integer pixel levels [B, {height * width}] (pixel_tokens of a {height}x{width} image); "
                f"received {tuple(src.shape)} {src.dtype}"
            )
        if src_lengths.shape != (src.shape[0],) or bool((src_lengths != height * width).any()):
            raise ValueError(f"src_lengths must all be {height * width} (images have no padding)")
        dtype = self.embed.weight.dtype
        return (src.to(dtype) / LEVELS).view(src.shape[0], 1, height, width)  # (B, 1, H, W)

    def _check_text(self, images: Tensor, tgt_in: Tensor) -> None:
        if not isinstance(tgt_in, Tensor) or tgt_in.dim() != 2 or tgt_in.dtype.is_floating_point:
            got = f"{tuple(tgt_in.shape)} {tgt_in.dtype}" if isinstance(tgt_in, Tensor) else type(tgt_in).__name__
            raise TypeError(f"tgt_in must be an integer tensor [B, T]; received {got}")
        if tgt_in.shape[0] != images.shape[0]:
            raise ValueError(f"tgt_in must have batch {images.shape[0]} like images; received {tuple(tgt_in.shape)}")


# -- attention across modalities: a recurrent decoder reading CNN features --------------------------------------
@dataclass
class CrossReaderState:
    """Decoding state: the image's precomputed keys/values and the decoder's last state ``s_{t-1}``."""

    memory: Memory
    hidden: Tensor  # [B, D]


class CrossReader(_Reader):
    """``CrossReader(dim=64, widths=(32, 64), heads=1, score="additive", dropout=0.0, image_size=(12, 64))``;
    ``forward(images [B, 1, H, W], tgt_in [B, T])`` -> logits ``[B, T, VOCAB]``."""

    def __init__(
        self,
        dim: int = 64,
        widths: tuple[int, int] = (32, 64),
        heads: int = 1,
        score: str = "additive",
        dropout: float = 0.0,
        image_size: tuple[int, int] = (12, 64),
    ) -> None:
        super().__init__(dim, widths, image_size, dropout)
        check_divides(heads, dim, "dim")
        self.heads, self.score_name = heads, score
        self.attention = CrossAttention(dim, dim, heads, score)
        self.init = nn.Linear(dim, dim)  # s_0 = tanh(W_init mean(F))
        self.cell = nn.GRUCell(2 * dim, dim)
        self.combine = nn.Linear(2 * dim, dim)
        self.out = nn.Linear(dim, VOCAB)

    def attention_sites(self) -> list[AttentionSite]:
        return [
            AttentionSite(
                "decoder.cross",
                f"cross_attention({self.score_name})",
                "cross",
                "decoder state s_{t-1} (text, one token at a time)",
                "CNN features of the image (Hs x Ws grid, 2D positions)",
            )
        ]

    def forward(self, images: Tensor, tgt_in: Tensor, *, return_weights: bool = False) -> Tensor | VisionOutput:
        """Teacher forcing: ``logits [B, T, VOCAB]``; with ``return_weights`` a VisionOutput with
        ``"decoder.cross" [B, (H,) T, Hs, Ws]``. Runs the same :meth:`_step` as decoding, once per position."""
        self._check_text(images, tgt_in)
        state, (height, width) = self._start(images)
        logits, maps = [], []
        for t in range(tgt_in.shape[1]):
            step_logits, state, weights = self._step(state, tgt_in[:, t], return_weights)
            logits.append(step_logits)
            maps.append(weights)
        logits = torch.stack(logits, dim=1)  # (B, T, V)
        if not return_weights:
            return logits
        maps = torch.cat(maps, dim=-2)  # (B, (H,) T, N)
        return VisionOutput(logits, {"decoder.cross": maps.unflatten(-1, (height, width))})  # (B, (H,) T, Hs, Ws)

    def _start(self, images: Tensor) -> tuple[CrossReaderState, tuple[int, int]]:
        features, grid = self.encoder(images)  # (B, N, D)
        features = self.dropout(features)
        memory = self.attention.precompute(features)  # keys/values projected once per image
        hidden = torch.tanh(self.init(features.mean(dim=1)))  # (B, D)
        return CrossReaderState(memory, hidden), grid

    def _step(
        self, state: CrossReaderState, tokens: Tensor, return_weights: bool
    ) -> tuple[Tensor, CrossReaderState, Tensor | None]:
        """Read with ``s_{t-1}``, update the GRU with ``[E y_{t-1}; c_t]``: ``logits [B, V]``, state, weights."""
        context, weights = context_and_weights(
            self.attention(state.hidden[:, None], state.memory, return_weights=return_weights)
        )
        context = context[:, 0]  # (B, 1, D) -> (B, D)
        embedded = self.dropout(self.embed(tokens))  # (B, D)
        hidden = self.cell(torch.cat((embedded, context), dim=-1), state.hidden)  # (B, D)
        readout = torch.tanh(self.combine(torch.cat((hidden, context), dim=-1)))  # (B, D)
        logits = self.out(self.dropout(readout))  # (B, V)
        return logits, CrossReaderState(state.memory, hidden), weights  # weights (B, (H,) 1, N)

    # -- attnlab.seq.decode protocol ---------------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> CrossReaderState:
        """``src`` = :func:`pixel_tokens` of ``image_size`` images."""
        return self._start(self.images_from_tokens(src, src_lengths))[0]

    def step(self, state: CrossReaderState, tokens: Tensor) -> tuple[Tensor, CrossReaderState]:
        logits, state, _ = self._step(state, tokens, False)
        return _log_probs(logits), state  # (B, V)

    def reorder(self, state: CrossReaderState, index: Tensor) -> CrossReaderState:
        memory = Memory(state.memory.key.index_select(0, index), state.memory.value.index_select(0, index))
        return CrossReaderState(memory, state.hidden.index_select(0, index))


# -- self-attention across modalities: one stream [image; text] -------------------------------------------------
class _StreamLayer(EncoderLayer):
    """The ViT's pre-LN layer, called with a mask and a cache (the prefix mask makes it a prefix LM layer)."""

    def forward(
        self, x: Tensor, *, mask: Tensor | None = None, cache: KVCache | None = None, return_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        attended, weights = context_and_weights(
            self.attention(self.attention_norm(x), mask=mask, cache=cache, return_weights=return_weights)
        )
        x = x + attended  # (B, T, D)
        return x + self.mlp(self.mlp_norm(x)), weights


@dataclass
class SingleStreamState:
    """Decoding state: one :class:`~attnlab.KVCache` per layer (image positions first) and the next text position.

    The caches are updated in place by :meth:`SingleStreamReader.step`; use only the state a step returns."""

    caches: list[KVCache]
    position: int = 0


class SingleStreamReader(_Reader):
    """``SingleStreamReader(dim=64, widths=(32, 64), layers=2, heads=2, mlp_ratio=2.0, dropout=0.0,
    image_size=(12, 64))``; ``forward(images, tgt_in)`` -> logits ``[B, T, VOCAB]``."""

    def __init__(
        self,
        dim: int = 64,
        widths: tuple[int, int] = (32, 64),
        layers: int = 2,
        heads: int = 2,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        image_size: tuple[int, int] = (12, 64),
    ) -> None:
        super().__init__(dim, widths, image_size, dropout)
        check_divides(heads, dim, "dim")
        self.heads = heads
        self.modality = nn.Parameter(torch.zeros(2, dim))  # added to image tokens [0] and text tokens [1]
        self.layers = nn.ModuleList(
            _StreamLayer(dim, heads, mlp_ratio, dropout) for _ in range(check_positive_int(layers, "layers"))
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, VOCAB)

    def attention_sites(self) -> list[AttentionSite]:
        stream = "stream [image features; text] at layer {}"
        return [
            AttentionSite(
                f"stream.{i}.self",
                "self_attention(scaled_dot), prefix mask",
                "self",
                stream.format(i),
                stream.format(i) + " (image bidirectional, text causal)",
            )
            for i in range(len(self.layers))
        ]

    def _image(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        features, grid = self.encoder(images)  # (B, N, D)
        return self.dropout(features + self.modality[0]), grid

    def _text(self, tokens: Tensor, start: int) -> Tensor:
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)  # (T,)
        x = self.embed(tokens) + sinusoids(positions, self.dim).to(self.embed.weight.dtype) + self.modality[1]
        return self.dropout(x)  # (B, T, D)

    def forward(self, images: Tensor, tgt_in: Tensor, *, return_weights: bool = False) -> Tensor | VisionOutput:
        """Teacher forcing over ``[F; E tgt_in]`` with the prefix mask: ``logits [B, T, VOCAB]``; with
        ``return_weights`` a VisionOutput with ``"stream.{i}.self" [B, (H,) T, Hs, Ws]`` (text rows, image keys)."""
        self._check_text(images, tgt_in)
        image, (height, width) = self._image(images)  # (B, N, D)
        pixels = image.shape[1]
        x = torch.cat((image, self._text(tgt_in, 0)), dim=1)  # (B, L, D), L = N + T
        mask = masks.prefix(pixels, x.shape[1]).to(x.device)  # (1, L, L): image bidirectional, text causal
        weights = {}
        for i, layer in enumerate(self.layers):
            x, w = layer(x, mask=mask, return_weights=return_weights)
            if w is not None:  # (B, (H,) L, L): the text queries' rows over the image keys
                weights[f"stream.{i}.self"] = w[..., pixels:, :pixels].unflatten(-1, (height, width))
        logits = self.out(self.norm(x[:, pixels:]))  # (B, T, V)
        return VisionOutput(logits, weights) if return_weights else logits

    # -- attnlab.seq.decode protocol ---------------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> SingleStreamState:
        """Run the image prefix once (bidirectional, so one block), filling every layer's cache."""
        x, _ = self._image(self.images_from_tokens(src, src_lengths))
        caches = [KVCache() for _ in self.layers]
        for layer, cache in zip(self.layers, caches, strict=True):
            x, _ = layer(x, cache=cache)
        return SingleStreamState(caches, 0)

    def step(self, state: SingleStreamState, tokens: Tensor) -> tuple[Tensor, SingleStreamState]:
        """Append ``tokens [B]`` (it reads the whole image and the text so far): ``log_probs [B, V]``."""
        x = self._text(tokens[:, None], state.position)  # (B, 1, D)
        for layer, cache in zip(self.layers, state.caches, strict=True):
            x, _ = layer(x, cache=cache)
        logits = self.out(self.norm(x[:, -1]))  # (B, V)
        return _log_probs(logits), SingleStreamState(state.caches, state.position + 1)

    def reorder(self, state: SingleStreamState, index: Tensor) -> SingleStreamState:
        for cache in state.caches:
            cache.reorder(index)
        return state
