"""Batching: length-bucketed, resumable batch order; padding; seq2seq collation; data-parallel sharding.

The batch order of an epoch is a pure function of ``(seed, epoch)``, so a run resumed at epoch ``e`` (or at
batch ``k`` of it, by skipping ``k`` batches) sees exactly the batches it would have seen without the stop.
Bucketing sorts by length only inside shuffled pools of ``POOL_BATCHES`` batches: batches hold sequences of
similar length (little padding) while which sequences meet still changes from epoch to epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from attnlab.data.vocab import Vocab, check_int

POOL_BATCHES = 50


def bucket_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> list[list[int]]:
    """Batches of indices into ``lengths``; every index appears exactly once.

    With ``shuffle``: permute the indices (RNG seeded by ``(seed, epoch)``), cut them into pools of
    ``POOL_BATCHES * batch_size``, sort each pool by length (stable), cut it into batches and shuffle the batch
    order. Only the last batch of the last pool can be smaller than ``batch_size``. Without ``shuffle`` the same
    happens on the indices in order and the batch order is kept (for evaluation; ``seed`` and ``epoch`` are then
    unused).
    """
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    epoch = check_int("epoch", epoch, 0)
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or (lengths.size and not np.issubdtype(lengths.dtype, np.integer)):
        raise TypeError(
            f"lengths: expected a 1-D sequence of ints, received an array of {lengths.dtype}, shape {lengths.shape}"
        )
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    pool = POOL_BATCHES * batch_size
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def shard(batch: Sequence[int], rank: int, world: int) -> list[int]:
    """Rank ``rank``'s contiguous slice of ``batch`` out of ``world`` near-equal slices.

    A batch that does not divide evenly gives the first ``len(batch) % world`` ranks one item more, so a
    trainer must weight each rank's loss by its share of items (or tokens) to match single-process training.
    A batch smaller than ``world`` is refused, since some rank would get no data.
    """
    world = check_int("world", world, 1)
    rank = check_int("rank", rank, 0)
    if rank >= world:
        raise ValueError(f"rank: expected an int in [0, {world}), received {rank}")
    if len(batch) < world:
        raise ValueError(f"batch: expected at least world={world} items, received {len(batch)}")
    size, extra = divmod(len(batch), world)
    start = rank * size + min(rank, extra)
    return list(batch[start : start + size + (rank < extra)])


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``seqs`` with ``pad_id``: ids LongTensor [B, T] (T = longest) and lengths LongTensor [B]."""
    if len(seqs) == 0:
        raise ValueError("seqs: expected at least one sequence, received none")
    pad_id = check_int("pad_id", pad_id, 0)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)  # (B,)
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)  # (B, T)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids, lengths


@dataclass(frozen=True)
class Seq2SeqBatch:
    """A padded encoder-decoder batch. ``tgt_in`` = BOS + target feeds the decoder (teacher forcing);
    ``tgt_out`` = target + EOS is what it must predict, position by position; both have ``tgt_lengths``.
    ``src`` is the source alone, or source + EOS when collated with ``src_eos``."""

    src: torch.Tensor  # (B, S) source ids: no specials, or EOS last (src_eos)
    src_lengths: torch.Tensor  # (B,) = len(source) (+ 1 with src_eos)
    tgt_in: torch.Tensor  # (B, T)
    tgt_out: torch.Tensor  # (B, T)
    tgt_lengths: torch.Tensor  # (B,) = len(target) + 1

    def to(self, device: torch.device | str) -> Seq2SeqBatch:
        """The same batch on ``device``."""
        return Seq2SeqBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


def collate_seq2seq(
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    *,
    src_eos: bool = False,
) -> Seq2SeqBatch:
    """Encode and pad ``(source, target)`` symbol pairs; padding uses each vocabulary's PAD id.

    ``src_eos`` appends the source vocabulary's EOS to every source, ``x_1 .. x_S, EOS``: an encoder that cannot
    see where its input ends (self-attention has no direction, only positions) then has an explicit end key,
    which cross-attention can also attend to when no letter fits. Off by default (the sources are the symbols
    alone).
    """
    if len(pairs) == 0:
        raise ValueError("pairs: expected at least one (source, target) pair, received none")
    if not isinstance(src_eos, bool):
        raise TypeError(f"src_eos: expected a bool, received {type(src_eos).__name__} {src_eos!r}")
    src, src_lengths = pad([src_vocab.encode(source, add_eos=src_eos) for source, _ in pairs], src_vocab.pad_id)
    targets = [tgt_vocab.encode(target) for _, target in pairs]
    tgt_in, tgt_lengths = pad([[tgt_vocab.bos_id, *t] for t in targets], tgt_vocab.pad_id)
    tgt_out, _ = pad([[*t, tgt_vocab.eos_id] for t in targets], tgt_vocab.pad_id)
    return Seq2SeqBatch(src, src_lengths, tgt_in, tgt_out, tgt_lengths)
