"""Data: vocabularies, CMUdict grapheme-to-phoneme splits, synthetic sequence tasks and ListOps, digit canvases,
and length-bucketed batching. Data code imports no models, training loops or plots."""

from attnlab.data.batching import Seq2SeqBatch, bucket_batches, collate_seq2seq, pad, shard
from attnlab.data.digits import Canvases, cluttered, digit_strings, pool_indices, relational
from attnlab.data.g2p import letter_vocab, load_split, max_lengths, phoneme_vocab, split_of, strip_stress
from attnlab.data.synthetic import (
    as_symbols,
    evaluate_listops,
    listops_vocab,
    make_listops,
    make_sequence_task,
    task_vocab,
)
from attnlab.data.vocab import SPECIALS, Vocab

__all__ = [
    "SPECIALS",
    "Canvases",
    "Seq2SeqBatch",
    "Vocab",
    "as_symbols",
    "bucket_batches",
    "cluttered",
    "collate_seq2seq",
    "digit_strings",
    "evaluate_listops",
    "letter_vocab",
    "listops_vocab",
    "load_split",
    "make_listops",
    "make_sequence_task",
    "max_lengths",
    "pad",
    "phoneme_vocab",
    "pool_indices",
    "relational",
    "shard",
    "split_of",
    "strip_stress",
    "task_vocab",
]
