"""Compile- and export-clean attention: no graph break, ``fullgraph=True`` equals eager, ``torch.export`` with a
dynamic length equals eager at other lengths.

The grid is every registered score x {self, cross} x {1, 3 heads} x {no mask, padding, causal} x {weights off,
on}. In the default suite every case is traced by Dynamo with ``fullgraph=True`` on the ``aot_eager`` backend
(Dynamo and AOT autograd, forward and backward, without Inductor's code generation) and checked against eager,
and ``torch._dynamo.explain`` counts its graph breaks; ``torch.export`` runs on the padding-mask half of the grid.
The rest of the exports run with ``-m slow``; Inductor compiles a representative few (``test_inductor.py``).
"""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from attnlab import CrossAttention, SelfAttention, masks
from attnlab.core import Attended, context_and_weights
from conftest import SCORE_OPTIONS, SCORES

DIM, MAX_LEN = 12, 40
MASKS = ["none", "padding", "causal"]


def _module(score: str, kind: str, heads: int, mask: str) -> torch.nn.Module:
    options = SCORE_OPTIONS.get(score)
    if kind == "self":
        attn = SelfAttention(DIM, heads, score, causal=mask == "causal", score_options=options)
    else:
        attn = CrossAttention(DIM, DIM + 4, heads, score, score_options=options)
    return attn.eval()


class _Call(torch.nn.Module):
    """One attention call as a module of tensors only: ``(x, context, lengths) -> context [, weights]``."""

    def __init__(self, attn: torch.nn.Module, kind: str, mask: str, weights: bool) -> None:
        super().__init__()
        self.attn, self.kind, self.mask, self.weights = attn, kind, mask, weights

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor):
        mask = None
        if self.mask == "padding":
            mask = keep[:, None, :]  # (B, 1, Tk) key padding
        elif self.mask == "causal" and self.kind == "cross":
            mask = masks.causal(x.shape[1], context.shape[1], device=x.device)  # (Tq, Tk), end-aligned
        if self.kind == "self":
            out = self.attn(x, mask=mask, return_weights=self.weights)
        else:
            out = self.attn(x, context, mask=mask, return_weights=self.weights)
        return out


def _inputs(kind: str, tq: int, tk: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tk = tq if kind == "self" else tk
    x = torch.randn(batch, tq, DIM)
    context = torch.randn(batch, tk, DIM + 4 if kind == "cross" else DIM)
    keep = torch.arange(tk)[None, :] < torch.tensor([tk, max(1, tk - 3)])[:, None]  # (B, Tk): the second is padded
    return x, context, keep


def _assert_same(got, want) -> None:
    assert isinstance(got, Attended) == isinstance(want, Attended)
    got, got_weights = context_and_weights(got)
    want, want_weights = context_and_weights(want)
    torch.testing.assert_close(got, want, rtol=1.3e-6, atol=1e-5)
    if want_weights is not None:
        torch.testing.assert_close(got_weights, want_weights, rtol=1.3e-6, atol=1e-5)


GRID = [
    (score, kind, heads, mask, weights)
    for score in SCORES
    for kind in ("self", "cross")
    for heads in (1, 3)
    for mask in MASKS
    for weights in (False, True)
]


def _ids(case) -> str:
    score, kind, heads, mask, weights = case
    return f"{score}-{kind}-h{heads}-{mask}-{'weights' if weights else 'context'}"


@pytest.mark.parametrize("case", GRID, ids=_ids)
def test_traces_in_one_graph_and_matches_eager_forward_and_backward(case):
    score, kind, heads, mask, weights = case
    torch._dynamo.reset()
    call = _Call(_module(score, kind, heads, mask), kind, mask, weights)
    x, context, keep = _inputs(kind, 7, 9)
    explained = torch._dynamo.explain(call)(x, context, keep)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons

    compiled = torch.compile(call, fullgraph=True, backend="aot_eager", dynamic=False)
    leaves = [t.clone().requires_grad_() for t in (x, context)]
    got = compiled(*leaves, keep)
    want_leaves = [t.clone().requires_grad_() for t in (x, context)]
    want = call(*want_leaves, keep)
    _assert_same(got, want)
    # Backward through the compiled graph equals eager (the guards' fills have zero gradient where they fill).
    got_out, _ = context_and_weights(got)
    want_out, _ = context_and_weights(want)
    got_out.square().sum().backward()
    want_out.square().sum().backward()
    for got_leaf, want_leaf in zip(leaves, want_leaves, strict=True):
        if want_leaf.grad is None:  # self-attention reads x only
            assert got_leaf.grad is None
        else:
            torch.testing.assert_close(got_leaf.grad, want_leaf.grad, rtol=1.3e-6, atol=1e-5)


def _export_and_compare(case) -> None:
    score, kind, heads, mask, weights = case
    call = _Call(_module(score, kind, heads, mask), kind, mask, weights)
    tq, tk = Dim("tq", min=2, max=MAX_LEN), Dim("tk", min=2, max=MAX_LEN)
    x, context, keep = _inputs(kind, 7, 9)
    if kind == "self":
        shapes = ({1: tq}, {1: tq}, {1: tq})
    else:
        shapes = ({1: tq}, {1: tk}, {1: tk})
    program = torch.export.export(call, (x, context, keep), dynamic_shapes=shapes)
    for length_q, length_k in ((5, 11), (16, 3)):
        inputs = _inputs(kind, length_q, length_k)
        _assert_same(program.module()(*inputs), call(*inputs))


EXPORT_DEFAULT = [case for case in GRID if case[3] == "padding"]


@pytest.mark.parametrize("case", EXPORT_DEFAULT, ids=_ids)
def test_exports_with_a_dynamic_length_and_matches_eager_at_other_lengths(case):
    _export_and_compare(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", [case for case in GRID if case not in EXPORT_DEFAULT], ids=_ids)
def test_exports_the_rest_of_the_grid(case):
    _export_and_compare(case)
