"""G2P and sequence metrics on tiny hand-computed cases."""

import pytest

from attnlab.train.metrics import accuracy_by_length, by_length, g2p_scores, sequence_accuracy

HYPS = [("K", "AE1", "T"), ("D", "AO1", "G"), ("AH0", "B")]
REFS = [
    [("K", "AE1", "T")],  # exact: distance 0, length 3
    [("D", "AA1", "G"), ("D", "AO1", "G", "Z")],  # both at distance 1: the first (length 3) counts
    [("AH1", "B", "IY0")],  # substitute + insert: distance 2 (1 without stress), length 3
]


def test_g2p_scores_by_hand():
    scores = g2p_scores(HYPS, REFS)
    assert scores["words"] == 3
    assert scores["wer"] == pytest.approx(100 * 2 / 3)
    assert scores["per"] == pytest.approx(100 * 3 / 9)


def test_g2p_scores_without_stress():
    scores = g2p_scores(HYPS, REFS, stress=False)
    assert scores["wer"] == pytest.approx(100 * 2 / 3)
    assert scores["per"] == pytest.approx(100 * 2 / 9)
    assert g2p_scores([("AH0",)], [[("AH1",)]], stress=False)["wer"] == 0.0


def test_closest_reference_sets_the_denominator():
    # distances 2 and 1: the second reference (length 2) is closest, so PER = 1/2, not 2/4 or 3/6
    scores = g2p_scores([("A", "B")], [[("A", "B", "C", "D"), ("A", "X")]])
    assert scores["per"] == pytest.approx(50.0)
    assert scores["wer"] == pytest.approx(100.0)
    # a hypothesis matching any reference is correct
    assert g2p_scores([["A", "X"]], [[("A", "B"), ("A", "X")]]) == {"wer": 0.0, "per": 0.0, "words": 1}


def test_by_length():
    result = by_length(["cat", "dog", "a"], HYPS, REFS)
    assert list(result) == [1, 3]
    assert result[1] == g2p_scores(HYPS[2:], REFS[2:])
    assert result[3]["words"] == 2 and result[3]["per"] == pytest.approx(100 * 1 / 6)
    grouped = by_length(["cat", "dog", "a"], HYPS, REFS, lengths=[7, 7, 7], stress=False)
    assert grouped == {7: g2p_scores(HYPS, REFS, stress=False)}


def test_sequence_accuracy():
    hyps, refs = [[1, 2], [3], [4, 5, 6], [7, 8]], [[1, 2], [4], [4, 5, 6], [8, 7]]
    assert sequence_accuracy(hyps, refs) == pytest.approx(50.0)
    assert accuracy_by_length(hyps, refs) == {
        1: {"accuracy": 0.0, "n": 1},
        2: {"accuracy": 50.0, "n": 2},
        3: {"accuracy": 100.0, "n": 1},
    }
    assert accuracy_by_length(hyps, refs, lengths=[5, 5, 9, 9]) == {
        5: {"accuracy": 50.0, "n": 2},
        9: {"accuracy": 50.0, "n": 2},
    }


def test_bad_input():
    with pytest.raises(ValueError, match="refs: expected 3 items"):
        g2p_scores(HYPS, REFS[:2])
    with pytest.raises(ValueError, match=r"refs\[0\]: expected at least one reference"):
        g2p_scores([("A",)], [[]])
    with pytest.raises(ValueError, match="hyps: expected at least one item"):
        g2p_scores([], [])
    with pytest.raises(ValueError, match="lengths: expected 3 items"):
        by_length(["cat", "dog", "a"], HYPS, REFS, lengths=[1])
    with pytest.raises(ValueError, match="refs: expected 1 items"):
        sequence_accuracy([[1]], [])
