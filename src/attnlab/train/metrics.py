"""Evaluation metrics: word and phoneme error rates for G2P, exact-match accuracy for synthetic tasks.

All rates are percentages. Edit distances come from ``rapidfuzz.distance.Levenshtein`` (unit cost insert,
delete, substitute), which accepts sequences of any hashable symbols.

* WER: percent of words whose hypothesis equals none of the word's reference pronunciations.
* PER: for each word take the reference with the smallest edit distance to the hypothesis (the first one in
  reference order on a tie); PER = sum of those distances / sum of those references' lengths.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence, Sized

from rapidfuzz.distance import Levenshtein

from attnlab.data.g2p import strip_stress

Seq = Sequence[Hashable]


def _check_same_length(**named: Sized) -> int:
    (first_name, first), *rest = named.items()
    for name, value in rest:
        if len(value) != len(first):
            raise ValueError(f"{name}: expected {len(first)} items (as many as {first_name}), received {len(value)}")
    if len(first) == 0:
        raise ValueError(f"{first_name}: expected at least one item, received none")
    return len(first)


def _group_by(keys: Sequence[int]) -> dict[int, list[int]]:
    """Positions of each key, keys ascending."""
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return dict(sorted(groups.items()))


def closest_references(
    hyps: Sequence[Seq], refs: Sequence[Sequence[Seq]], *, stress: bool = True
) -> list[tuple[tuple, tuple]]:
    """``[(hypothesis, closest reference)]`` per word, as tuples, stress digits stripped from both when
    ``stress=False``; the closest is the reference with the smallest edit distance, the first one on a tie.

    Raises ``ValueError`` for ``hyps`` and ``refs`` of different lengths or empty, or a word without references.
    """
    _check_same_length(hyps=hyps, refs=refs)
    pairs = []
    for i, (hyp, word_refs) in enumerate(zip(hyps, refs, strict=True)):
        if len(word_refs) == 0:
            raise ValueError(f"refs[{i}]: expected at least one reference, received none")
        hyp = tuple(hyp) if stress else strip_stress(hyp)
        candidates = [tuple(r) if stress else strip_stress(r) for r in word_refs]
        pairs.append((hyp, min(candidates, key=lambda ref: Levenshtein.distance(hyp, ref))))  # first on ties
    return pairs


def g2p_scores(hyps: Sequence[Seq], refs: Sequence[Sequence[Seq]], stress: bool = True) -> dict[str, float]:
    """``{"wer", "per", "words"}`` for one hypothesis per word against all of its references.

    ``stress=False`` strips stress digits from both sides first, so AH0 and AH1 count as the same phoneme.
    """
    words = len(hyps)
    word_errors = distance = length = 0
    for hyp, best in closest_references(hyps, refs, stress=stress):
        best_distance = Levenshtein.distance(hyp, best)
        word_errors += best_distance > 0
        distance += best_distance
        length += len(best)
    if length == 0:
        raise ValueError("refs: expected references with at least one phoneme in total, received only empty ones")
    return {"wer": 100.0 * word_errors / words, "per": 100.0 * distance / length, "words": words}


def by_length(
    words: Sequence[Sized],
    hyps: Sequence[Seq],
    refs: Sequence[Sequence[Seq]],
    *,
    lengths: Sequence[int] | None = None,
    stress: bool = True,
) -> dict[int, dict[str, float]]:
    """:func:`g2p_scores` per input length, keys ascending; length is ``len(word)`` unless ``lengths`` is given."""
    _check_same_length(words=words, hyps=hyps, refs=refs)
    keys = [len(w) for w in words] if lengths is None else list(lengths)
    _check_same_length(words=words, lengths=keys)
    return {
        key: g2p_scores([hyps[i] for i in idx], [refs[i] for i in idx], stress=stress)
        for key, idx in _group_by(keys).items()
    }


def sequence_accuracy(hyps: Sequence[Seq], refs: Sequence[Seq]) -> float:
    """Percent of hypotheses exactly equal to their single reference (synthetic tasks)."""
    n = _check_same_length(hyps=hyps, refs=refs)
    return 100.0 * sum(list(h) == list(r) for h, r in zip(hyps, refs, strict=True)) / n


def accuracy_by_length(
    hyps: Sequence[Seq], refs: Sequence[Seq], lengths: Sequence[int] | None = None
) -> dict[int, dict[str, float]]:
    """``{length: {"accuracy", "n"}}``, keys ascending; length is ``len(ref)`` unless ``lengths`` is given
    (pass the source lengths for tasks whose target length differs from the input's)."""
    _check_same_length(hyps=hyps, refs=refs)
    keys = [len(r) for r in refs] if lengths is None else list(lengths)
    _check_same_length(hyps=hyps, lengths=keys)
    return {
        key: {"accuracy": sequence_accuracy([hyps[i] for i in idx], [refs[i] for i in idx]), "n": len(idx)}
        for key, idx in _group_by(keys).items()
    }
