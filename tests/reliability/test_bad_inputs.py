"""The catalogue of bad inputs (RELIABILITY.md promise 5): each is refused with ValueError/TypeError (KeyError for
unknown registry names) whose message names the argument, what was expected and what was received.
"""

from __future__ import annotations

import pytest
import torch

import attnlab
from attnlab import CrossAttention, KVCache, SelfAttention, masks
from attnlab.vision import get_block

F32 = torch.float32


def q(*shape, dtype=F32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device)


ATTN = CrossAttention(6, 9, heads=3)
SELF = SelfAttention(6, heads=3, causal=True)
X, MEM = q(2, 4, 6), q(2, 5, 9)

# (id, call, exception, regex the message must match: argument name ... received/available)
CATALOGUE = [
    (
        "query rank 2",
        lambda: attnlab.attend(q(4, 6), q(4, 6), q(4, 6)),
        ValueError,
        r"query must be .*received shape \(4, 6\)",
    ),
    (
        "key rank differs",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 1, 5, 6), q(2, 5, 6)),
        ValueError,
        r"key must be \[B, T, D\].*received shape",
    ),
    (
        "batch mismatch",
        lambda: attnlab.attend(q(2, 4, 6), q(3, 5, 6), q(3, 5, 6)),
        ValueError,
        r"key must match query in batch .*received shape \(3, 5, 6\)",
    ),
    (
        "heads mismatch",
        lambda: attnlab.attend(q(2, 3, 4, 6), q(2, 2, 5, 6), q(2, 2, 5, 6)),
        ValueError,
        r"key must match query in batch and heads",
    ),
    (
        "key/value length",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 5, 6), q(2, 7, 6)),
        ValueError,
        r"key and value must have the same length Tk; received",
    ),
    (
        "dtype mismatch",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 5, 6, dtype=torch.float64), q(2, 5, 6)),
        TypeError,
        r"key dtype must match query's torch.float32; received torch.float64",
    ),
    (
        "integer query",
        lambda: attnlab.attend(torch.ones(2, 4, 6, dtype=torch.long), q(2, 5, 6), q(2, 5, 6)),
        TypeError,
        r"query must be a floating-point tensor; received dtype torch.int64",
    ),
    (
        "query not a tensor",
        lambda: attnlab.attend([[1.0]], q(2, 5, 6), q(2, 5, 6)),
        TypeError,
        r"query must be a torch.Tensor; received list",
    ),
    (
        "device mismatch",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 5, 6, device="meta"), q(2, 5, 6, device="meta")),
        ValueError,
        r"key must be on query's device cpu; received meta",
    ),
    (
        "float 0/1 mask",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 5, 6), q(2, 5, 6), mask=torch.ones(4, 5)),
        TypeError,
        r"mask must be a bool tensor .*received dtype torch.float32.*bias=",
    ),
    (
        "integer mask",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 5, 6), q(2, 5, 6), mask=torch.ones(4, 5, dtype=torch.int64)),
        TypeError,
        r"mask must be a bool tensor .*received dtype torch.int64",
    ),
    (
        "mask wrong shape",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 5, 6), q(2, 5, 6), mask=torch.ones(4, 6, dtype=torch.bool)),
        ValueError,
        r"mask of shape \(4, 6\) does not broadcast to \[B, H, Tq, Tk\] = \[2, 1, 4, 5\]",
    ),
    (
        "mask rank 5",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 5, 6), q(2, 5, 6), mask=torch.ones(1, 1, 1, 4, 5, dtype=torch.bool)),
        ValueError,
        r"mask must have 2 to 4 dims .*received shape",
    ),
    (
        "mask on other device",
        lambda: attnlab.attend(
            q(2, 4, 6), q(2, 5, 6), q(2, 5, 6), mask=torch.ones(4, 5, dtype=torch.bool, device="meta")
        ),
        ValueError,
        r"mask must be on the inputs' device cpu; received meta",
    ),
    (
        "bool bias",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 5, 6), q(2, 5, 6), bias=torch.ones(4, 5, dtype=torch.bool)),
        TypeError,
        r"bias must be a floating-point tensor .*received dtype torch.bool",
    ),
    (
        "context of another dtype",
        lambda: CrossAttention(6, 6)(q(2, 4, 6), q(2, 5, 6).double()),
        TypeError,
        r"context dtype must match x's torch.float32; received torch.float64",
    ),
    (
        "unknown score",
        lambda: attnlab.get_score("bahdanau"),
        KeyError,
        r"unknown score 'bahdanau'; available: additive",
    ),
    (
        "score of wrong type",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 5, 6), q(2, 5, 6), score=3),
        TypeError,
        r"score must be a score name or a Score; received int",
    ),
    (
        "parameterised score by name",
        lambda: attnlab.attend(q(2, 4, 6), q(2, 5, 6), q(2, 5, 6), score="general"),
        ValueError,
        r"score 'general' has learned parameters",
    ),
    ("misspelt score option", lambda: attnlab.get_score("additive", query_dim=4, hiden_dim=3), TypeError, r"hiden_dim"),
    (
        "dot with unequal dims",
        lambda: attnlab.get_score("dot", query_dim=3, key_dim=4),
        ValueError,
        r"needs query_dim == key_dim; received 3 and 4",
    ),
    (
        "score query features",
        lambda: attnlab.get_score("general", query_dim=4, key_dim=6)(q(1, 2, 5), q(1, 3, 6)),
        ValueError,
        r"query must have 4 features .*received shape \(1, 1, 2, 5\)",
    ),
    (
        "location beyond max_len",
        lambda: attnlab.get_score("location", query_dim=6, max_len=3)(q(1, 2, 6), q(1, 4, 6)),
        ValueError,
        r"max_len=3; received 4 keys",
    ),
    (
        "zero score dim",
        lambda: attnlab.get_score("general", query_dim=0),
        ValueError,
        r"query_dim must be a positive int or None; received 0",
    ),
    ("heads not dividing dim", lambda: CrossAttention(10, heads=3), ValueError, r"heads \(3\) must divide dim \(10\)"),
    (
        "heads not dividing raw dims",
        lambda: CrossAttention(6, 8, heads=3, project=False, score="additive"),
        ValueError,
        r"heads \(3\) must divide context_dim \(8\)",
    ),
    ("non-positive dim", lambda: CrossAttention(0), ValueError, r"dim must be a positive int; received 0"),
    (
        "dropout out of range",
        lambda: SelfAttention(8, dropout=1.0),
        ValueError,
        r"dropout must be in \[0, 1\); received 1.0",
    ),
    (
        "x wrong features",
        lambda: ATTN(q(2, 4, 7), MEM),
        ValueError,
        r"x must be \[B, T, 6\]; received shape \(2, 4, 7\)",
    ),
    (
        "context wrong features",
        lambda: ATTN(X, q(2, 5, 8)),
        ValueError,
        r"context must be \[B, T, 9\]; received shape \(2, 5, 8\)",
    ),
    (
        "context batch",
        lambda: ATTN(X, q(3, 5, 9)),
        ValueError,
        r"context batch must match x's 2; received shape \(3, 5, 9\)",
    ),
    (
        "context type",
        lambda: ATTN(X, "memory"),
        TypeError,
        r"context must be a Tensor \[B, Tk, 9\] or a Memory; received str",
    ),
    (
        "module mask wrong shape",
        lambda: SELF(X, mask=torch.ones(2, 4, 7, dtype=torch.bool)),
        ValueError,
        r"mask of shape \(2, 4, 7\) does not broadcast",
    ),
    (
        "kv cache shape change",
        lambda: _cache_with_two_shapes(),
        ValueError,
        r"cache holds keys .*received \(1, 2, 1, 4\)",
    ),
    (
        "from_torch of a Linear",
        lambda: CrossAttention.from_torch(torch.nn.Linear(2, 2)),
        TypeError,
        r"expects torch.nn.MultiheadAttention; received Linear",
    ),
    ("negative lengths", lambda: masks.padding([2, -1], 3), ValueError, r"lengths must be >= 0; received min -1"),
    (
        "zero-length max_len overflow",
        lambda: masks.padding([4], 3),
        ValueError,
        r"lengths must be <= max_len=3; received max 4",
    ),
    (
        "float lengths",
        lambda: masks.padding(torch.tensor([1.5]), 3),
        TypeError,
        r"lengths must be an integer tensor; received dtype torch.float32",
    ),
    ("negative causal size", lambda: masks.causal(-1), ValueError, r"tq must be >= 0; received -1"),
    (
        "prefix out of range",
        lambda: masks.prefix([5], 4),
        ValueError,
        r"prefix_lengths must lie in \[0, length=4\]; received \[5, 5\]",
    ),
    ("unknown block", lambda: get_block("selfattn", 16), KeyError, r"selfattn.*se"),
    ("channel reduction below 1", lambda: get_block("se", 8, reduction=16), ValueError, r"8.*16"),
    ("misspelt block option", lambda: get_block("sagan", 16, reducton=2), TypeError, r"reducton"),
]


def _cache_with_two_shapes():
    cache = KVCache()
    with torch.no_grad():
        cache.extend(torch.randn(1, 2, 1, 3), torch.randn(1, 2, 1, 3))
        cache.extend(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_input_is_refused_with_a_clear_message(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_catalogue_size():
    assert len(CATALOGUE) >= 25


def test_no_bare_assert_guards_user_input():
    # `assert` disappears under python -O: user input must be checked with real exceptions.
    import ast
    from pathlib import Path

    offenders = []
    for path in Path(attnlab.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assert):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders
