"""Inductor (the default ``torch.compile`` backend) on a representative few, forward and backward against eager;
the traced additive kernel against the eager chunked one. Every module runs through Inductor with ``-m slow``."""

from __future__ import annotations

import pytest
import torch

from attnlab import CrossAttention, SelfAttention, masks
from attnlab.scores.additive import _AdditiveLogits, _AdditiveLogitsTraced
from attnlab.vision import available_blocks, get_block
from conftest import SCORE_OPTIONS, SCORES


def _compare_forward_backward(module: torch.nn.Module, *inputs: torch.Tensor, rtol=1.3e-6, atol=1e-5) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True)
    got_inputs = [t.clone().requires_grad_() if t.dtype.is_floating_point else t for t in inputs]
    want_inputs = [t.clone().requires_grad_() if t.dtype.is_floating_point else t for t in inputs]
    got, want = compiled(*got_inputs), module(*want_inputs)
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    got.square().sum().backward()
    want.square().sum().backward()
    for g, w in zip(got_inputs, want_inputs, strict=True):
        if w.dtype.is_floating_point:
            torch.testing.assert_close(g.grad, w.grad, rtol=rtol, atol=atol)
    for (name, g), (_, w) in zip(compiled.named_parameters(), module.named_parameters(), strict=True):
        torch.testing.assert_close(g.grad, w.grad, rtol=rtol, atol=atol, msg=name)
        g.grad = w.grad = None


class _Padded(torch.nn.Module):
    def __init__(self, attn: torch.nn.Module, cross: bool) -> None:
        super().__init__()
        self.attn, self.cross = attn, cross

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        mask = keep[:, None, :]
        return self.attn(x, context, mask=mask) if self.cross else self.attn(x, mask=mask)


def _padded_case(score: str, cross: bool):
    options = SCORE_OPTIONS.get(score)
    attn = (
        CrossAttention(16, 12, 4, score, score_options=options)
        if cross
        else SelfAttention(16, 4, score, score_options=options)
    )
    x = torch.randn(2, 9, 16)
    context = torch.randn(2, 11, 12) if cross else x
    keep = masks.padding([context.shape[1], 4], context.shape[1])[:, 0]  # (B, Tk)
    return _Padded(attn, cross), (x, context, keep)


REPRESENTATIVE = [("scaled_dot", False), ("additive", True)]


@pytest.mark.parametrize("score, cross", REPRESENTATIVE, ids=["self-scaled_dot", "cross-additive"])
def test_inductor_equals_eager(score, cross):
    module, inputs = _padded_case(score, cross)
    _compare_forward_backward(module, *inputs)


def test_inductor_vision_block_equals_eager():
    block = get_block("botnet", 16).train()
    with torch.no_grad():  # the block starts as the identity (a zero gate): open it so attention is compared
        for parameter in block.parameters():
            if not parameter.any():
                parameter.normal_()
    # Inductor fuses batch norm and the convolutions' epilogues: float32 rounding differs by ~2e-5 here.
    _compare_forward_backward(block, torch.randn(2, 16, 6, 7), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_inductor_every_score(score, cross):
    module, inputs = _padded_case(score, cross)
    _compare_forward_backward(module, *inputs)


@pytest.mark.slow
@pytest.mark.parametrize("name", available_blocks())
def test_inductor_every_vision_block(name):
    _compare_forward_backward(get_block(name, 16).eval(), torch.randn(2, 16, 8, 8), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("heads", [1, 3])
def test_traced_additive_kernel_equals_the_chunked_one_eagerly(heads):
    """The broadcast form that compile traces gives the eager kernel's logits and gradients (float64), and passes
    gradcheck; chunk_bytes=1 makes the eager kernel walk one query row at a time."""
    q = torch.randn(2, heads, 5, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, heads, 7, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(heads, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, heads, 5, 7, dtype=torch.float64)
    traced = _AdditiveLogitsTraced.apply(q, k, v)
    chunked = _AdditiveLogits.apply(q, k, v, 1)
    torch.testing.assert_close(traced, chunked, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(traced, (q, k, v), g), torch.autograd.grad(chunked, (q, k, v), g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(_AdditiveLogitsTraced.apply, (q, k, v))
