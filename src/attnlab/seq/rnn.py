"""RNN encoder-decoders, without and with attention, as one model whose decoder style is a small strategy class.

- ``attention=None`` (Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder"; Sutskever et
  al. 2014): the decoder sees only the encoder's final state ``c``: ``s_0 = tanh(W c)``, every step reads
  ``[E y_{i-1}; c]`` and predicts from ``tanh(W_r [s_i; c; E y_{i-1}])``. A fixed-size ``c`` for any input length.
- ``"bahdanau"`` (Bahdanau, Cho & Bengio 2014, "Neural Machine Translation by Jointly Learning to Align and
  Translate", RNNsearch): the *previous* state queries the encoder, ``c_i = E_{p(j | s_{i-1})}[h_j]``, and the
  context enters the cell: ``s_i = f(s_{i-1}, [E y_{i-1}; c_i])``; prediction from ``tanh(W_r [s_i; c_i; E y_{i-1}])``
  (the paper's deep output with tanh for maxout, and ``s_i`` as in its eq. 4).
- ``"luong"`` (Luong, Pham & Manning 2015, "Effective Approaches to Attention-based NMT", global attention): the
  *current* state queries, ``c_t = E_{p(s | h_t)}[h_s]``, then ``h~_t = tanh(W_c [c_t; h_t])`` predicts, and
  ``h~_t`` is fed to the next step's input (input feeding). Luong's scores are dot, general, concat (= additive)
  and location.

Any registered score and any number of heads work in both attentive decoders (multi-head additive
cross-attention, claim 7); ``project=True`` adds query/key/value/output projections (claim 9), ``project=False``
reads the raw encoder states as in both papers. The attention is an :class:`attnlab.CrossAttention`; its keys and
values are projected and prepared once per source with ``precompute`` (a :class:`attnlab.Memory`), and each
decoder step is one call on that memory.

The encoder is a bidirectional GRU/LSTM (packed, so padding changes nothing) or an LSTMN
(:mod:`attnlab.seq.lstmn`, shallow fusion). Status: complete. Decoding is step by step in Python (teacher forcing
included, since Bahdanau's and Luong's decoders need step ``i``'s output before step ``i+1``).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .. import masks
from ..attention import CrossAttention, Memory, context_and_weights
from .base import (
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
from .lstmn import LSTMNEncoder

__all__ = [
    "BahdanauDecoder",
    "LuongDecoder",
    "PlainDecoder",
    "RNNConfig",
    "RNNDecoder",
    "RNNEncoder",
    "RNNSeq2Seq",
    "RNNState",
    "StackedCell",
]

CELLS = ("gru", "lstm")
ENCODERS = ("rnn", "lstmn")
ATTENTIONS = (None, "bahdanau", "luong")


@dataclass(frozen=True, kw_only=True)
class RNNConfig:
    """An RNN encoder-decoder. ``attention``: None, ``"bahdanau"`` or ``"luong"``; ``score``/``heads``/``project``
    configure that attention; ``encoder="lstmn"`` swaps the encoder for an LSTMN (which is LSTM-based whatever
    ``cell`` says; ``cell`` then applies to the decoder). ``max_len`` bounds the source for the location score."""

    src_vocab: int
    tgt_vocab: int
    embed_dim: int = 64
    hidden: int = 128
    layers: int = 1
    cell: str = "lstm"
    encoder: str = "rnn"
    bidirectional: bool = True
    attention: str | None = "bahdanau"
    score: str = "additive"
    heads: int = 1
    project: bool = False
    dropout: float = 0.1
    max_len: int = 256
    pad_id: int = 0

    def __post_init__(self) -> None:
        for name in ("src_vocab", "tgt_vocab", "embed_dim", "hidden", "layers", "heads", "max_len"):
            check_positive(name, getattr(self, name))
        check_choice("cell", self.cell, CELLS)
        check_choice("encoder", self.encoder, ENCODERS)
        check_choice("attention", self.attention, ATTENTIONS)
        check_score("score", self.score)
        check_dropout(self.dropout)
        for name in ("bidirectional", "project"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool; received {getattr(self, name)!r}")
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) or self.pad_id < 0:
            raise ValueError(f"pad_id must be an int >= 0; received {self.pad_id!r}")

    @classmethod
    def rnnsearch(cls, src_vocab: int, tgt_vocab: int) -> RNNConfig:
        """Bahdanau et al. 2014's RNNsearch sizes: GRU, 620-d embeddings, 1000 hidden units, additive attention."""
        return cls(
            src_vocab=src_vocab,
            tgt_vocab=tgt_vocab,
            embed_dim=620,
            hidden=1000,
            cell="gru",
            attention="bahdanau",
            score="additive",
        )


# -- encoder -----------------------------------------------------------------------------------------------------
class RNNEncoder(nn.Module):
    """Embedding and a (bidirectional) GRU/LSTM over packed sequences: padding never enters the recurrence.

    ``final`` joins the last layer's last states: forward after the last real token, backward after the first.
    """

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = config
        self.directions = 2 if config.bidirectional else 1
        self.embed = nn.Embedding(config.src_vocab, config.embed_dim, padding_idx=config.pad_id)
        self.dropout = nn.Dropout(config.dropout)
        rnn = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = rnn(
            config.embed_dim,
            config.hidden,
            config.layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.output_dim = self.final_dim = config.hidden * self.directions

    def sites(self) -> list[Site]:
        return []

    def forward(self, src: Tensor, src_lengths: Tensor, *, return_weights: bool = False) -> Encoded:
        check_tokens(src, src_lengths, "src", min_length=1)
        batch, length = src.shape
        x = self.dropout(self.embed(src))  # (B, S, E)
        packed = pack_padded_sequence(x, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, last = self.rnn(packed)
        states, _ = pad_packed_sequence(output, batch_first=True, total_length=length)  # (B, S, dirs*H)
        last = last[0] if isinstance(last, tuple) else last  # LSTM: (h_n, c_n) -> h_n (layers*dirs, B, H)
        top = last.view(self.config.layers, self.directions, batch, self.config.hidden)[-1]  # (dirs, B, H)
        final = top.transpose(0, 1).reshape(batch, self.final_dim)  # (B, dirs*H)
        mask = masks.padding(src_lengths, length).to(src.device)  # (B, 1, S)
        return Encoded(self.dropout(states), mask, final)


# -- decoders ----------------------------------------------------------------------------------------------------
class StackedCell(nn.Module):
    """``layers`` GRU/LSTM cells, one step: dropout between layers; states ``[B, layers, hidden]``."""

    def __init__(self, cell: str, input_dim: int, hidden: int, layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        check_choice("cell", cell, CELLS)
        self.is_lstm = cell == "lstm"
        kind = nn.LSTMCell if self.is_lstm else nn.GRUCell
        self.cells = nn.ModuleList(kind(input_dim if i == 0 else hidden, hidden) for i in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, hidden: Tensor, cell: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``x [B, In]``, ``hidden``/``cell [B, L, H]`` -> the next ``hidden``, ``cell``."""
        hiddens, cells = [], []
        for i, layer in enumerate(self.cells):
            if i:
                x = self.dropout(x)
            if self.is_lstm:
                h, c = layer(x, (hidden[:, i], cell[:, i]))
                cells.append(c)
            else:
                h = layer(x, hidden[:, i])
            hiddens.append(h)
            x = h
        return torch.stack(hiddens, dim=1), torch.stack(cells, dim=1) if self.is_lstm else None  # (B, L, H)


@dataclass(frozen=True)
class RNNState:
    """A recurrent decoder's state between steps (every tensor batch-first, so beam search reorders axis 0)."""

    hidden: Tensor  # [B, L, H]
    cell: Tensor | None  # [B, L, H] (LSTM) or None (GRU)
    feed: Tensor | None = None  # [B, F]: Cho's fixed context c, or Luong's h~_(t-1) (input feeding)
    memory: Memory | None = None  # the encoder's keys/values, prepared once per source
    memory_mask: Tensor | None = None  # [B, 1, S]


class RNNDecoder(nn.Module, abc.ABC):
    """What the decoder styles share: target embedding, initial state ``tanh(W final)``, stacked cell, output layer.

    A style implements ``step`` (and ``start`` if it carries more state) and builds ``self.cell`` with its input
    size. ``step`` returns logits ``[B, V]``, the next state and, if asked, weights ``[B, H, S]``.
    """

    style: ClassVar[str | None]

    def __init__(self, config: RNNConfig, final_dim: int) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.tgt_vocab, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.bridge = nn.Linear(final_dim, config.layers * config.hidden)  # s_0 = tanh(W final)
        self.out = nn.Linear(config.hidden, config.tgt_vocab)

    def _make_cell(self, input_dim: int) -> StackedCell:
        c = self.config
        return StackedCell(c.cell, input_dim, c.hidden, c.layers, c.dropout)

    def _cross_attention(self, source_dim: int) -> CrossAttention:
        c = self.config
        return CrossAttention(
            c.hidden, source_dim, c.heads, c.score, project=c.project, score_options=score_options(c.score, c.max_len)
        )

    def start(self, encoded: Encoded) -> RNNState:
        batch = encoded.final.shape[0]
        hidden = torch.tanh(self.bridge(encoded.final)).view(batch, self.config.layers, self.config.hidden)
        cell = torch.zeros_like(hidden) if self.config.cell == "lstm" else None
        return RNNState(hidden, cell)

    @abc.abstractmethod
    def step(
        self, tokens: Tensor, state: RNNState, *, return_weights: bool = False
    ) -> tuple[Tensor, RNNState, Tensor | None]:
        """``tokens [B]`` (the previous output) -> ``(logits [B, V], state, weights [B, H, S] or None)``."""

    def sites(self, keys_from: str) -> list[Site]:
        return []


class PlainDecoder(RNNDecoder):
    """No attention (Cho et al. 2014): the final encoder state ``c`` is the whole source, at every step."""

    style = None

    def __init__(self, config: RNNConfig, source_dim: int, final_dim: int) -> None:
        super().__init__(config, final_dim)
        self.cell = self._make_cell(config.embed_dim + final_dim)
        self.readout = nn.Linear(config.hidden + final_dim + config.embed_dim, config.hidden)

    def start(self, encoded: Encoded) -> RNNState:
        return dataclasses.replace(super().start(encoded), feed=encoded.final)

    def step(
        self, tokens: Tensor, state: RNNState, *, return_weights: bool = False
    ) -> tuple[Tensor, RNNState, Tensor | None]:
        embedded = self.dropout(self.embed(tokens))  # (B, E)
        hidden, cell = self.cell(torch.cat((embedded, state.feed), dim=-1), state.hidden, state.cell)
        readout = torch.tanh(self.readout(torch.cat((hidden[:, -1], state.feed, embedded), dim=-1)))  # (B, H)
        logits = self.out(self.dropout(readout))  # (B, V)
        return logits, dataclasses.replace(state, hidden=hidden, cell=cell), None


class BahdanauDecoder(RNNDecoder):
    """RNNsearch: attention from the previous state ``s_{i-1}``; the context enters the cell."""

    style = "bahdanau"

    def __init__(self, config: RNNConfig, source_dim: int, final_dim: int) -> None:
        super().__init__(config, final_dim)
        self.attention = self._cross_attention(source_dim)
        context_dim = self.attention.out_dim
        self.cell = self._make_cell(config.embed_dim + context_dim)
        self.readout = nn.Linear(config.hidden + context_dim + config.embed_dim, config.hidden)

    def start(self, encoded: Encoded) -> RNNState:
        memory = self.attention.precompute(encoded.states, mask=encoded.mask)  # keys projected once per source
        return dataclasses.replace(super().start(encoded), memory=memory, memory_mask=encoded.mask)

    def step(
        self, tokens: Tensor, state: RNNState, *, return_weights: bool = False
    ) -> tuple[Tensor, RNNState, Tensor | None]:
        embedded = self.dropout(self.embed(tokens))  # (B, E)
        query = state.hidden[:, -1:]  # s_{i-1}, top layer: (B, 1, H)
        attended = self.attention(query, state.memory, mask=state.memory_mask, return_weights=return_weights)
        context, attention_weights = context_and_weights(attended)
        context = context[:, 0]  # (B, Dc)
        hidden, cell = self.cell(torch.cat((embedded, context), dim=-1), state.hidden, state.cell)
        readout = torch.tanh(self.readout(torch.cat((hidden[:, -1], context, embedded), dim=-1)))  # (B, H)
        logits = self.out(self.dropout(readout))  # (B, V)
        weights = as_head_weights(attention_weights)[:, :, 0] if return_weights else None  # (B, H, S)
        return logits, dataclasses.replace(state, hidden=hidden, cell=cell), weights

    def sites(self, keys_from: str) -> list[Site]:
        c = self.config
        return [Site("decoder.cross", "cross", "decoder state s_(i-1), before the step", keys_from, c.heads, c.score)]


class LuongDecoder(RNNDecoder):
    """Luong global attention: attention from the current state ``h_t``, ``h~_t = tanh(W_c [c_t; h_t])`` predicts
    and is fed to the next step (input feeding)."""

    style = "luong"

    def __init__(self, config: RNNConfig, source_dim: int, final_dim: int) -> None:
        super().__init__(config, final_dim)
        self.attention = self._cross_attention(source_dim)
        self.cell = self._make_cell(config.embed_dim + config.hidden)  # [E y_(t-1); h~_(t-1)]
        self.combine = nn.Linear(self.attention.out_dim + config.hidden, config.hidden, bias=False)  # W_c

    def start(self, encoded: Encoded) -> RNNState:
        memory = self.attention.precompute(encoded.states, mask=encoded.mask)  # keys projected once per source
        state = super().start(encoded)
        feed = state.hidden.new_zeros(state.hidden.shape[0], self.config.hidden)  # h~_0 = 0
        return dataclasses.replace(state, feed=feed, memory=memory, memory_mask=encoded.mask)

    def step(
        self, tokens: Tensor, state: RNNState, *, return_weights: bool = False
    ) -> tuple[Tensor, RNNState, Tensor | None]:
        embedded = self.dropout(self.embed(tokens))  # (B, E)
        hidden, cell = self.cell(torch.cat((embedded, state.feed), dim=-1), state.hidden, state.cell)
        top = hidden[:, -1]  # h_t: (B, H)
        attended = self.attention(top[:, None], state.memory, mask=state.memory_mask, return_weights=return_weights)
        context, attention_weights = context_and_weights(attended)
        attentional = torch.tanh(self.combine(torch.cat((context[:, 0], top), dim=-1)))  # h~_t: (B, H)
        logits = self.out(self.dropout(attentional))  # (B, V)
        weights = as_head_weights(attention_weights)[:, :, 0] if return_weights else None  # (B, H, S)
        return logits, dataclasses.replace(state, hidden=hidden, cell=cell, feed=attentional), weights

    def sites(self, keys_from: str) -> list[Site]:
        c = self.config
        return [Site("decoder.cross", "cross", "decoder state h_t, after the step", keys_from, c.heads, c.score)]


DECODERS: dict[str | None, type[RNNDecoder]] = {cls.style: cls for cls in (PlainDecoder, BahdanauDecoder, LuongDecoder)}


# -- the model ---------------------------------------------------------------------------------------------------
class RNNSeq2Seq(nn.Module):
    """RNN encoder-decoder; ``forward(batch)`` returns logits ``[B, T, tgt_vocab]`` (teacher forcing on ``tgt_in``).

    With attention, ``forward(batch, return_weights=True)`` gives the weights of every decoder step as
    ``"decoder.cross": [B, H, T, S]`` (and an LSTMN encoder's as ``"encoder.{layer}.{direction}"``).
    """

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        if not isinstance(config, RNNConfig):
            raise TypeError(f"config must be an RNNConfig; received {type(config).__name__}")
        self.config = config
        if config.encoder == "lstmn":
            self.encoder = LSTMNEncoder(
                config.src_vocab,
                config.embed_dim,
                config.hidden,
                config.layers,
                bidirectional=config.bidirectional,
                dropout=config.dropout,
                max_len=config.max_len,
                pad_id=config.pad_id,
            )
        else:
            self.encoder = RNNEncoder(config)
        self.decoder = DECODERS[config.attention](config, self.encoder.output_dim, self.encoder.final_dim)

    def attention_sites(self) -> list[Site]:
        c = self.config
        kind = "LSTMN" if c.encoder == "lstmn" else c.cell.upper()
        keys_from = f"encoder states ({'bidirectional ' if c.bidirectional else ''}{kind})"
        return self.encoder.sites() + self.decoder.sites(keys_from)

    def forward(self, batch: Seq2SeqInputs, *, return_weights: bool = False) -> Tensor | ModelOutput:
        src, src_lengths, tgt_in = seq2seq_inputs(batch)
        encoded = self.encoder(src, src_lengths, return_weights=return_weights)
        state = self.decoder.start(encoded)
        logits, weights = [], []
        for t in range(tgt_in.shape[1]):
            step_logits, state, step_weights = self.decoder.step(tgt_in[:, t], state, return_weights=return_weights)
            logits.append(step_logits)
            weights.append(step_weights)
        logits = torch.stack(logits, dim=1)  # (B, T, V)
        if not return_weights:
            return logits
        all_weights = dict(encoded.weights)
        if self.decoder.style is not None:
            all_weights["decoder.cross"] = torch.stack(weights, dim=2)  # T x (B, H, S) -> (B, H, T, S)
        return ModelOutput(logits, all_weights)

    # -- decoding (attnlab.seq.decode protocol) --------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> RNNState:
        """Encode and precompute the attention memory once; the state then feeds :meth:`step`."""
        return self.decoder.start(self.encoder(src, src_lengths))

    def step(self, state: RNNState, tokens: Tensor) -> tuple[Tensor, RNNState]:
        """``tokens [B]`` -> ``log_probs [B, V]`` (float32 at least) for the next token, and the state."""
        logits, state, _ = self.decoder.step(tokens, state)
        return log_probs_of(logits), state

    def reorder(self, state: RNNState, index: Tensor) -> RNNState:
        return reorder_batch(state, index)
