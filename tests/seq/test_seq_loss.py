"""Token cross-entropy: hand-computed values, padding ignored, sum and count for global normalization."""

from __future__ import annotations

import math

import pytest
import torch

from attnlab.seq import token_cross_entropy


def test_hand_computed_value_and_padding_ignored():
    # two classes, uniform logits -> each real token costs log 2; the padded one (target 0) costs nothing
    logits = torch.zeros(1, 3, 2)
    logits[0, 1] = torch.tensor([0.0, math.log(3.0)])  # p(class 1) = 3/4
    targets = torch.tensor([[1, 1, 0]])
    loss = token_cross_entropy(logits, targets, pad_id=0)
    torch.testing.assert_close(loss.total, torch.tensor(math.log(2.0) - math.log(0.75)))
    assert loss.tokens.item() == 2
    torch.testing.assert_close(loss.mean(), loss.total / 2)


def test_padded_positions_get_no_gradient_and_any_logits():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    targets = torch.tensor([[3, 4, 0, 0], [1, 2, 3, 0]])
    loss = token_cross_entropy(logits, targets)
    loss.total.backward()
    assert (logits.grad[targets == 0] == 0).all() and (logits.grad[targets != 0] != 0).any()
    changed = logits.detach().clone()
    changed[targets == 0] = 1e4
    torch.testing.assert_close(token_cross_entropy(changed, targets).total, loss.total.detach())


def test_sum_and_count_combine_across_shards_like_one_batch():
    logits, targets = torch.randn(4, 5, 7), torch.randint(0, 7, (4, 5))
    targets[0, 2:] = 0
    targets[3, 1:] = 0
    whole = token_cross_entropy(logits, targets)
    parts = [token_cross_entropy(logits[i : i + 2], targets[i : i + 2]) for i in (0, 2)]
    global_mean = sum(p.total for p in parts) / sum(p.tokens for p in parts)
    torch.testing.assert_close(global_mean, whole.mean())
    assert not torch.allclose(sum(p.mean() for p in parts) / 2, whole.mean())  # why the count is returned


def test_no_tokens_gives_zero_not_nan_and_half_precision_is_upcast():
    empty = token_cross_entropy(torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))
    assert empty.mean().item() == 0.0 and empty.tokens.item() == 0
    half = token_cross_entropy(torch.randn(2, 3, 4).bfloat16(), torch.tensor([[1, 2, 3], [1, 0, 0]]))
    assert half.total.dtype == torch.float32


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"targets must be \[B, T\]"):
        token_cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="logits"):
        token_cross_entropy(torch.randn(2, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="targets"):
        token_cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, 3))
