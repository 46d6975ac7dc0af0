"""The tasks experiments train on: CMUdict grapheme-to-phoneme and synthetic sequence reversal.

A task builds the training set (:class:`~attnlab.train.TrainData`), its dev evaluation
(:class:`~attnlab.train.Validation`) and a JSON ``spec`` (vocabularies and options) stored in every weight file,
from which :func:`task_from_spec` rebuilds it for ``attnlab eval``.

Subsets (``train_words``, ``dev_words``, ``limit``) are evenly spaced over the sorted words, so a small subset
covers the whole alphabet instead of the words starting with "a".
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from attnlab.data import (
    Vocab,
    as_symbols,
    collate_seq2seq,
    letter_vocab,
    load_split,
    make_sequence_task,
    pad,
    phoneme_vocab,
    strip_stress,
    task_vocab,
)
from attnlab.seq import beam_search, greedy
from attnlab.train.trainer import TrainData, Validation

__all__ = ["G2PTask", "ReverseTask", "decode", "evenly_spaced", "task_from_spec"]

T = TypeVar("T")


def evenly_spaced(items: Sequence[T], n: int | None) -> list[T]:
    """``n`` items spread evenly over ``items`` (all of them when ``n`` is None or not smaller)."""
    if n is None or n >= len(items):
        return list(items)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int or None, received {n!r}")
    return [items[(i * len(items)) // n] for i in range(n)]


@torch.no_grad()
def decode(
    model: nn.Module,
    sources: Sequence[Sequence[str]],
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    *,
    beam: int = 1,
    batch_size: int = 256,
    src_eos: bool = False,
) -> list[list[str]]:
    """Output symbols for each source (greedy, or beam search with ``beam > 1``), in input order.

    Sources are decoded in batches of similar length; the model should be in eval mode. ``src_eos`` appends EOS to
    every source, as :func:`~attnlab.data.collate_seq2seq` does in training (a model must be decoded the way it was
    trained: :class:`G2PTask` passes its own ``src_eos``).
    """
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise ValueError(f"beam: expected a positive int, received {beam!r}")
    if not isinstance(src_eos, bool):
        raise TypeError(f"src_eos: expected a bool, received {type(src_eos).__name__} {src_eos!r}")
    device = next(model.parameters()).device
    ids = dict(bos_id=tgt_vocab.bos_id, eos_id=tgt_vocab.eos_id, pad_id=tgt_vocab.pad_id)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[str]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        encoded = [src_vocab.encode(sources[i], add_eos=src_eos) for i in rows]
        src, lengths = pad(encoded, src_vocab.pad_id)  # (B, S), (B,)
        src, lengths = src.to(device), lengths.to(device)
        if beam == 1:
            decoded = greedy(model, src, lengths, **ids)
        else:
            decoded = beam_search(model, src, lengths, beam_size=beam, **ids)
        for row, i in enumerate(rows):
            out[i] = tgt_vocab.decode(decoded.tokens[row].cpu())
    return out


# ----------------------------------------------------------------------------------------------------------
# Grapheme-to-phoneme (CMUdict)
# ----------------------------------------------------------------------------------------------------------


@functools.cache
def _split(name: str) -> tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]:
    """``load_split(name)`` once per process (it hashes every dictionary word to find the split's)."""
    return tuple((word, tuple(prons)) for word, prons in load_split(name))


class G2PTask:
    """Letters to ARPAbet phonemes, with stress unless ``stress=False`` (``attnlab.data.g2p``). Every pronunciation
    of a training word is one training example; a word is right if the output matches any of its pronunciations.

    ``stress=False`` trains on pronunciations with the stress digits removed (the usual CMUdict G2P benchmark:
    the stress variants of a pronunciation merge into one example, and the output vocabulary has 39 phonemes
    instead of 69). Such a model predicts no stress, so its with-stress scores ``wer`` and ``per`` are None.

    ``src_eos=True`` ends every source word with the EOS symbol, in training and decoding alike (``letters + EOS``:
    an encoder without recurrence then sees where the word ends, and cross-attention has an end key). Off by default;
    weight files written before the option have no ``src_eos`` entry in their task spec and load with it off.

    Dev metric: ``wer_no_stress`` (lower is better), greedy decoding on ``dev_words`` evenly spaced dev words.
    """

    name = "g2p"

    def __init__(
        self,
        train_words: int | None = None,
        dev_words: int | None = None,
        *,
        stress: bool = True,
        src_eos: bool = False,
        src_vocab: Vocab | None = None,
        tgt_vocab: Vocab | None = None,
    ) -> None:
        for name, value in (("stress", stress), ("src_eos", src_eos)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: expected a bool, received {type(value).__name__} {value!r}")
        self.train_words = train_words
        self.dev_words = dev_words
        self.stress = stress
        self.src_eos = src_eos
        self.src_vocab = src_vocab or letter_vocab()
        self.tgt_vocab = tgt_vocab or phoneme_vocab(stress=stress)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "train_words": self.train_words, "dev_words": self.dev_words,
                "stress": self.stress, "src_eos": self.src_eos, "src_vocab": self.src_vocab.to_json(),
                "tgt_vocab": self.tgt_vocab.to_json()}  # fmt: skip

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> G2PTask:
        vocabs = {"src_vocab": Vocab.from_json(spec["src_vocab"]), "tgt_vocab": Vocab.from_json(spec["tgt_vocab"])}
        return cls(spec.get("train_words"), spec.get("dev_words"), stress=spec.get("stress", True),
                   src_eos=spec.get("src_eos", False), **vocabs)  # fmt: skip

    def entries(self, split: str, limit: int | None = None) -> list[tuple[str, list[tuple[str, ...]]]]:
        """``(word, pronunciations)`` of ``split``, ``limit`` of them evenly spaced."""
        return [(word, list(prons)) for word, prons in evenly_spaced(_split(split), limit)]

    def train_data(self) -> TrainData:
        entries = self.entries("train", self.train_words)
        if self.stress:
            pairs = [(list(word), list(pron)) for word, prons in entries for pron in prons]
        else:  # stress variants of one pronunciation become one example (dict: first-seen order)
            plain = dict.fromkeys((word, strip_stress(pron)) for word, prons in entries for pron in prons)
            pairs = [(list(word), list(pron)) for word, pron in plain]
        # source + target + EOS, with src_eos too: the source EOS is left out of the lengths so that a src_eos run
        # buckets and cuts its token budget exactly as its base does, and both train on the same batches of words
        lengths = [len(src) + len(tgt) + 1 for src, tgt in pairs]
        collate = functools.partial(collate_seq2seq, src_vocab=self.src_vocab, tgt_vocab=self.tgt_vocab,
                                    src_eos=self.src_eos)  # fmt: skip
        return TrainData(pairs, lengths, collate)

    def decode(
        self, model: nn.Module, words: Sequence[str], *, beam: int = 1, batch_size: int = 256
    ) -> list[list[str]]:
        """Phonemes for each word, decoded as this task trains (:func:`decode` with the task's vocabularies and
        ``src_eos``)."""
        return decode(model, words, self.src_vocab, self.tgt_vocab, beam=beam, batch_size=batch_size,
                      src_eos=self.src_eos)  # fmt: skip

    def evaluate(
        self,
        model: nn.Module,
        entries: Sequence[tuple[str, Sequence[Sequence[str]]]],
        *,
        beam: int = 1,
        by_length: bool = False,
        batch_size: int = 256,
    ) -> dict[str, Any]:
        """``wer``, ``per``, ``wer_no_stress``, ``per_no_stress`` (percent) and ``words`` on ``entries``; with
        ``by_length`` also those rates per word length (``{"3": {...}, ...}``)."""
        from attnlab.train import metrics  # rapidfuzz: a lab dependency

        words = [word for word, _ in entries]
        refs = [list(prons) for _, prons in entries]
        hyps = self.decode(model, words, beam=beam, batch_size=batch_size)
        plain = metrics.g2p_scores(hyps, refs, stress=False)
        stressed = metrics.g2p_scores(hyps, refs, stress=True) if self.stress else {"wer": None, "per": None}
        result: dict[str, Any] = {"wer": stressed["wer"], "per": stressed["per"], "wer_no_stress": plain["wer"],
                                  "per_no_stress": plain["per"], "words": plain["words"]}  # fmt: skip
        if by_length:
            without = metrics.by_length(words, hyps, refs, stress=False)
            with_stress = metrics.by_length(words, hyps, refs, stress=True) if self.stress else {}
            result["by_length"] = {
                str(n): {
                    "words": s["words"],
                    "wer": with_stress[n]["wer"] if self.stress else None,
                    "per": with_stress[n]["per"] if self.stress else None,
                    "wer_no_stress": s["wer"],
                    "per_no_stress": s["per"],
                }
                for n, s in without.items()
            }
        return result

    def validation(self) -> Validation:
        dev = self.entries("dev", self.dev_words)
        return Validation(lambda model: self.evaluate(model, dev), metric="wer_no_stress", higher_is_better=False)


# ----------------------------------------------------------------------------------------------------------
# Synthetic reversal (the length study)
# ----------------------------------------------------------------------------------------------------------


class ReverseTask:
    """Reverse a sequence of ``vocab_size`` symbols of length ``min_len..max_len`` (``attnlab.data.synthetic``).

    Train, dev and test sets are drawn with seeds ``data_seed``, ``+1`` and ``+2``. Dev metric: ``accuracy``
    (percent of sequences reversed exactly, higher is better), greedy decoding.
    """

    name = "reverse"

    def __init__(
        self,
        train_size: int = 20000,
        dev_size: int = 500,
        min_len: int = 1,
        max_len: int = 50,
        vocab_size: int = 20,
        data_seed: int = 0,
        test_size: int = 2000,
    ) -> None:
        self.train_size, self.dev_size, self.test_size = train_size, dev_size, test_size
        self.min_len, self.max_len, self.vocab_size, self.data_seed = min_len, max_len, vocab_size, data_seed
        self.src_vocab = self.tgt_vocab = task_vocab(vocab_size)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "train_size": self.train_size, "dev_size": self.dev_size,
                "test_size": self.test_size, "min_len": self.min_len, "max_len": self.max_len,
                "vocab_size": self.vocab_size, "data_seed": self.data_seed}  # fmt: skip

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ReverseTask:
        keys = ("train_size", "dev_size", "min_len", "max_len", "vocab_size", "data_seed", "test_size")
        return cls(**{k: spec[k] for k in keys if k in spec})

    def pairs(self, split: str, n: int | None = None, max_len: int | None = None) -> list[tuple[list[str], list[str]]]:
        offset = {"train": 0, "dev": 1, "test": 2}[split]
        size = n if n is not None else {"train": self.train_size, "dev": self.dev_size, "test": self.test_size}[split]
        top = max_len if max_len is not None else self.max_len
        return as_symbols(make_sequence_task("reverse", size, self.min_len, top, self.vocab_size,
                                             self.data_seed + offset))  # fmt: skip

    def train_data(self) -> TrainData:
        pairs = self.pairs("train")
        collate = functools.partial(collate_seq2seq, src_vocab=self.src_vocab, tgt_vocab=self.tgt_vocab)
        return TrainData(pairs, [2 * len(src) + 1 for src, _ in pairs], collate)

    def evaluate(
        self, model: nn.Module, pairs: Sequence[tuple[list[str], list[str]]], *, beam: int = 1, by_length: bool = False
    ) -> dict[str, Any]:
        """``accuracy`` (percent of outputs exactly right), ``token_accuracy`` (percent of reference positions
        whose output symbol matches) and ``sequences``; with ``by_length`` the accuracy per length."""
        from attnlab.train import metrics

        hyps = decode(model, [src for src, _ in pairs], self.src_vocab, self.tgt_vocab, beam=beam)
        refs = [tgt for _, tgt in pairs]
        correct = sum(sum(h == r for h, r in zip(hyp, ref, strict=False)) for hyp, ref in zip(hyps, refs, strict=True))
        result: dict[str, Any] = {
            "accuracy": metrics.sequence_accuracy(hyps, refs),
            "token_accuracy": 100.0 * correct / max(1, sum(len(ref) for ref in refs)),  # position-wise matches
            "sequences": len(pairs),
        }
        if by_length:
            table = metrics.accuracy_by_length(hyps, refs)
            result["by_length"] = {str(n): row for n, row in table.items()}
        return result

    def validation(self) -> Validation:
        dev = self.pairs("dev")
        return Validation(lambda model: self.evaluate(model, dev), metric="accuracy", higher_is_better=True)


TASKS: dict[str, type] = {"g2p": G2PTask, "reverse": ReverseTask}


def task_from_spec(spec: dict[str, Any]) -> G2PTask | ReverseTask:
    """Rebuild the task a weight file was trained on from its metadata ``task`` entry."""
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in TASKS:
        raise ValueError(f"task spec: name: expected one of {sorted(TASKS)}, received {name!r}")
    return TASKS[name].from_spec(spec)
