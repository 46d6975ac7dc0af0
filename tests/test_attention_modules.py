"""CrossAttention / SelfAttention: one mechanism called two ways, checked against the float64 oracle."""

from __future__ import annotations

import pytest
import torch

import attnlab
from attnlab import Attended, CrossAttention, KVCache, SelfAttention, context_and_weights, masks
from conftest import SCORE_OPTIONS, SCORES
from reference import reference_module


def _cross(name, heads, project=True, dim=6, context_dim=9, **kw):
    if name in ("dot", "scaled_dot", "cosine") and not project:
        context_dim = dim
    return CrossAttention(dim, context_dim, heads, name, project=project, score_options=SCORE_OPTIONS.get(name), **kw)


def _self(name, heads, **kw):
    return SelfAttention(6, heads, name, score_options=SCORE_OPTIONS.get(name), **kw)


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("project", [True, False])
def test_cross_attention_matches_reference(name, heads, project):
    attn = _cross(name, heads, project).double()
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    memory = torch.randn(2, 5, attn.context_dim, dtype=torch.float64)
    mask = masks.padding([5, 3], 5)
    out = attn(x, memory, mask=mask, return_weights=True)
    want, weights = reference_module(attn, x, memory, mask)
    torch.testing.assert_close(out.context, want, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(out.weights, weights.squeeze(1) if heads == 1 else weights, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(attn(x, memory, mask=mask), want, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_reference(name, causal):
    attn = _self(name, 3, causal=causal).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    mask = masks.padding([5, 4], 5)
    out = attn(x, mask=mask)
    want, _ = reference_module(attn, x, x, mask, causal=causal)
    valid = mask[:, 0]  # padded positions are zeroed before projection, as queries too: compare real tokens
    torch.testing.assert_close(out[valid], want[valid], rtol=1e-7, atol=1e-7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("weights", [False, True])
def test_self_attention_is_cross_attention_with_context_x(name, weights):
    self_attn = _self(name, 3)
    cross = _cross(name, 3, context_dim=6)
    cross.load_state_dict(self_attn.state_dict())
    x = torch.randn(2, 5, 6)
    mask = masks.padding([5, 2], 5)
    a = self_attn(x, mask=mask, return_weights=weights)
    b = cross(x, context=x, mask=mask, return_weights=weights)
    assert isinstance(a, Attended) == weights == isinstance(b, Attended)
    a, a_weights = context_and_weights(a)
    b, b_weights = context_and_weights(b)
    assert torch.equal(a, b)
    if weights:
        assert torch.equal(a_weights, b_weights)


@pytest.mark.parametrize("kdim", [None, 5])
@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_reproduces_multihead_attention(kdim, bias):
    mha = torch.nn.MultiheadAttention(8, 2, bias=bias, kdim=kdim, vdim=kdim, batch_first=True).eval()
    x = torch.randn(3, 4, 8)
    memory = torch.randn(3, 6, kdim or 8)
    padding = masks.padding([6, 2, 4], 6)  # (B, 1, Tk), True = may attend
    want, want_w = mha(x, memory, memory, key_padding_mask=~padding[:, 0], average_attn_weights=False)
    got = CrossAttention.from_torch(mha)(x, memory, mask=padding, return_weights=True)
    torch.testing.assert_close(got.context, want, rtol=1.3e-6, atol=1e-5)
    torch.testing.assert_close(got.weights, want_w, rtol=1.3e-6, atol=1e-5)
    if kdim is None:
        self_want, _ = mha(x, x, x, need_weights=False, attn_mask=~masks.causal(4))
        self_got = SelfAttention.from_torch(mha, causal=True)(x)
        torch.testing.assert_close(self_got, self_want, rtol=1.3e-6, atol=1e-5)


def test_from_torch_refuses_what_has_no_equivalent():
    with pytest.raises(ValueError, match="add_bias_kv"):
        CrossAttention.from_torch(torch.nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(TypeError, match="MultiheadAttention"):
        CrossAttention.from_torch(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("self_or_cross", ["self", "cross"])
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_every_score_self_cross_heads_mask(name, self_or_cross, heads, masked):
    attn = (_self(name, heads) if self_or_cross == "self" else _cross(name, heads)).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    context = x if self_or_cross == "self" else torch.randn(2, 4, 9, dtype=torch.float64, requires_grad=True)
    mask = None
    if masked:
        mask = masks.padding([context.shape[1], 1], context.shape[1]).expand(2, 3, -1).clone()
        mask[0, 1] = False  # a fully masked row
    inputs = (x,) if self_or_cross == "self" else (x, context)

    def run(*tensors):
        if self_or_cross == "self":
            return attn(tensors[0], mask=mask)
        return attn(tensors[0], tensors[1], mask=mask)

    assert torch.autograd.gradcheck(run, inputs)
    if masked:
        (grad,) = torch.autograd.grad(run(*inputs).sum(), x)
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("heads", [1, 3])
def test_fully_masked_query_row_gets_zero_attention_output_and_grad(name, heads):
    attn = _cross(name, heads, project=False)
    x = torch.randn(2, 3, 6, requires_grad=True)
    memory = torch.randn(2, 4, attn.context_dim, requires_grad=True)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[1, 2] = False
    for weights in (False, True):
        out, _ = context_and_weights(attn(x, memory, mask=mask, return_weights=weights))
        assert torch.equal(out[1, 2], torch.zeros_like(out[1, 2]))
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.equal(grad[1, 2], torch.zeros_like(grad[1, 2]))


@pytest.mark.parametrize("name", ["scaled_dot", "additive", "cosine", "general"])
def test_self_attention_without_positions_is_permutation_equivariant(name):
    attn = _self(name, 3).double()
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    perm = torch.randperm(7)
    torch.testing.assert_close(attn(x[:, perm]), attn(x)[:, perm])


@pytest.mark.parametrize("name", SCORES)
def test_one_head_module_equals_plain_attend(name):
    attn = _cross(name, 1).double()
    x, memory = torch.randn(2, 4, 6, dtype=torch.float64), torch.randn(2, 5, 9, dtype=torch.float64)
    q, k, v = (
        torch.nn.functional.linear(t, *attn.projection(w))
        for t, w in ((x, "query"), (memory, "key"), (memory, "value"))
    )
    want = attn.out_proj(attnlab.attend(q, k, v, attn.score).context)
    torch.testing.assert_close(attn(x, memory), want)


@pytest.mark.parametrize("name", SCORES)
def test_causal_self_attention_ignores_the_future(name):
    attn = _self(name, 2, causal=True).double()
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 6, dtype=torch.float64)
    torch.testing.assert_close(attn(y)[:, :4], attn(x)[:, :4], rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", SCORES)
def test_kv_cache_decoding_equals_full_causal_pass(name):
    attn = _self(name, 3, causal=True).eval()
    x = torch.randn(2, 7, 6)
    full = attn(x)
    cache = KVCache()
    with torch.no_grad():
        steps = [attn(x[:, :3], cache=cache)] + [attn(x[:, t : t + 1], cache=cache) for t in range(3, 7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.length == 7


def test_kv_cache_refuses_training_graphs():
    attn = _self("scaled_dot", 2, causal=True)
    with pytest.raises(RuntimeError, match="inference"):
        attn(torch.randn(1, 2, 6), cache=KVCache())


@pytest.mark.parametrize("name", SCORES)
def test_precomputed_memory_equals_direct_call(name):
    attn = _cross(name, 3)
    x, memory = torch.randn(2, 4, 6), torch.randn(2, 5, 9)
    mask = masks.padding([5, 3], 5)
    stored = attn.precompute(memory, mask)
    torch.testing.assert_close(attn(x, stored, mask=mask), attn(x, memory, mask=mask))
    step = attn(x[:, :1], stored, mask=mask)  # one decoder step reuses the prepared keys
    torch.testing.assert_close(step, attn(x, memory, mask=mask)[:, :1])


def test_nan_in_padding_does_not_leak_through_projections():
    attn = _cross("additive", 2)
    x, memory = torch.randn(2, 3, 6), torch.randn(2, 5, 9, requires_grad=True)
    mask = masks.padding([5, 3], 5)
    poisoned = memory.detach().clone()
    poisoned[1, 3:] = float("nan")
    poisoned.requires_grad_()
    out = attn(x, poisoned, mask=mask)
    torch.testing.assert_close(out, attn(x, memory, mask=mask))
    out.sum().backward()
    assert not any(p.grad.isnan().any() for p in attn.parameters())


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: CrossAttention(10, heads=3), ValueError, r"heads \(3\) must divide dim \(10\)"),
        (lambda: CrossAttention(0), ValueError, "dim must be a positive int"),
        (lambda: CrossAttention(8, 6, 2, "dot", project=False), ValueError, "query_dim == key_dim"),
        (lambda: CrossAttention(8, heads=2, score="nope"), KeyError, "unknown score 'nope'"),
        (lambda: CrossAttention(8, dropout=1.5), ValueError, "dropout must be in"),
        (lambda: CrossAttention(8, score="location"), TypeError, "max_len"),
    ],
)
def test_bad_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_bad_calls_name_argument_expected_and_received():
    attn = CrossAttention(6, 9, 3)
    x, memory = torch.randn(2, 4, 6), torch.randn(2, 5, 9)
    cases = [
        (lambda: attn(torch.randn(2, 4, 7), memory), ValueError, r"x must be \[B, T, 6\]; received shape \(2, 4, 7\)"),
        (lambda: attn(x, torch.randn(2, 5, 8)), ValueError, r"context must be \[B, T, 9\]"),
        (lambda: attn(x, torch.randn(3, 5, 9)), ValueError, "context batch must match x's 2"),
        (lambda: attn(x, memory, mask=torch.ones(2, 4, 5)), TypeError, "mask must be a bool tensor"),
        (lambda: attn(x, memory, mask=torch.ones(2, 4, 5, dtype=torch.int64)), TypeError, "mask must be a bool"),
        (lambda: attn(x, memory, mask=torch.ones(2, 4, 6, dtype=torch.bool)), ValueError, "does not broadcast"),
        (lambda: attn(x, "memory"), TypeError, "context must be a Tensor"),
        (lambda: attn(x.long(), memory), TypeError, "x must be a floating-point tensor"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
