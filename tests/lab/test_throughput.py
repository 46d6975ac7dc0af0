"""The throughput map behind claim 11: its grid, its timing of equal batches, and where the Transformer overtakes."""

from __future__ import annotations

import pytest
import torch

from attnlab.experiments import get_experiment
from attnlab.lab.claims.sequences import FASTER, _overtakes
from attnlab.lab.throughput import Cell, batch_sizes, reversal_batch, throughput_map, usable_threads, with_max_len


def test_batches_are_fixed_sizes_then_a_token_budget():
    assert batch_sizes(16, (1, 8), 16384) == [(1, "1"), (8, "8"), (1024, "16k tokens")]
    assert batch_sizes(1024, (1, 8), 16384) == [(1, "1"), (8, "8"), (16, "16k tokens")]
    assert batch_sizes(2048, (1, 8), 16384) == [(1, "1"), (8, "8")]  # the budget's 8 sequences: timed once
    assert batch_sizes(32, (1,), None) == [(1, "1")]
    assert usable_threads((1, 2, 10_000)) == [n for n in (1, 2) if n <= (__import__("os").cpu_count() or 1)]


def test_a_reversal_batch_has_exact_lengths_and_reversed_targets():
    task = get_experiment("reverse-rnn").make_task(**get_experiment("reverse-rnn").budget("smoke").data)
    batch = reversal_batch(task.src_vocab.symbols, task.src_vocab, task.tgt_vocab, 3, 7, seed=0)
    assert batch.src.shape == (3, 7) and batch.tgt_in.shape == (3, 8)
    assert torch.equal(batch.tgt_out[:, :7], batch.src.flip(1))  # one vocabulary for both sides
    again = reversal_batch(task.src_vocab.symbols, task.src_vocab, task.tgt_vocab, 3, 7, seed=0)
    assert torch.equal(again.src, batch.src)


def test_the_map_times_both_models_in_every_cell():
    names = {"RNN + attention": "reverse-bahdanau", "Transformer": "reverse-transformer"}
    task = get_experiment("reverse-rnn").make_task(**get_experiment("reverse-rnn").budget("smoke").data)
    models = {label: get_experiment(name).make_model(task, **get_experiment(name).budget("smoke").model)
              for label, name in names.items()}  # fmt: skip
    cells = throughput_map(
        models, task, lengths=(4, 300), batches=(2,), token_budget=64, threads=(1,), min_steps=1, min_seconds=0.0
    )
    assert [(c.length, c.batch, c.batch_kind, c.threads) for c in cells] == [
        (4, 2, "2", 1),
        (4, 16, "64 tokens", 1),
        (300, 2, "2", 1),
        (300, 1, "64 tokens", 1),
    ]
    assert all(set(c.tokens_per_s) == set(names) and min(c.tokens_per_s.values()) > 0 for c in cells)
    assert with_max_len(models["Transformer"], 10) is models["Transformer"]  # long enough already
    longer = with_max_len(models["Transformer"], 1000)
    assert longer.config.max_len == 1000
    assert sum(p.numel() for p in longer.parameters()) == sum(p.numel() for p in models["Transformer"].parameters())


@pytest.mark.parametrize(
    ("ratios", "where"),
    [
        ({16: 2.0, 128: 3.0, 1024: 1.5}, "at every length"),
        ({16: 0.5, 128: 1.5, 1024: 2.0}, "from T = 128"),
        ({16: 2.0, 128: 1.5, 1024: 0.8}, "not at T = 1024"),  # faster at short lengths only: not "from" anywhere
        ({16: 0.5, 128: 1.0, 1024: FASTER}, "from T = 1024"),
    ],
)
def test_where_self_attention_overtakes(ratios, where):
    cells = [Cell(t, 1, "1", 1, {"Transformer": r * 100.0, "RNN + attention": 100.0}) for t, r in ratios.items()]
    assert _overtakes(cells) == {(1, "1"): where}
