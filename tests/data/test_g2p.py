"""CMUdict G2P splits and vocabularies; the dictionary is parsed once (functools.cache) for the module."""

import os
import subprocess
import sys

import pytest

from attnlab.data import g2p
from attnlab.data.vocab import SPECIALS, Vocab


@pytest.fixture(scope="module")
def splits():
    return {name: g2p.load_split(name) for name in g2p.SPLITS}


def test_sizes_match_the_docstring(splits):
    sizes = {name: (len(pairs), sum(len(p) for _, p in pairs)) for name, pairs in splits.items()}
    assert sizes == {"train": (107_674, 115_421), "dev": (4_954, 5_339), "test": (12_298, 13_211)}
    assert sizes["test"][0] >= 12_000


def test_splits_are_disjoint_sorted_and_filtered(splits):
    words = {name: [w for w, _ in pairs] for name, pairs in splits.items()}
    assert set(words["train"]).isdisjoint(words["dev"])
    assert set(words["train"]).isdisjoint(words["test"])
    assert set(words["dev"]).isdisjoint(words["test"])
    for name, ws in words.items():
        assert ws == sorted(ws)
        assert all(g2p.split_of(w) == name for w in ws[:500])
    allowed = set("abcdefghijklmnopqrstuvwxyz'")
    assert all(set(w) <= allowed for ws in words.values() for w in ws)


def test_pronunciations_keep_all_variants_and_stress(splits):
    entries = dict(pair for pairs in splits.values() for pair in pairs)
    assert entries["abbe"] == [("AE1", "B", "IY0"), ("AE0", "B", "EY1")]
    assert "a.m." not in entries and "all-out" not in entries
    assert "'bout" in entries


def test_load_split_returns_fresh_lists():
    first = g2p.load_split("dev")
    first[0][1].clear()
    assert g2p.load_split("dev")[0][1]


def test_split_is_independent_of_hash_seed():
    words = ["cat", "tree", "water", "crocker"]
    code = f"from attnlab.data.g2p import split_of; print([split_of(w) for w in {words!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # this process runs under another (random) hash seed
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout == str([g2p.split_of(w) for w in words]) + "\n"
    assert [g2p.split_of(w) for w in words] == ["train", "test", "test", "dev"]


def test_strip_stress():
    assert g2p.strip_stress(["AH0", "B", "ER1", "IY2"]) == ("AH", "B", "ER", "IY")
    with pytest.raises(TypeError, match="phonemes"):
        g2p.strip_stress("AH0")


def test_vocabularies():
    letters = g2p.letter_vocab()
    assert letters.symbols == tuple("'abcdefghijklmnopqrstuvwxyz")
    stressed, plain = g2p.phoneme_vocab(), g2p.phoneme_vocab(stress=False)
    assert len(stressed.symbols) == 69 and len(plain.symbols) == 39
    assert list(stressed.symbols) == sorted(stressed.symbols)
    assert "AH0" in stressed and "AH" in plain and "AH0" not in plain
    assert stressed.to_json()[: len(SPECIALS)] == list(SPECIALS)
    assert Vocab.from_json(stressed.to_json()) == stressed
    assert g2p.max_lengths() == {"letters": 28, "phonemes": 28}


def test_bad_split_name():
    with pytest.raises(ValueError, match="name: expected one of"):
        g2p.load_split("validation")
