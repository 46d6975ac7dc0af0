"""Greedy and beam-search decoding for every sequence-to-sequence model, through one small protocol.

A model is :class:`Decodable` when it has

    encode(src [B, S], src_lengths [B]) -> state            once per source (keys/values precomputed here)
    step(state, tokens [B]) -> (log_probs [B, V], state)     one token per row; may update caches in place
    reorder(state, index [B']) -> state                       keep batch rows ``index`` (beam search)

:class:`~attnlab.seq.rnn.RNNSeq2Seq`, :class:`~attnlab.seq.transformer.Transformer` and
:class:`~attnlab.seq.transformer.DecoderOnlyTransformer` implement it. The first token fed is ``bos_id``.

Beam search keeps ``beam_size`` hypotheses per source (the batch runs as ``B * beam_size`` rows). A hypothesis
that has produced EOS stays in its beam and continues with ``pad_id`` at no cost, so finished and unfinished
hypotheses compete on one scale: ``log p(y) / len(y) ** length_penalty`` (``len`` counts EOS;
``length_penalty=0`` is the raw log-probability, 1 the per-token average). With ``beam_size=1`` this is greedy
decoding exactly. Decoding stops when every hypothesis has finished or after ``max_len`` tokens.

Both functions run under ``torch.no_grad()`` and leave the model's mode alone: call ``model.eval()`` first
(dropout would otherwise stay active).

Status: complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .base import check_tokens

__all__ = ["Decodable", "Decoded", "beam_search", "greedy"]


@runtime_checkable
class Decodable(Protocol):
    def encode(self, src: Tensor, src_lengths: Tensor) -> Any: ...

    def step(self, state: Any, tokens: Tensor) -> tuple[Tensor, Any]: ...

    def reorder(self, state: Any, index: Tensor) -> Any: ...


@dataclass(frozen=True)
class Decoded:
    """Decoded outputs, one per source: ids after BOS, through EOS, then ``pad_id``."""

    tokens: Tensor  # [B, T] long
    lengths: Tensor  # [B] tokens produced, EOS included
    log_probs: Tensor  # [B] log-probability of those tokens (float32)
    finished: Tensor  # [B] bool: EOS was produced within max_len


def _check(model: Any, src: Tensor, src_lengths: Tensor, max_len: int | None, **ids: int) -> int:
    if not isinstance(model, Decodable):
        raise TypeError(
            f"model must have encode, step and reorder (see attnlab.seq.decode); received {type(model).__name__}"
        )
    check_tokens(src, src_lengths, "src")
    for name, value in ids.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0; received {value!r}")
    if max_len is None:
        return 2 * (int(src_lengths.max()) if src_lengths.numel() else 0) + 10
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int or None; received {max_len!r}")
    return max_len


@torch.no_grad()
def greedy(
    model: Decodable,
    src: Tensor,
    src_lengths: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    max_len: int | None = None,
) -> Decoded:
    """The most probable next token at every step. ``max_len`` defaults to ``2 * longest source + 10``."""
    max_len = _check(model, src, src_lengths, max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    batch = src.shape[0]
    state = model.encode(src, src_lengths)
    tokens = torch.full((batch,), bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    lengths = torch.zeros(batch, dtype=torch.long, device=src.device)
    total = torch.zeros(batch, dtype=torch.float32, device=src.device)
    outputs = []
    for _ in range(max_len):
        log_probs, state = model.step(state, tokens)  # (B, V)
        best = log_probs.argmax(-1)  # (B,)
        chosen = log_probs.gather(1, best[:, None])[:, 0].float()
        tokens = best.masked_fill(finished, pad_id)
        total += chosen.masked_fill(finished, 0.0)
        lengths += (~finished).long()
        outputs.append(tokens)
        finished = finished | (tokens == eos_id)
        if bool(finished.all()):
            break
    out = torch.stack(outputs, dim=1) if outputs else src.new_zeros(batch, 0)  # (B, T)
    return Decoded(out, lengths, total, finished)


@torch.no_grad()
def beam_search(
    model: Decodable,
    src: Tensor,
    src_lengths: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    beam_size: int = 4,
    max_len: int | None = None,
    length_penalty: float = 1.0,
) -> Decoded:
    """The best of ``beam_size`` hypotheses per source under ``log p / len ** length_penalty``."""
    max_len = _check(model, src, src_lengths, max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int; received {beam_size!r}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0; received {length_penalty}")
    batch, k, device = src.shape[0], beam_size, src.device
    rows = torch.arange(batch, device=device)
    state = model.encode(src, src_lengths)
    state = model.reorder(state, rows.repeat_interleave(k))  # B -> B*K rows: (b, beam) at b*K + beam
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # every beam starts as the same empty hypothesis: keep one
    lengths = torch.zeros(batch, k, dtype=torch.long, device=device)
    finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
    history = torch.zeros(batch, k, 0, dtype=torch.long, device=device)
    tokens = torch.full((batch * k,), bos_id, dtype=torch.long, device=device)
    for _ in range(max_len):
        log_probs, state = model.step(state, tokens)  # (B*K, V)
        vocab = log_probs.shape[-1]
        log_probs = log_probs.float().view(batch, k, vocab)
        # a finished hypothesis continues with PAD at no cost, nothing else
        done = torch.full((vocab,), float("-inf"), device=device)
        done[pad_id] = 0.0
        log_probs = torch.where(finished[..., None], done, log_probs)
        candidates = scores[..., None] + log_probs  # (B, K, V)
        new_lengths = lengths + (~finished).long()  # (B, K)
        ranked = candidates / new_lengths[..., None].float().pow(length_penalty)  # (B, K, V)
        _, flat = ranked.view(batch, k * vocab).topk(k, dim=-1)  # (B, K)
        beam, token = flat // vocab, flat % vocab  # which hypothesis each survivor extends, with which token
        scores = candidates.view(batch, k * vocab).gather(1, flat)
        lengths = new_lengths.gather(1, beam)
        finished = finished.gather(1, beam) | (token == eos_id)
        history = torch.cat((history.gather(1, beam[..., None].expand_as(history)), token[..., None]), dim=-1)
        state = model.reorder(state, (rows[:, None] * k + beam).view(-1))
        tokens = token.view(-1)
        if bool(finished.all()):
            break
    best = (scores / lengths.clamp(min=1).float().pow(length_penalty)).argmax(-1)  # (B,)
    pick = best[:, None]
    return Decoded(
        history[rows, best],  # (B, T)
        lengths.gather(1, pick)[:, 0],
        scores.gather(1, pick)[:, 0],
        finished.gather(1, pick)[:, 0],
    )
