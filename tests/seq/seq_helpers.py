"""Tiny configs of every sequence model and batches to feed them (shared by the tests in tests/seq)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from attnlab.seq import (
    DecoderOnlyConfig,
    DecoderOnlyTransformer,
    EncoderConfig,
    RNNConfig,
    RNNSeq2Seq,
    Transformer,
    TransformerClassifier,
    TransformerConfig,
)

SRC_VOCAB, TGT_VOCAB = 13, 11
BOS, EOS, PAD = 1, 2, 0
SCORES = ["dot", "scaled_dot", "general", "additive", "cosine", "location"]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run with one intra-op thread: these models are tiny, and on a shared 2-core machine two threads spin-wait
    on each other (measured: 0.44 s vs 0.03 s per training step of the overfit RNN under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Batch:
    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor


@dataclass(frozen=True)
class Tokens:
    tokens: torch.Tensor
    lengths: torch.Tensor


def make_batch(src_lengths=(5, 3, 1), tgt_len=4, seed=0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(src_lengths)
    src = torch.randint(5, SRC_VOCAB, (len(src_lengths), max(src_lengths)), generator=generator)
    src = src.masked_fill(torch.arange(src.shape[1])[None, :] >= lengths[:, None], PAD)
    tgt_in = torch.randint(5, TGT_VOCAB, (len(src_lengths), tgt_len), generator=generator)
    tgt_in[:, 0] = BOS
    return Batch(src, lengths, tgt_in)


def pad_batch(batch: Batch, extra_src: int, extra_tgt: int) -> Batch:
    """The same batch with padding appended to source and target."""
    src = torch.nn.functional.pad(batch.src, (0, extra_src), value=PAD)
    tgt = torch.nn.functional.pad(batch.tgt_in, (0, extra_tgt), value=PAD)
    return Batch(src, batch.src_lengths, tgt)


def rnn(attention="bahdanau", score="additive", **kw) -> RNNSeq2Seq:
    options = dict(
        src_vocab=SRC_VOCAB,
        tgt_vocab=TGT_VOCAB,
        embed_dim=8,
        hidden=12,
        attention=attention,
        score=score,
        max_len=32,
        dropout=0.0,
    )
    options.update(kw)
    return RNNSeq2Seq(RNNConfig(**options))


def transformer(score="scaled_dot", **kw) -> Transformer:
    options = dict(
        src_vocab=SRC_VOCAB,
        tgt_vocab=TGT_VOCAB,
        dim=12,
        heads=2,
        ffn_dim=16,
        encoder_layers=2,
        decoder_layers=2,
        score=score,
        max_len=32,
        dropout=0.0,
    )
    options.update(kw)
    return Transformer(TransformerConfig(**options))


def decoder_only(score="scaled_dot", **kw) -> DecoderOnlyTransformer:
    options = dict(
        src_vocab=SRC_VOCAB,
        tgt_vocab=TGT_VOCAB,
        dim=12,
        heads=2,
        ffn_dim=16,
        layers=2,
        score=score,
        max_len=32,
        dropout=0.0,
    )
    options.update(kw)
    return DecoderOnlyTransformer(DecoderOnlyConfig(**options))


def classifier(pooling="cls", **kw) -> TransformerClassifier:
    options = dict(
        vocab=SRC_VOCAB, num_classes=4, dim=12, heads=2, ffn_dim=16, layers=2, pooling=pooling, max_len=32, dropout=0.0
    )
    options.update(kw)
    return TransformerClassifier(EncoderConfig(**options))


def seq2seq_models():
    """(id, builder) for one model of each seq2seq family and decoder style."""
    return [
        ("rnn-none-gru", lambda: rnn(None, cell="gru")),
        ("rnn-bahdanau-lstm", lambda: rnn("bahdanau")),
        ("rnn-luong-general-gru-2layers", lambda: rnn("luong", "general", cell="gru", layers=2)),
        ("rnn-bahdanau-multihead-projected", lambda: rnn("bahdanau", "additive", heads=3, project=True)),
        ("rnn-luong-lstmn", lambda: rnn("luong", "general", encoder="lstmn")),
        ("transformer", lambda: transformer()),
        ("transformer-learned-additive", lambda: transformer("additive", positions="learned")),
        ("decoder-only", lambda: decoder_only()),
    ]
