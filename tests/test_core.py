"""attend(): agreement with the float64 oracle on every path, and the safety promises of RELIABILITY.md."""

from __future__ import annotations

import math

import pytest
import torch

import attnlab
from attnlab import masks
from attnlab.core import attend, attend_prepared
from conftest import SCORES, build_score
from reference import reference_attend


def _inputs(batch=2, heads=3, tq=4, tk=5, dq=6, dk=6, dv=3, dtype=torch.float64, grad=False):
    q = torch.randn(batch, heads, tq, dq, dtype=dtype, requires_grad=grad)
    k = torch.randn(batch, heads, tk, dk, dtype=dtype, requires_grad=grad)
    v = torch.randn(batch, heads, tk, dv, dtype=dtype, requires_grad=grad)
    return q, k, v


def _random_mask(batch, heads, tq, tk, full_row=False):
    mask = torch.rand(batch, heads, tq, tk) > 0.4
    mask[..., 0] |= ~mask.any(-1)  # at least one key per row
    if full_row:
        mask[0, 0, 1] = False
    return mask


@pytest.fixture(params=["eager shortcuts", "branch-free"])
def guards(request, monkeypatch):
    """Run a promise test with the eager CPU shortcuts and with the branch-free guards that compile/export use."""
    if request.param == "branch-free":
        monkeypatch.setattr(attnlab.core, "eager_on_cpu", lambda tensor: False)
    return request.param


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_float64_reference(name, weights, masked):
    score = build_score(name, 6, 6, heads=3)
    q, k, v = _inputs()
    mask = _random_mask(2, 3, 4, 5, full_row=True) if masked else None
    got = attend(q, k, v, score, mask, return_weights=weights)
    want_context, want_weights = reference_attend(q, k, v, score, mask)
    torch.testing.assert_close(got.context, want_context, rtol=1e-7, atol=1e-7)
    if weights:
        torch.testing.assert_close(got.weights, want_weights, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", SCORES)
def test_float32_within_tolerance_of_reference(name):
    score = build_score(name, 8, 8, heads=2, dtype=torch.float32)
    q, k, v = _inputs(heads=2, dq=8, dk=8, dtype=torch.float32)
    mask = _random_mask(2, 2, 4, 5)
    got = attend(q, k, v, score, mask)
    want, _ = reference_attend(q, k, v, score, mask)
    torch.testing.assert_close(got.context.double(), want, rtol=1.3e-6, atol=1e-5)


def test_three_dim_inputs_are_one_head():
    q, k, v = (t[:, 0] for t in _inputs())
    three = attend(q, k, v, "scaled_dot", return_weights=True)
    four = attend(q[:, None], k[:, None], v[:, None], "scaled_dot", return_weights=True)
    assert three.context.shape == (2, 4, 3) and three.weights.shape == (2, 4, 5)
    torch.testing.assert_close(three.context, four.context[:, 0])


def test_hand_computed_scaled_dot():
    # q = [1, 0], keys [1, 0] and [0, 1]: logits 1/sqrt2 and 0.
    q = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    v = torch.tensor([[[10.0], [20.0]]], dtype=torch.float64)
    p0 = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)
    got = attend(q, k, v, "scaled_dot", return_weights=True)
    torch.testing.assert_close(got.weights, torch.tensor([[[p0, 1 - p0]]], dtype=torch.float64))
    torch.testing.assert_close(got.context, torch.tensor([[[10 * p0 + 20 * (1 - p0)]]], dtype=torch.float64))


@pytest.mark.parametrize("name", ["dot", "scaled_dot", "general", "cosine"])
def test_fused_and_dense_paths_agree(name):
    score = build_score(name, 8, 8, heads=2, dtype=torch.float32)
    q, k, v = _inputs(heads=2, dq=8, dk=8, dtype=torch.float32, grad=True)
    mask = _random_mask(2, 2, 4, 5, full_row=True)
    fused = attend(q, k, v, score, mask)
    dense = attend(q, k, v, score, mask, return_weights=True)
    assert fused.path == "sdpa" and dense.path == "dense"
    torch.testing.assert_close(fused.context, dense.context, rtol=1.3e-6, atol=1e-5)
    grads_fused = torch.autograd.grad(fused.context.square().sum(), (q, k, v))
    grads_dense = torch.autograd.grad(dense.context.square().sum(), (q, k, v))
    for a, b in zip(grads_fused, grads_dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_path_is_inspectable():
    q, k, v = _inputs()
    assert attend(q, k, v).path == "sdpa"
    assert "weights requested" in attend(q, k, v, return_weights=True).reason
    additive = build_score("additive", 6, 6, heads=3)
    assert "not a dot product" in attend(q, k, v, additive).reason


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("weights", [False, True])
def test_fully_masked_row_and_item_give_zero_context_weights_and_grad(name, weights, guards):
    score = build_score(name, 6, 6, heads=3)
    q, k, v = _inputs(grad=True)
    mask = _random_mask(2, 3, 4, 5)
    mask[0, 1, 2] = False  # one fully masked query row
    mask[1] = False  # one all-padding batch item
    out = attend(q, k, v, score, mask, return_weights=weights)
    assert not out.context.isnan().any()
    assert torch.equal(out.context[0, 1, 2], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(out.context[1], torch.zeros_like(out.context[1]))
    if weights:
        assert torch.equal(out.weights[0, 1, 2], torch.zeros(5, dtype=torch.float64))
        assert torch.equal(out.weights[~mask], torch.zeros_like(out.weights[~mask]))
    (out.context.sum() + (0 if out.weights is None else out.weights.sum())).backward()
    assert torch.equal(q.grad[0, 1, 2], torch.zeros(6, dtype=torch.float64))
    assert torch.equal(q.grad[1], torch.zeros_like(q.grad[1]))
    assert not any(t.grad.isnan().any() for t in (q, k, v) if t.grad is not None)


@pytest.mark.parametrize("name", SCORES)
def test_masked_keys_and_values_change_nothing_and_nan_does_not_leak(name, guards):
    score = build_score(name, 6, 6, heads=3)
    q, k, v = _inputs(tk=6)
    lengths = torch.tensor([4, 6])
    mask = masks.padding(lengths, 6)  # (B, 1, Tk)
    base = attend(q, k, v, score, mask).context
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 4:] += 1e4
    v2[0, :, 4:] -= 1e4
    torch.testing.assert_close(attend(q, k2, v2, score, mask).context, base, rtol=0, atol=0)
    k2[0, :, 4:] = float("nan")
    v2[0, :, 4:] = float("nan")
    for weights in (False, True):
        out = attend(q, k2, v2, score, mask, return_weights=weights)
        assert not out.context.isnan().any()
        same_path = attend(q, k, v, score, mask, return_weights=weights).context
        torch.testing.assert_close(out.context, same_path, rtol=0, atol=0)


@pytest.mark.parametrize("name", SCORES)
def test_appending_padding_does_not_change_output(name):
    score = build_score(name, 6, 6, heads=3)
    q, k, v = _inputs(tk=5)
    base = attend(q, k, v, score).context
    k_pad = torch.cat([k, torch.randn(2, 3, 3, 6, dtype=torch.float64)], dim=2)
    v_pad = torch.cat([v, torch.randn(2, 3, 3, 3, dtype=torch.float64)], dim=2)
    padded = attend(q, k_pad, v_pad, score, masks.padding([5, 5], 8)).context
    torch.testing.assert_close(padded, base, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("weights", [False, True])
def test_nan_in_unmasked_input_propagates(name, weights, guards):
    score = build_score(name, 6, 6, heads=3)
    q, k, v = _inputs()
    v[0, 0, 2, 1] = float("nan")
    out = attend(q, k, v, score, return_weights=weights).context
    assert out[0, 0, :, 1].isnan().all()  # every query reads value 2 (non-zero weight)
    q2 = q.clone()
    q2[1, 2, 3, 0] = float("nan")
    out = attend(q2, k, v, score, return_weights=weights).context
    if score.uses_keys or name == "location":
        assert out[1, 2, 3].isnan().all()


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("case", ["empty rows", "nan masked", "nan query", "nan key causal", "clean"])
def test_branch_free_guards_equal_the_eager_shortcuts(name, weights, case, monkeypatch):
    """The eager CPU shortcuts (skip the NaN fills and empty-row fills when a reduction says they are not needed)
    give bit for bit what the branch-free form, which compile and export trace, gives; gradients too."""
    score = build_score(name, 6, 6, heads=3)
    q, k, v = _inputs(tq=5, tk=5)
    mask, causal = None, False
    if case == "empty rows":
        mask = _random_mask(2, 3, 5, 5)
        mask[0, 1, 2] = False
    elif case == "nan masked":
        mask = masks.padding([3, 5], 5)
        k[0, :, 3:] = v[0, :, 3:] = float("nan")
    elif case == "nan query":
        q[1, 2, 3, 0] = float("nan")
    elif case == "nan key causal":
        k[0, 1, 2, 4] = float("nan")
        causal = True

    def run():
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out = attend(*leaves, score, mask, causal=causal, return_weights=weights)
        total = out.context.nan_to_num().sum() + (0 if out.weights is None else out.weights.nan_to_num().sum())
        total.backward()
        return out.context, out.weights, [t.grad for t in leaves]

    shortcut = run()
    monkeypatch.setattr(attnlab.core, "eager_on_cpu", lambda tensor: False)
    branch_free = run()
    torch.testing.assert_close(branch_free[0], shortcut[0], rtol=0, atol=0, equal_nan=True)
    if weights:
        torch.testing.assert_close(branch_free[1], shortcut[1], rtol=0, atol=0, equal_nan=True)
    for got, want in zip(branch_free[2], shortcut[2], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_bool_mask_equals_neg_inf_bias():
    q, k, v = _inputs()
    mask = _random_mask(2, 3, 4, 5, full_row=True)
    bias = torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, float("-inf"))
    for weights in (False, True):
        a = attend(q, k, v, mask=mask, return_weights=weights)
        b = attend(q, k, v, bias=bias, return_weights=weights)
        torch.testing.assert_close(a.context, b.context, rtol=1e-12, atol=1e-12)
        assert not b.context.isnan().any()


def test_bias_adds_to_logits():
    q, k, v = _inputs()
    bias = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    score = build_score("scaled_dot", 6, 6)
    for weights in (False, True):
        got = attend(q, k, v, score, bias=bias, return_weights=weights).context
        want_weights = ((q @ k.transpose(-1, -2)) / math.sqrt(6) + bias).softmax(-1)
        torch.testing.assert_close(got, want_weights @ v)


@pytest.mark.parametrize("tq,tk", [(5, 5), (3, 7), (1, 6)])
@pytest.mark.parametrize("weights", [False, True])
def test_causal_flag_equals_explicit_end_aligned_mask(tq, tk, weights):
    q, k, v = _inputs(tq=tq, tk=tk)
    flag = attend(q, k, v, causal=True, return_weights=weights).context
    explicit = attend(q, k, v, mask=masks.causal(tq, tk), return_weights=weights).context
    torch.testing.assert_close(flag, explicit, rtol=1e-12, atol=1e-12)


def test_causal_output_ignores_the_future():
    q, k, v = _inputs(tq=6, tk=6)
    base = attend(q, k, v, causal=True).context
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 4:] = torch.randn_like(k2[:, :, 4:])
    v2[:, :, 4:] = torch.randn_like(v2[:, :, 4:])
    changed = attend(q, k2, v2, causal=True).context
    torch.testing.assert_close(changed[:, :, :4], base[:, :, :4], rtol=0, atol=0)


@pytest.mark.parametrize("tq, tk", [(5, 5), (3, 5), (1, 5)])
@pytest.mark.parametrize("weights", [False, True])
def test_causal_and_mask_are_merged_in_the_core(tq, tk, weights):
    """``causal=True`` with a mask is ``mask & masks.causal(tq, tk)`` (end-aligned), on both paths."""
    q, k, v = _inputs(tq=tq, tk=tk)
    mask = _random_mask(2, 1, 1, tk)  # key padding, broadcast over heads and queries
    merged = attend(q, k, v, mask=mask, causal=True, return_weights=weights)
    explicit = attend(q, k, v, mask=mask & masks.causal(tq, tk), return_weights=weights)
    torch.testing.assert_close(merged.context, explicit.context, rtol=0, atol=0)
    if weights:
        torch.testing.assert_close(merged.weights, explicit.weights, rtol=0, atol=0)


@pytest.mark.parametrize("weights", [False, True])
def test_empty_sequences_give_zero_context(weights):
    q, k, v = _inputs(tk=0)
    out = attend(q, k, v, return_weights=weights)
    assert out.context.shape == (2, 3, 4, 3) and torch.equal(out.context, torch.zeros_like(out.context))
    assert out.path == "empty"
    q, k, v = _inputs(tq=0)
    assert attend(q, k, v).context.shape == (2, 3, 0, 3)


def test_broadcast_stride_zero_mask():
    q, k, v = _inputs()
    row = torch.tensor([True, False, True, True, False])
    mask = row.expand(2, 3, 4, 5)  # stride 0 everywhere but the last axis
    dense = attend(q, k, v, mask=mask.clone()).context
    torch.testing.assert_close(attend(q, k, v, mask=mask).context, dense, rtol=0, atol=0)


def test_weights_are_a_distribution_with_exact_zeros():
    q, k, v = _inputs()
    mask = _random_mask(2, 3, 4, 5)
    w = attend(q, k, v, mask=mask, return_weights=True).weights
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 4, dtype=torch.float64))
    assert (w >= 0).all() and torch.equal(w[~mask], torch.zeros_like(w[~mask]))


def test_equal_keys_give_mean_of_values_and_one_key_its_value():
    q, _, v = _inputs()
    k = torch.randn(2, 3, 1, 6, dtype=torch.float64).expand(2, 3, 5, 6)
    torch.testing.assert_close(attend(q, k, v).context, v.mean(2, keepdim=True).expand(2, 3, 4, 3))
    one = attend(q, k[:, :, :1], v[:, :, :1]).context
    torch.testing.assert_close(one, v[:, :, :1].expand(2, 3, 4, 3))


def test_dropout_only_when_asked():
    q, k, v = _inputs()
    torch.manual_seed(0)
    a = attend(q, k, v, dropout=0.5, return_weights=True)
    assert not torch.allclose(a.context, attend(q, k, v).context)
    torch.testing.assert_close(a.weights.sum(-1), torch.ones(2, 3, 4, dtype=torch.float64))


def _naive_low_precision(q, k, v, score, mask):
    """The same math done entirely in the low precision: the yardstick of FlashAttention's rule."""
    logits = score(q, k)  # in the low dtype
    logits = logits.masked_fill(~mask, float("-inf"))
    return logits.softmax(-1) @ v


@pytest.mark.parametrize("name", ["scaled_dot", "general", "additive", "cosine"])
@pytest.mark.parametrize("weights", [False, True])
def test_bfloat16_error_within_twice_naive_error(name, weights):
    score64 = build_score(name, 16, 16, heads=2)
    score16 = build_score(name, 16, 16, heads=2, dtype=torch.bfloat16)
    score16.load_state_dict({key: t.to(torch.bfloat16) for key, t in score64.state_dict().items()})
    score64.load_state_dict({key: t.double() for key, t in score16.state_dict().items()})
    q, k, v = _inputs(batch=2, heads=2, tq=16, tk=24, dq=16, dk=16, dv=16)
    q, k, v = (t.to(torch.bfloat16).double() for t in (q, k, v))  # representable in both
    mask = _random_mask(2, 2, 16, 24)
    grads = []
    for dtype, score in ((torch.float64, score64), (torch.bfloat16, score16)):
        leaves = [t.detach().to(dtype).clone().requires_grad_() for t in (q, k, v)]
        out = attend(*leaves, score, mask, return_weights=weights).context
        out.backward(torch.ones_like(out))
        grads.append((out.detach().double(), [t.grad.double() for t in leaves]))
    (ref_out, ref_grads), (out, out_grads) = grads
    leaves = [t.detach().to(torch.bfloat16).clone().requires_grad_() for t in (q, k, v)]
    naive = _naive_low_precision(*leaves, score16, mask)
    naive.backward(torch.ones_like(naive))
    naive_err = (naive.detach().double() - ref_out).abs().max()
    assert (out - ref_out).abs().max() <= 2 * naive_err + 1e-5
    for got, want, leaf in zip(out_grads, ref_grads, leaves, strict=True):
        assert (got - want).abs().max() <= 3 * (leaf.grad.double() - want).abs().max() + 1e-4


def test_half_precision_logits_do_not_overflow():
    q = torch.full((1, 1, 2, 64), 40.0, dtype=torch.float16)  # q.k = 102400 > fp16 max
    k = torch.full((1, 1, 3, 64), 40.0, dtype=torch.float16)
    v = torch.randn(1, 1, 3, 4).half()
    for name in ("dot", "scaled_dot"):
        out = attend(q, k, v, name, return_weights=True)
        assert torch.isfinite(out.context).all() and out.weights.dtype == torch.float32


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck(name, masked):
    score = build_score(name, 4, 4, heads=2)
    q, k, v = _inputs(batch=1, heads=2, tq=3, tk=4, dq=4, dk=4, dv=2, grad=True)
    mask = _random_mask(1, 2, 3, 4, full_row=True) if masked else None
    for weights in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, k, v, w=weights: attend(q, k, v, score, mask, return_weights=w).context, (q, k, v)
        )
    # The score's own parameters (the additive score has a hand-written backward).
    names = [n for n, _ in score.named_parameters()]
    if names:
        q0, k0 = q.detach(), k.detach()
        assert torch.autograd.gradcheck(
            lambda *values: torch.func.functional_call(score, dict(zip(names, values, strict=True)), (q0, k0)),
            tuple(p.detach().clone().requires_grad_() for p in score.parameters()),
        )


def test_attend_prepared_is_what_attend_calls():
    q, k, v = _inputs()
    score = build_score("cosine", 6, 6, heads=3)
    a = attend(q, k, v, score).context
    b = attend_prepared(score.prepare_query(q), score.prepare_key(k), v, score).context
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_public_api_names():
    for name in ("attend", "get_score", "CrossAttention", "SelfAttention", "masks", "Attended"):
        assert hasattr(attnlab, name)
    assert {"dot", "scaled_dot", "general", "additive", "location", "cosine"} <= set(attnlab.available_scores())


@pytest.mark.parametrize("qk_dim, v_dim", [(8, 8), (4, 16), (16, 4)])
def test_fused_path_uses_a_fused_kernel_for_unequal_widths(qk_dim, v_dim):
    # SDPA silently takes its quadratic math path when query/key and value widths differ; the core pads.
    q, k = torch.randn(1, 2, 64, qk_dim), torch.randn(1, 2, 64, qk_dim)
    v = torch.randn(1, 2, 64, v_dim)
    with torch.profiler.profile() as prof:
        out = attend(q, k, v)
    ops = {event.name for event in prof.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops
    assert "aten::_scaled_dot_product_attention_math" not in ops
    torch.testing.assert_close(out.context, attend(q, k, v, return_weights=True).context, rtol=1e-5, atol=1e-6)


def test_subpackages_are_reachable_from_the_top_level():
    assert callable(attnlab.vision.get_block) and hasattr(attnlab.seq, "Transformer")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        attnlab.nope  # noqa: B018
