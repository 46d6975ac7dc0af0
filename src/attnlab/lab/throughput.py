"""Training throughput of sequence models across sequence lengths, batch sizes and thread counts (claim 11).

Whether self-attention trains faster than recurrence is not one number: a Transformer processes all positions of
a sequence at once, an RNN decoder one position after another, so the answer turns on how much parallel work a
step offers besides the positions (the batch) and how many cores there are to fill. :func:`throughput_map`
times one forward+backward pass (teacher forcing, the trainer's summed cross-entropy, no optimizer step) of each
model on the same reversal batches, cell by cell of a grid of lengths x batches x threads, and reports target
tokens per second. Lengths are exact (every sequence of a cell has length ``T``), so no padding is timed.

The timing is short by design (the tour's budget): one warm-up pass, then passes until ``min_steps`` and
``min_seconds`` are both reached, the fastest counting; a warm-up pass slower than ``min_seconds`` is itself the
measurement (one long pass is already stable, and a second would double the cell's cost). On a shared machine such
a timing moves by about 10%, which the claim treats as a tie.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from attnlab.data import collate_seq2seq
from attnlab.data.batching import Seq2SeqBatch
from attnlab.train.trainer import seq2seq_loss

__all__ = [
    "Cell",
    "batch_sizes",
    "reversal_batch",
    "throughput_map",
    "time_pass",
    "token_budget_kind",
    "usable_threads",
    "with_max_len",
]


@dataclass(frozen=True)
class Cell:
    """One cell of the map: ``length`` T, ``batch`` sequences (of the row ``batch_kind``: a fixed size, or
    ``"16k tokens"`` for as many as fit a token budget), ``threads`` torch threads, and each model's target tokens
    per second (forward + backward)."""

    length: int
    batch: int
    batch_kind: str
    threads: int
    tokens_per_s: dict[str, float]

    def ratio(self, numerator: str, denominator: str) -> float:
        return self.tokens_per_s[numerator] / self.tokens_per_s[denominator]


def batch_sizes(length: int, batches: Sequence[int], token_budget: int | None) -> list[tuple[int, str]]:
    """The batches of a length's cells, ``(size, kind)``: each fixed size, then as many sequences as fit
    ``token_budget`` target tokens (a budget size equal to a fixed one is not timed twice)."""
    sizes = [(b, str(b)) for b in batches]
    if token_budget is not None:
        fitted = max(1, token_budget // length)
        if fitted not in {b for b, _ in sizes}:
            sizes.append((fitted, token_budget_kind(token_budget)))
    return sizes


def token_budget_kind(token_budget: int) -> str:
    return f"{token_budget // 1024}k tokens" if token_budget >= 1024 else f"{token_budget} tokens"


def reversal_batch(symbols: Sequence[str], src_vocab: Any, tgt_vocab: Any, batch: int, length: int, seed: int):
    """``batch`` random sequences of exactly ``length`` symbols and their reversals, collated as in training."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(batch):
        source = [rng.choice(symbols) for _ in range(length)]
        pairs.append((source, source[::-1]))
    return collate_seq2seq(pairs, src_vocab, tgt_vocab)


def with_max_len(model: nn.Module, max_len: int) -> nn.Module:
    """The same architecture rebuilt for sequences up to ``max_len`` (its config's ``max_len`` bounds the position
    table; the parameter count of the reversal models does not depend on it)."""
    config = model.config
    if config.max_len >= max_len:
        return model
    return type(model)(replace(config, max_len=max_len))


def time_pass(model: nn.Module, batch: Seq2SeqBatch, *, min_steps: int = 2, min_seconds: float = 0.2) -> float:
    """Seconds of the fastest forward+backward pass of ``model`` on ``batch`` (see the module's docstring)."""
    model.train()

    def one() -> float:
        began = time.perf_counter()
        loss = seq2seq_loss(model, batch)
        (loss.total / loss.tokens).backward()
        elapsed = time.perf_counter() - began
        model.zero_grad(set_to_none=True)
        return elapsed

    warm = one()
    if warm >= min_seconds:
        return warm
    times, began = [], time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - began < min_seconds:
        times.append(one())
    return min(times)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def usable_threads(threads: Sequence[int]) -> list[int]:
    """The thread counts this machine has cores for (at least the first one)."""
    cores = os.cpu_count() or 1
    usable = [n for n in threads if n <= cores]
    return usable or [min(threads)]


def throughput_map(
    models: Mapping[str, nn.Module],
    task: Any,
    *,
    lengths: Sequence[int],
    batches: Sequence[int],
    token_budget: int | None,
    threads: Sequence[int],
    min_steps: int = 2,
    min_seconds: float = 0.2,
    seed: int = 0,
) -> list[Cell]:
    """Target tokens/s of each of ``models`` (seq2seq models over ``task``'s vocabularies) in every cell of
    ``lengths`` x batches (:func:`batch_sizes`) x ``threads`` (those the machine has cores for). The models of one
    cell are timed back to back on the same batch."""
    if not models:
        raise ValueError("models: expected at least one model to time")
    longest = max(lengths) + 2  # BOS/EOS around the target
    built = {label: with_max_len(model, longest) for label, model in models.items()}
    symbols = task.src_vocab.symbols
    cells = []
    for n in usable_threads(threads):
        with _threads(n):
            for length in lengths:
                for size, kind in batch_sizes(length, batches, token_budget):
                    batch = reversal_batch(symbols, task.src_vocab, task.tgt_vocab, size, length, seed)
                    tokens = int(batch.tgt_lengths.sum())
                    rates = {}
                    for name, model in built.items():
                        seconds = time_pass(model, batch, min_steps=min_steps, min_seconds=min_seconds)
                        rates[name] = tokens / seconds
                    cells.append(Cell(length, size, kind, n, rates))
    return cells
