"""Copy / reverse / sort tasks and ListOps: determinism, targets, and the evaluator on hand examples."""

import pytest

from attnlab.data.synthetic import (
    CLOSE,
    OPERATORS,
    as_symbols,
    evaluate_listops,
    listops_vocab,
    make_listops,
    make_sequence_task,
    task_vocab,
)


@pytest.mark.parametrize("name", ["copy", "reverse", "sort"])
def test_sequence_task_shapes_and_targets(name):
    pairs = make_sequence_task(name, 200, 3, 9, vocab_size=7, seed=1)
    assert len(pairs) == 200
    assert {len(s) for s, _ in pairs} == set(range(3, 10))
    for source, target in pairs:
        assert all(0 <= t < 7 and isinstance(t, int) for t in source)
        expected = {"copy": source, "reverse": source[::-1], "sort": sorted(source)}[name]
        assert target == expected


def test_sequence_task_deterministic():
    a = make_sequence_task("reverse", 50, 1, 20, 10, seed=5)
    assert a == make_sequence_task("reverse", 50, 1, 20, 10, seed=5)
    assert a != make_sequence_task("reverse", 50, 1, 20, 10, seed=6)
    assert make_sequence_task("copy", 5, 4, 4, 10, seed=0)[0] == ([8, 6, 5, 2], [8, 6, 5, 2])


def test_task_vocab_and_symbols():
    vocab = task_vocab(12)
    pairs = make_sequence_task("sort", 3, 2, 4, 12, seed=0)
    (source, target), *_ = as_symbols(pairs)
    assert vocab.encode(source) == [int(t) + 5 for t in source]
    assert vocab.decode(vocab.encode(target, add_eos=True)) == target


def test_sequence_task_bad_input():
    with pytest.raises(ValueError, match="name: expected one of"):
        make_sequence_task("shuffle", 1, 1, 2, 5, 0)
    with pytest.raises(ValueError, match="max_len: expected an int >= 5, received 4"):
        make_sequence_task("copy", 1, 5, 4, 5, 0)
    with pytest.raises(TypeError, match="n: expected an int, received float"):
        make_sequence_task("copy", 1.0, 1, 2, 5, 0)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("7", 7),
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
        ("[MIN 3 [MAX 5 8 ] 6 ]", 3),
        ("[SM 5 6 7 ]", 8),  # 18 mod 10
        ("[MED 1 9 4 ]", 4),
        ("[MED 1 2 ]", 1),  # median 1.5, rounded down as int(np.median) does
        ("[MED 3 8 2 7 ]", 5),  # (3 + 7) / 2
        ("[SM [MAX 1 9 ] [MIN 4 6 ] [MED 0 0 9 ] ]", 3),  # 9 + 4 + 0
    ],
)
def test_evaluate_listops_by_hand(expression, value):
    assert evaluate_listops(expression.split()) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("[MAX 1 2", "unclosed"),
        ("[MAX 1 2 ] ]", "unmatched"),
        ("[MAX ]", "expected arguments"),
        ("[MAX 1 ] 2", "exactly one top-level"),
        ("[MAX 1 10 ]", "received '10'"),
        ("", "exactly one top-level"),
    ],
)
def test_evaluate_listops_rejects_malformed(expression, message):
    with pytest.raises(ValueError, match=message):
        evaluate_listops(expression.split())


def test_make_listops_limits_and_labels():
    examples = make_listops(300, max_depth=3, max_args=4, max_length=40, seed=0)
    assert examples == make_listops(300, max_depth=3, max_args=4, max_length=40, seed=0)
    assert examples != make_listops(300, max_depth=3, max_args=4, max_length=40, seed=1)
    vocab = listops_vocab()
    depths = []
    for tokens, label in examples:
        assert len(tokens) <= 40 and tokens[0] in OPERATORS
        assert label == evaluate_listops(tokens) and 0 <= label <= 9
        assert vocab.unk_id not in vocab.encode(tokens)
        depth = deepest = 0
        for t in tokens:
            depth += (t in OPERATORS) - (t == CLOSE)
            deepest = max(deepest, depth)
        depths.append(deepest)
    assert max(depths) == 3 and min(depths) == 1
    assert len({label for _, label in examples}) == 10


def test_make_listops_exclude_makes_sets_disjoint():
    train = make_listops(2000, max_depth=3, max_args=3, max_length=20, seed=0)
    seen = {tuple(tokens) for tokens, _ in train}
    overlapping = make_listops(500, max_depth=3, max_args=3, max_length=20, seed=1)
    assert any(tuple(tokens) in seen for tokens, _ in overlapping)  # short expressions do recur
    disjoint = make_listops(500, max_depth=3, max_args=3, max_length=20, seed=1, exclude=seen)
    assert not any(tuple(tokens) in seen for tokens, _ in disjoint)
