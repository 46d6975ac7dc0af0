"""Batching (bucketing, resumability, padding, collation, sharding) and the Vocab it encodes with.

Vocab's tests live here because collation is where a Vocab is used; there is no separate test file for it.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from attnlab.data.batching import POOL_BATCHES, Seq2SeqBatch, bucket_batches, collate_seq2seq, pad, shard
from attnlab.data.vocab import SPECIALS, Vocab, check_int

LENGTHS = np.random.default_rng(0).integers(1, 40, size=1234).tolist()


# Vocab


def test_vocab_specials_and_ids():
    v = Vocab(["a", "b"])
    assert (v.pad_id, v.bos_id, v.eos_id, v.unk_id, v.sep_id) == (0, 1, 2, 3, 4)
    assert len(v) == 7 and v.symbols == ("a", "b")
    assert v.encode("ab") == [5, 6]
    assert v.encode(["a", "z"], add_bos=True, add_eos=True) == [1, 5, 3, 2]


def test_vocab_decode_stops_at_eos_and_keeps_unk():
    v = Vocab(["a", "b"])
    assert v.decode([1, 5, 4, 3, 6, 2, 5, 0]) == ["a", "<unk>", "b"]
    assert v.decode(torch.tensor([5, 2, 6]), strip_specials=False) == ["a", "<eos>", "b"]
    assert v.decode(np.array([5, 6])) == ["a", "b"]


def test_vocab_json_round_trip():
    v = Vocab(["x", "y", "z"])
    data = json.loads(json.dumps(v.to_json()))
    assert data == [*SPECIALS, "x", "y", "z"]
    assert Vocab.from_json(data) == v
    with pytest.raises(ValueError, match="data: expected the specials"):
        Vocab.from_json(["x", "y"])


def test_vocab_bad_input():
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(["a", "a"])
    with pytest.raises(ValueError, match="special"):
        Vocab(["<pad>"])
    with pytest.raises(TypeError, match="symbols: expected str"):
        Vocab([1])
    with pytest.raises(TypeError, match="seq: expected str symbols, received int"):
        Vocab(["1"]).encode([1])
    with pytest.raises(ValueError, match=r"ids: expected ids in \[0, 6\), received 9"):
        Vocab(["a"]).decode([9])
    with pytest.raises(TypeError, match="ids: expected a 1-D integer tensor"):
        Vocab(["a"]).decode(torch.zeros(2))
    with pytest.raises(TypeError, match="n: expected an int"):
        check_int("n", True, 0)


# bucket_batches


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_exactly_once(shuffle):
    batches = bucket_batches(LENGTHS, 16, seed=3, epoch=2, shuffle=shuffle)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))
    sizes = sorted(len(b) for b in batches)
    assert sizes[1:] == [16] * (len(batches) - 1) and sizes[0] == len(LENGTHS) % 16


def test_deterministic_and_epoch_dependent():
    a = bucket_batches(LENGTHS, 16, seed=3, epoch=2)
    assert a == bucket_batches(LENGTHS, 16, seed=3, epoch=2)
    assert a != bucket_batches(LENGTHS, 16, seed=3, epoch=3)
    assert a != bucket_batches(LENGTHS, 16, seed=4, epoch=2)


def test_batches_are_length_sorted_within_pools():
    batches = bucket_batches(LENGTHS, 8, seed=0, epoch=0)
    spread = np.mean([max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches])
    assert spread < 2  # random batches of 8 from lengths 1..39 spread by ~30
    assert len(LENGTHS) > POOL_BATCHES * 8  # more than one pool was exercised


def test_unshuffled_keeps_pool_order():
    batches = bucket_batches([3, 1, 2, 5, 4], 2, seed=0, epoch=0, shuffle=False)
    assert batches == [[1, 2], [0, 4], [3]]


def test_resumable_in_a_fresh_process():
    code = (
        "import json, numpy as np; from attnlab.data.batching import bucket_batches;"
        "L = np.random.default_rng(0).integers(1, 40, size=1234).tolist();"
        "print(json.dumps(bucket_batches(L, 16, seed=3, epoch=5)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == bucket_batches(LENGTHS, 16, seed=3, epoch=5)


def test_bucket_bad_input():
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1, received 0"):
        bucket_batches(LENGTHS, 0, seed=0, epoch=0)
    with pytest.raises(TypeError, match="lengths: expected a 1-D sequence of ints"):
        bucket_batches([1.5, 2.0], 2, seed=0, epoch=0)
    assert bucket_batches([], 4, seed=0, epoch=0) == []


# pad, collate


def test_pad():
    ids, lengths = pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids.dtype == torch.long and lengths.dtype == torch.long
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 0]
    with pytest.raises(ValueError, match="seqs: expected at least one sequence"):
        pad([], pad_id=0)


def test_collate_seq2seq():
    src_vocab, tgt_vocab = Vocab(list("abc")), Vocab(["X", "Y"])
    batch = collate_seq2seq([("ab", ["X"]), ("c", ["Y", "X", "Y"])], src_vocab, tgt_vocab)
    assert isinstance(batch, Seq2SeqBatch)
    assert batch.src.tolist() == [[5, 6], [7, 0]] and batch.src_lengths.tolist() == [2, 1]
    assert batch.tgt_in.tolist() == [[1, 5, 0, 0], [1, 6, 5, 6]]
    assert batch.tgt_out.tolist() == [[5, 2, 0, 0], [6, 5, 6, 2]]
    assert batch.tgt_lengths.tolist() == [2, 4]
    assert batch.to("cpu").tgt_out.tolist() == batch.tgt_out.tolist()
    with pytest.raises(AttributeError):
        batch.src = batch.tgt_in  # frozen


def test_collate_seq2seq_with_src_eos_ends_every_source_with_eos_and_leaves_the_targets_alone():
    src_vocab, tgt_vocab = Vocab(list("abc")), Vocab(["X", "Y"])
    pairs = [("ab", ["X"]), ("c", ["Y", "X", "Y"])]
    plain, ended = (
        collate_seq2seq(pairs, src_vocab, tgt_vocab),
        collate_seq2seq(pairs, src_vocab, tgt_vocab, src_eos=True),
    )
    assert ended.src.tolist() == [[5, 6, 2], [7, 2, 0]] and ended.src_lengths.tolist() == [3, 2]
    rows = torch.arange(2)
    assert torch.equal(ended.src[rows, ended.src_lengths - 1], torch.full((2,), src_vocab.eos_id))
    assert not (plain.src == src_vocab.eos_id).any()  # the default has no specials in the source
    for name in ("tgt_in", "tgt_out", "tgt_lengths"):
        assert torch.equal(getattr(ended, name), getattr(plain, name))
    with pytest.raises(TypeError, match="src_eos: expected a bool, received int 1"):
        collate_seq2seq(pairs, src_vocab, tgt_vocab, src_eos=1)


# shard


def test_shard_even_and_uneven():
    batch = list(range(10, 20))
    assert [shard(batch, r, 2) for r in range(2)] == [batch[:5], batch[5:]]
    parts = [shard(batch, r, 3) for r in range(3)]
    assert parts == [batch[:4], batch[4:7], batch[7:]]
    assert shard(batch, 0, 1) == batch


def test_shard_bad_input():
    with pytest.raises(ValueError, match="batch: expected at least world=4 items, received 3"):
        shard([1, 2, 3], 0, 4)
    with pytest.raises(ValueError, match=r"rank: expected an int in \[0, 2\), received 2"):
        shard([1, 2, 3], 2, 2)
