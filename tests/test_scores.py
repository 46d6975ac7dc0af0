"""Score functions: tiny hand-computed examples, the registry, and the bounded-memory additive kernel."""

from __future__ import annotations

import math

import pytest
import torch

import attnlab
from attnlab.scores import Score, additive_logits, naive_additive_logits, register_score
from conftest import SCORES, build_score


def _one(values):
    return torch.tensor(values, dtype=torch.float64)[None, None]  # (1, 1, T, D)


Q = _one([[1.0, 2.0]])  # one query
K = _one([[3.0, 0.0], [0.0, 1.0]])  # two keys


def test_dot_and_scaled_dot_by_hand():
    torch.testing.assert_close(build_score("dot", 2, 2)(Q, K), _one([[3.0, 2.0]]))
    torch.testing.assert_close(build_score("scaled_dot", 2, 2)(Q, K), _one([[3.0, 2.0]]) / math.sqrt(2))


def test_general_by_hand():
    score = build_score("general", 2, 2)
    with torch.no_grad():
        score.weight.copy_(torch.tensor([[[0.0, 1.0], [2.0, 0.0]]]))  # q W = [4, 1]
    torch.testing.assert_close(score(Q, K), _one([[12.0, 1.0]]))


def test_additive_by_hand():
    score = attnlab.get_score("additive", query_dim=2, key_dim=2, hidden_dim=1).double()
    with torch.no_grad():
        score.query_weight.copy_(torch.tensor([[[1.0], [0.0]]]))  # W q = q_0 = 1
        score.key_weight.copy_(torch.tensor([[[0.0], [1.0]]]))  # U k = k_1 = 0, 1
        score.v.fill_(2.0)
    torch.testing.assert_close(score(Q, K), _one([[2 * math.tanh(1.0), 2 * math.tanh(2.0)]]))


def test_cosine_by_hand_given_and_learned_strength():
    given = attnlab.get_score("cosine", strength=4.0).double()
    cos = [3.0 / (math.sqrt(5) * 3.0), 2.0 / math.sqrt(5)]
    torch.testing.assert_close(given(Q, K), _one([[4 * c for c in cos]]))
    learned = attnlab.get_score("cosine", heads=2, init_strength=3.0)
    assert isinstance(learned.log_strength, torch.nn.Parameter)
    torch.testing.assert_close(learned.strength, torch.tensor([3.0, 3.0]))
    zero = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    assert not given(Q, zero).isnan().any()  # all-zero (padding) keys: 0, not NaN


def test_location_by_hand_and_beyond_max_len():
    score = attnlab.get_score("location", query_dim=2, max_len=3).double()
    with torch.no_grad():
        score.weight.copy_(torch.tensor([[[1.0, 0.0, 5.0], [0.0, 1.0, 5.0]]]))
        score.bias.copy_(torch.tensor([[[0.5, 0.5, 0.5]]]))
    torch.testing.assert_close(score(Q, K), _one([[1.5, 2.5]]))  # ignores key contents
    torch.testing.assert_close(score(Q, K * 100), _one([[1.5, 2.5]]))
    with pytest.raises(ValueError, match="max_len=3; received 4 keys"):
        score(Q, torch.zeros(1, 1, 4, 2, dtype=torch.float64))


def test_registry_lists_names_and_rejects_unknown():
    assert set(SCORES) <= set(attnlab.available_scores())
    assert {"concat", "bilinear", "content"} <= set(attnlab.available_scores())
    with pytest.raises(KeyError, match=r"unknown score 'bahdanau'; available: .*additive"):
        attnlab.get_score("bahdanau")
    with pytest.raises(TypeError):
        attnlab.get_score("additive", query_dim=4, hiden_dim=3)  # misspelt option is not swallowed


def test_registry_is_open():
    @register_score("test_negdist")
    class NegativeDistance(Score):
        def combine(self, query, key):
            return -torch.cdist(query, key)

    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 2)
    out = attnlab.attend(q, k, v, "test_negdist", return_weights=True)
    torch.testing.assert_close(out.weights, (-torch.cdist(q, k)).softmax(-1))
    with pytest.raises(ValueError, match="already registered"):
        register_score("dot")(NegativeDistance)


def test_parameterised_score_by_name_is_refused_with_hint():
    q = torch.randn(1, 2, 4)
    with pytest.raises(ValueError, match=r"has learned parameters; build it with attnlab.get_score\('additive'"):
        attnlab.attend(q, q, q, "additive")


@pytest.mark.parametrize("name", SCORES)
def test_every_score_three_and_four_dims(name):
    score = build_score(name, 5, 5, heads=3)
    q, k = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(2, 3, 6, 5, dtype=torch.float64)
    assert score(q, k).shape == (2, 3, 4, 6)
    single = build_score(name, 5, 5)
    assert single(q[:, 0], k[:, 0]).shape == (2, 4, 6)


def test_wrong_feature_size_names_the_argument():
    score = build_score("general", 4, 6)
    with pytest.raises(ValueError, match="query must have 4 features"):
        score(torch.randn(1, 1, 2, 5, dtype=torch.float64), torch.randn(1, 1, 3, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="query_dim == key_dim"):
        attnlab.get_score("dot", query_dim=3, key_dim=4)


@pytest.mark.parametrize("chunk_bytes", [1, 200, 10_000, 2**30])
def test_additive_kernel_matches_naive_values_and_grads(chunk_bytes):
    q = torch.randn(2, 3, 7, 5, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 9, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    got = additive_logits(q, k, v, chunk_bytes)
    want = naive_additive_logits(q, k, v)
    torch.testing.assert_close(got, want)
    upstream = torch.randn_like(got)
    for a, b in zip(
        torch.autograd.grad(got, (q, k, v), upstream), torch.autograd.grad(want, (q, k, v), upstream), strict=True
    ):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda q, k, v: additive_logits(q, k, v, 300), (q, k, v))


def test_additive_kernel_bounds_its_memory():
    # Only q, k, v are saved for backward: nothing of size Tq*Tk*A survives the forward.
    q = torch.randn(1, 1, 64, 32, requires_grad=True)
    k = torch.randn(1, 1, 64, 32, requires_grad=True)
    v = torch.randn(1, 32, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        additive_logits(q, k, v, chunk_bytes=4096).sum().backward()
    assert max(saved) <= 64 * 32
