"""Tiny overfit: an attentive RNN and a Transformer learn 20 copy examples to exact match (greedy decoding)."""

from __future__ import annotations

import pytest
import torch
from seq_helpers import one_thread

from attnlab.data import as_symbols, collate_seq2seq, make_sequence_task, task_vocab
from attnlab.seq import RNNConfig, RNNSeq2Seq, Transformer, TransformerConfig, greedy, token_cross_entropy


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


VOCAB = task_vocab(8)


def _copy_batch():
    pairs = as_symbols(make_sequence_task("copy", 20, 3, 6, vocab_size=8, seed=0))
    return collate_seq2seq(pairs, VOCAB, VOCAB)


def _exact_match(model, batch) -> float:
    model.eval()
    out = greedy(
        model, batch.src, batch.src_lengths, bos_id=VOCAB.bos_id, eos_id=VOCAB.eos_id, max_len=batch.tgt_out.shape[1]
    )
    model.train()
    width = batch.tgt_out.shape[1]
    tokens = torch.nn.functional.pad(out.tokens, (0, width - out.tokens.shape[1]), value=VOCAB.pad_id)
    return (tokens == batch.tgt_out).all(dim=1).float().mean().item()


@pytest.mark.parametrize(
    ("name", "build", "lr"),
    [
        (
            "rnn-bahdanau",
            lambda: RNNSeq2Seq(
                RNNConfig(
                    src_vocab=len(VOCAB),
                    tgt_vocab=len(VOCAB),
                    embed_dim=16,
                    hidden=32,
                    cell="gru",
                    attention="bahdanau",
                    dropout=0.0,
                )
            ),
            1e-2,
        ),
        (
            "transformer",
            lambda: Transformer(
                TransformerConfig(
                    src_vocab=len(VOCAB),
                    tgt_vocab=len(VOCAB),
                    dim=32,
                    heads=2,
                    ffn_dim=64,
                    encoder_layers=1,
                    decoder_layers=1,
                    dropout=0.0,
                )
            ),
            3e-3,
        ),
    ],
    ids=["rnn-bahdanau", "transformer"],
)
def test_overfits_twenty_copy_examples(name, build, lr):
    torch.manual_seed(0)
    model = build()
    batch = _copy_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    accuracy = 0.0
    for step in range(1, 401):
        loss = token_cross_entropy(model(batch), batch.tgt_out, pad_id=VOCAB.pad_id).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            accuracy = _exact_match(model, batch)
            if accuracy == 1.0:
                break
    assert accuracy == 1.0, f"{name}: exact match {accuracy:.2f} after {step} steps (loss {loss.item():.4f})"
