"""Transformers (Vaswani et al. 2017, "Attention Is All You Need"), pre-LN (Xiong et al. 2020), three ways:

    encoder layer:  x = x + SA(LN x);                    x = x + FFN(LN x)
    decoder layer:  x = x + SA_causal(LN x);  x = x + AT(LN x, encoder);  x = x + FFN(LN x)

- :class:`Transformer`: encoder-decoder. Self-attention (SA) inside the encoder and inside the decoder, attention
  ("cross", AT) from every decoder layer to the encoder output: 6 + 6 layers list 12 SA sites and 6 AT sites.
- :class:`TransformerClassifier`: encoder only (BERT, Devlin et al. 2018): SA only, no decoder, no AT; a
  classification head on the ``[CLS]`` position or on the mean over real tokens.
- :class:`DecoderOnlyTransformer`: one self-attention stack over ``[source; SEP; target]`` with a prefix mask
  (:func:`attnlab.masks.prefix`: source bidirectional, target causal). Its layers are *encoder* layers: only the
  mask differs, which is how self-attention simulates an encoder-decoder's cross-attention.

Every attention site is an :class:`attnlab.SelfAttention` or :class:`attnlab.CrossAttention`; the self-attention
score is configurable (any registered score), so the score x {AT, SA} grid uses these models unchanged.
Incremental decoding (:meth:`Transformer.step`, :meth:`DecoderOnlyTransformer.step`) projects only the new token:
self-attention keys/values go to an :class:`attnlab.KVCache` (a step costs O(prefix)), and cross-attention reads
encoder keys/values projected once per source with ``CrossAttention.precompute`` (a :class:`attnlab.Memory`).

Status: complete. Dropout: residual, attention-weight and FFN dropout share ``config.dropout``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import masks
from ..attention import CrossAttention, KVCache, Memory, SelfAttention, context_and_weights
from .base import (
    ClassifyInputs,
    Encoded,
    ModelOutput,
    Seq2SeqInputs,
    Site,
    as_head_weights,
    check_choice,
    check_dropout,
    check_positive,
    check_score,
    check_tokens,
    log_probs_of,
    reorder_batch,
    score_options,
    seq2seq_inputs,
)
from .positions import POSITIONS, get_positions

__all__ = [
    "BlockConfig",
    "DecoderLayer",
    "DecoderOnlyConfig",
    "DecoderOnlyState",
    "DecoderOnlyTransformer",
    "EncoderConfig",
    "EncoderLayer",
    "FeedForward",
    "SelfAttentionStack",
    "Transformer",
    "TransformerClassifier",
    "TransformerConfig",
    "TransformerState",
]

POOLINGS = ("cls", "mean")


# -- configs -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class BlockConfig:
    """What every Transformer layer of a model shares. ``score`` is the self-attention score; ``max_len`` bounds
    learned positions and the location score (both have one parameter per position)."""

    dim: int = 128
    heads: int = 4
    ffn_dim: int = 512
    dropout: float = 0.1
    score: str = "scaled_dot"
    positions: str = "sinusoidal"  # "sinusoidal" | "learned"
    max_len: int = 256
    pad_id: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "heads", "ffn_dim", "max_len"):
            check_positive(name, getattr(self, name))
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        check_dropout(self.dropout)
        check_score("score", self.score)
        check_choice("positions", self.positions, POSITIONS)
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) or self.pad_id < 0:
            raise ValueError(f"pad_id must be an int >= 0; received {self.pad_id!r}")


@dataclass(frozen=True, kw_only=True)
class TransformerConfig(BlockConfig):
    """Encoder-decoder. ``cross_score`` is the decoder-to-encoder attention's score."""

    src_vocab: int
    tgt_vocab: int
    encoder_layers: int = 3
    decoder_layers: int = 3
    cross_score: str = "scaled_dot"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("src_vocab", "tgt_vocab", "encoder_layers", "decoder_layers"):
            check_positive(name, getattr(self, name))
        check_score("cross_score", self.cross_score)

    @classmethod
    def base(cls, src_vocab: int, tgt_vocab: int) -> TransformerConfig:
        """Vaswani et al. 2017's base model: 6 + 6 layers, 512 features, 8 heads, FFN 2048."""
        return cls(
            src_vocab=src_vocab,
            tgt_vocab=tgt_vocab,
            dim=512,
            heads=8,
            ffn_dim=2048,
            encoder_layers=6,
            decoder_layers=6,
            max_len=512,
        )


@dataclass(frozen=True, kw_only=True)
class EncoderConfig(BlockConfig):
    """Encoder-only classifier: ``pooling="cls"`` reads a prepended [CLS] position, ``"mean"`` averages tokens."""

    vocab: int
    num_classes: int
    layers: int = 4
    pooling: str = "cls"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("vocab", "num_classes", "layers"):
            check_positive(name, getattr(self, name))
        check_choice("pooling", self.pooling, POOLINGS)

    @classmethod
    def bert_base(cls, vocab: int, num_classes: int) -> EncoderConfig:
        """BERT-base's shape (Devlin et al. 2018): 12 layers, 768 features, 12 heads, FFN 3072, learned positions."""
        return cls(
            vocab=vocab,
            num_classes=num_classes,
            dim=768,
            heads=12,
            ffn_dim=3072,
            layers=12,
            positions="learned",
            max_len=512,
        )


@dataclass(frozen=True, kw_only=True)
class DecoderOnlyConfig(BlockConfig):
    """Decoder-only over ``[source; SEP; target]``; ``max_len`` must cover ``S + 1 + T`` when it bounds anything."""

    src_vocab: int
    tgt_vocab: int
    layers: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("src_vocab", "tgt_vocab", "layers"):
            check_positive(name, getattr(self, name))


# -- layers ------------------------------------------------------------------------------------------------------
class FeedForward(nn.Module):
    """Position-wise ``W_2 dropout(GELU(W_1 x))``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(F.gelu(self.up(x))))  # (B, T, D)


class EncoderLayer(nn.Module):
    """Pre-LN self-attention layer: ``x + SA(LN x)``, then ``x + FFN(LN x)``. The mask decides what it is: padding
    only (encoder), or prefix + padding (decoder-only)."""

    def __init__(self, config: BlockConfig) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.dim)
        self.attn = SelfAttention(
            config.dim,
            config.heads,
            config.score,
            dropout=config.dropout,
            score_options=score_options(config.score, config.max_len),
        )
        self.ffn_norm = nn.LayerNorm(config.dim)
        self.ffn = FeedForward(config.dim, config.ffn_dim, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: Tensor, *, mask: Tensor | None = None, cache: KVCache | None = None, return_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """``x [B, T, D]`` -> ``([B, T, D], weights [B, (H,) T, Tk] or None)``; ``mask`` bool, True = may attend."""
        attended, weights = context_and_weights(
            self.attn(self.attn_norm(x), mask=mask, cache=cache, return_weights=return_weights)
        )
        x = x + self.dropout(attended)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, weights


class DecoderLayer(nn.Module):
    """Pre-LN decoder layer: causal self-attention, cross-attention over the encoder's :class:`Memory`, FFN."""

    def __init__(self, config: BlockConfig, cross_score: str = "scaled_dot") -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(config.dim)
        self.self_attn = SelfAttention(
            config.dim,
            config.heads,
            config.score,
            causal=True,
            dropout=config.dropout,
            score_options=score_options(config.score, config.max_len),
        )
        self.cross_norm = nn.LayerNorm(config.dim)
        self.cross_attn = CrossAttention(
            config.dim,
            config.dim,
            config.heads,
            cross_score,
            dropout=config.dropout,
            score_options=score_options(cross_score, config.max_len),
        )
        self.ffn_norm = nn.LayerNorm(config.dim)
        self.ffn = FeedForward(config.dim, config.ffn_dim, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        memory: Memory,
        *,
        memory_mask: Tensor | None = None,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``x [B, T, D]`` (the new positions) over ``memory`` (``cross_attn.precompute(encoder_states)``).

        Returns ``(x, self weights, cross weights)``; weights are None unless asked.
        """
        attended, self_weights = context_and_weights(
            self.self_attn(self.self_norm(x), cache=cache, return_weights=return_weights)
        )
        x = x + self.dropout(attended)
        crossed, cross_weights = context_and_weights(
            self.cross_attn(self.cross_norm(x), memory, mask=memory_mask, return_weights=return_weights)
        )
        x = x + self.dropout(crossed)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, self_weights, cross_weights


class SelfAttentionStack(nn.Module):
    """``layers`` :class:`EncoderLayer`s and a final LayerNorm; its sites are named ``{name}.{i}.self``."""

    def __init__(self, config: BlockConfig, layers: int, name: str) -> None:
        super().__init__()
        self.name = name
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(check_positive("layers", layers)))
        self.norm = nn.LayerNorm(config.dim)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        *,
        caches: list[KVCache] | None = None,
        return_weights: bool = False,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``x [B, T, D]`` (embedded) -> ``([B, T, D], {site: [B, H, T, Tk]})``."""
        weights = {}
        for i, layer in enumerate(self.layers):
            x, w = layer(x, mask=mask, cache=None if caches is None else caches[i], return_weights=return_weights)
            if w is not None:
                weights[f"{self.name}.{i}.self"] = as_head_weights(w)
        return self.norm(x), weights


# -- encoder-decoder ---------------------------------------------------------------------------------------------
@dataclass
class TransformerState:
    """Decoding state: cross-attention memories (one per decoder layer), self-attention caches, positions so far.

    The caches are updated in place by :meth:`Transformer.step`; use only the state a step returns.
    """

    memories: list[Memory]
    memory_mask: Tensor  # [B, 1, S]
    caches: list[KVCache]
    length: int = 0


class Transformer(nn.Module):
    """Encoder-decoder Transformer; ``forward(batch)`` returns logits ``[B, T, tgt_vocab]`` (teacher forcing)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig; received {type(config).__name__}")
        self.config = config
        self.src_embed = nn.Embedding(config.src_vocab, config.dim)
        self.tgt_embed = nn.Embedding(config.tgt_vocab, config.dim)
        self.positions = get_positions(config.positions, config.dim, config.max_len)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = SelfAttentionStack(config, config.encoder_layers, "encoder")
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(config, config.cross_score) for _ in range(config.decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(config.dim)
        self.out = nn.Linear(config.dim, config.tgt_vocab)

    def attention_sites(self) -> list[Site]:
        c = self.config
        sites = [
            Site(
                f"encoder.{i}.self",
                "self",
                f"encoder layer {i} (source)",
                f"encoder layer {i} (source)",
                c.heads,
                c.score,
                "padding",
            )
            for i in range(c.encoder_layers)
        ]
        for i in range(c.decoder_layers):
            sites.append(
                Site(
                    f"decoder.{i}.self",
                    "self",
                    f"decoder layer {i} (target prefix)",
                    f"decoder layer {i} (target prefix)",
                    c.heads,
                    c.score,
                    "causal",
                )
            )
            sites.append(
                Site(
                    f"decoder.{i}.cross",
                    "cross",
                    f"decoder layer {i} (target, after self-attention)",
                    "encoder output (source)",
                    c.heads,
                    c.cross_score,
                    "padding",
                )
            )
        return sites

    # -- teacher forcing ---------------------------------------------------------------------------------------
    def forward(self, batch: Seq2SeqInputs, *, return_weights: bool = False) -> Tensor | ModelOutput:
        src, src_lengths, tgt_in = seq2seq_inputs(batch)
        encoded = self.encode_source(src, src_lengths, return_weights=return_weights)
        memories = self._memories(encoded)
        positions = torch.arange(tgt_in.shape[1], device=tgt_in.device)
        x = self.dropout(_add_positions(self.tgt_embed(tgt_in), self.positions, positions))  # (B, T, D)
        x, weights = self._decode(x, memories, encoded.mask, None, return_weights)
        logits = self.out(x)  # (B, T, V)
        return ModelOutput(logits, {**encoded.weights, **weights}) if return_weights else logits

    def encode_source(self, src: Tensor, src_lengths: Tensor, *, return_weights: bool = False) -> Encoded:
        """The encoder: ``src [B, S]`` -> states ``[B, S, D]`` (after the final LayerNorm) and the padding mask."""
        mask = masks.padding(src_lengths, src.shape[1]).to(src.device)  # (B, 1, S)
        positions = torch.arange(src.shape[1], device=src.device)
        x = self.dropout(_add_positions(self.src_embed(src), self.positions, positions))  # (B, S, D)
        states, weights = self.encoder(x, mask, return_weights=return_weights)
        return Encoded(states, mask, None, weights)

    def _memories(self, encoded: Encoded) -> list[Memory]:
        # Keys/values of the encoder output, projected once per source for each decoder layer.
        return [layer.cross_attn.precompute(encoded.states, mask=encoded.mask) for layer in self.decoder_layers]

    def _decode(
        self,
        x: Tensor,
        memories: list[Memory],
        memory_mask: Tensor,
        caches: list[KVCache] | None,
        return_weights: bool,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        weights = {}
        for i, layer in enumerate(self.decoder_layers):
            cache = None if caches is None else caches[i]
            x, w_self, w_cross = layer(
                x, memories[i], memory_mask=memory_mask, cache=cache, return_weights=return_weights
            )
            if return_weights:
                weights[f"decoder.{i}.self"] = as_head_weights(w_self)
                weights[f"decoder.{i}.cross"] = as_head_weights(w_cross)
        return self.decoder_norm(x), weights

    # -- incremental decoding (attnlab.seq.decode protocol) --------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> TransformerState:
        check_tokens(src, src_lengths, "src")
        encoded = self.encode_source(src, src_lengths)
        caches = [KVCache() for _ in self.decoder_layers]
        return TransformerState(self._memories(encoded), encoded.mask, caches, 0)

    def step(self, state: TransformerState, tokens: Tensor) -> tuple[Tensor, TransformerState]:
        """Feed ``tokens [B]`` at position ``state.length``; return ``log_probs [B, V]`` and the state."""
        position = torch.full((1,), state.length, device=tokens.device)
        x = self.dropout(_add_positions(self.tgt_embed(tokens[:, None]), self.positions, position))  # (B, 1, D)
        x, _ = self._decode(x, state.memories, state.memory_mask, state.caches, False)
        log_probs = log_probs_of(self.out(x[:, -1]))  # (B, V)
        return log_probs, dataclasses.replace(state, length=state.length + 1)

    def reorder(self, state: TransformerState, index: Tensor) -> TransformerState:
        return reorder_batch(state, index)


# -- encoder only ------------------------------------------------------------------------------------------------
class TransformerClassifier(nn.Module):
    """BERT-style encoder with a classification head; ``forward(batch)`` returns logits ``[B, num_classes]``.

    ``batch`` has ``tokens [B, T]`` and ``lengths [B]``. With ``pooling="cls"`` a learned [CLS] vector is prepended
    (position 0, so weights are ``[B, H, T+1, T+1]``) and its final state is classified; with ``"mean"`` the mean
    of the final states over real tokens is.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        if not isinstance(config, EncoderConfig):
            raise TypeError(f"config must be an EncoderConfig; received {type(config).__name__}")
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.dim)
        self.positions = get_positions(config.positions, config.dim, config.max_len)
        self.cls = nn.Parameter(torch.randn(1, 1, config.dim)) if config.pooling == "cls" else None
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = SelfAttentionStack(config, config.layers, "encoder")
        self.head = nn.Linear(config.dim, config.num_classes)

    def attention_sites(self) -> list[Site]:
        c = self.config
        stream = f"encoder layer {{}} ({'[CLS] + ' if c.pooling == 'cls' else ''}tokens)"
        return [
            Site(f"encoder.{i}.self", "self", stream.format(i), stream.format(i), c.heads, c.score, "padding")
            for i in range(c.layers)
        ]

    def forward(self, batch: ClassifyInputs, *, return_weights: bool = False) -> Tensor | ModelOutput:
        tokens, lengths = getattr(batch, "tokens", None), getattr(batch, "lengths", None)
        check_tokens(tokens, lengths, "tokens")
        x = self.embed(tokens)  # (B, T, D)
        if self.cls is not None:
            x = torch.cat((self.cls.expand(x.shape[0], 1, -1), x), dim=1)  # (B, 1+T, D)
            lengths = lengths + 1
        mask = masks.padding(lengths, x.shape[1]).to(x.device)  # (B, 1, T')
        x = self.dropout(_add_positions(x, self.positions, torch.arange(x.shape[1], device=x.device)))
        states, weights = self.encoder(x, mask, return_weights=return_weights)  # (B, T', D)
        if self.cls is not None:
            pooled = states[:, 0]  # (B, D)
        else:
            real = mask[:, 0, :, None].to(states.dtype)  # (B, T, 1)
            pooled = (states * real).sum(1) / real.sum(1).clamp(min=1.0)  # (B, D); an empty item pools to 0
        logits = self.head(self.dropout(pooled))  # (B, C)
        return ModelOutput(logits, weights) if return_weights else logits


# -- decoder only ------------------------------------------------------------------------------------------------
@dataclass
class DecoderOnlyState:
    """Decoding state of the single stream: per-layer caches, which cached positions are real, next position id.

    The caches are updated in place by :meth:`DecoderOnlyTransformer.step`; use only the state a step returns.
    """

    caches: list[KVCache]
    valid: Tensor  # [B, L] bool: the cached positions that are not source padding
    next_position: Tensor  # [B] position id of the next token (padding is not counted)


class DecoderOnlyTransformer(nn.Module):
    """Self-attention only, over ``[source; SEP; BOS + target]``; ``forward(batch)`` returns target logits
    ``[B, T, tgt_vocab]`` aligned with ``tgt_in``/``tgt_out`` like the encoder-decoder's.

    Source and target tokens have their own embedding tables and SEP is a learned vector, so the two vocabularies
    need no common ids. The source is right-padded to ``S`` inside the stream: padding is masked out as keys and
    position ids skip it (``cumsum`` of the real positions), so padding changes no real output. The prefix mask
    covers source and SEP: they attend to each other in both directions; target positions attend to all of them
    and causally to the target.
    """

    def __init__(self, config: DecoderOnlyConfig) -> None:
        super().__init__()
        if not isinstance(config, DecoderOnlyConfig):
            raise TypeError(f"config must be a DecoderOnlyConfig; received {type(config).__name__}")
        self.config = config
        self.src_embed = nn.Embedding(config.src_vocab, config.dim)
        self.tgt_embed = nn.Embedding(config.tgt_vocab, config.dim)
        self.separator = nn.Parameter(torch.randn(config.dim))
        self.positions = get_positions(config.positions, config.dim, config.max_len)
        self.dropout = nn.Dropout(config.dropout)
        self.decoder = SelfAttentionStack(config, config.layers, "decoder")
        self.out = nn.Linear(config.dim, config.tgt_vocab)

    def attention_sites(self) -> list[Site]:
        c = self.config
        stream = "stream [source; SEP; target] at layer {}"
        return [
            Site(
                f"decoder.{i}.self",
                "self",
                stream.format(i),
                stream.format(i),
                c.heads,
                c.score,
                "prefix (source bidirectional, target causal) + source padding",
            )
            for i in range(c.layers)
        ]

    def _prefix(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Embedded ``[source; SEP]`` ``[B, S+1, D]`` (without positions) and its real positions ``[B, S+1]``."""
        batch = src.shape[0]
        x = torch.cat((self.src_embed(src), self.separator.expand(batch, 1, -1)), dim=1)  # (B, S+1, D)
        real = masks.padding(src_lengths, src.shape[1]).to(src.device)[:, 0]  # (B, S)
        valid = torch.cat((real, real.new_ones(batch, 1)), dim=1)  # (B, S+1)
        return x, valid

    def forward(self, batch: Seq2SeqInputs, *, return_weights: bool = False) -> Tensor | ModelOutput:
        src, src_lengths, tgt_in = seq2seq_inputs(batch)
        prefix, valid = self._prefix(src, src_lengths)
        x = torch.cat((prefix, self.tgt_embed(tgt_in)), dim=1)  # (B, L, D), L = S+1+T
        valid = torch.cat((valid, valid.new_ones(tgt_in.shape)), dim=1)  # (B, L)
        positions = valid.long().cumsum(1) - 1  # (B, L): ids of real positions, the padding gap skipped
        x = self.dropout(_add_positions(x, self.positions, positions))
        length, prefix_length = x.shape[1], prefix.shape[1]
        # source+SEP bidirectional, target causal; padded keys unreadable
        mask = masks.prefix(prefix_length, length).to(x.device) & valid[:, None, :]  # (B, L, L)
        states, weights = self.decoder(x, mask, return_weights=return_weights)
        logits = self.out(states[:, prefix_length:])  # (B, T, V)
        return ModelOutput(logits, weights) if return_weights else logits

    # -- incremental decoding (attnlab.seq.decode protocol) --------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> DecoderOnlyState:
        """Run ``[source; SEP]`` once, filling the caches (the prefix is bidirectional, so it is one block)."""
        check_tokens(src, src_lengths, "src")
        x, valid = self._prefix(src, src_lengths)
        positions = valid.long().cumsum(1) - 1  # (B, S+1)
        x = self.dropout(_add_positions(x, self.positions, positions))
        caches = [KVCache() for _ in self.decoder.layers]
        self.decoder(x, valid[:, None, :], caches=caches)
        return DecoderOnlyState(caches, valid, src_lengths.to(src.device) + 1)

    def step(self, state: DecoderOnlyState, tokens: Tensor) -> tuple[Tensor, DecoderOnlyState]:
        """Append ``tokens [B]`` to the stream; return ``log_probs [B, V]`` (float32 at least) and the state."""
        embedded = self.tgt_embed(tokens[:, None])  # (B, 1, D)
        x = self.dropout(_add_positions(embedded, self.positions, state.next_position[:, None]))
        valid = torch.cat((state.valid, state.valid.new_ones(tokens.shape[0], 1)), dim=1)  # (B, L+1)
        states, _ = self.decoder(x, valid[:, None, :], caches=state.caches)
        log_probs = log_probs_of(self.out(states[:, -1]))  # (B, V)
        return log_probs, DecoderOnlyState(state.caches, valid, state.next_position + 1)

    def reorder(self, state: DecoderOnlyState, index: Tensor) -> DecoderOnlyState:
        return reorder_batch(state, index)


def _add_positions(embedded: Tensor, positions: nn.Module, ids: Tensor) -> Tensor:
    """``embedded [B, T, D] + positions(ids)``, in the embeddings' dtype (sinusoids are computed in float32)."""
    return embedded + positions(ids).to(embedded.dtype)
