"""Masks: one convention (bool, True = may attend), checked against hand-written tables."""

from __future__ import annotations

import pytest
import torch

from attnlab import masks


def _t(rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_padding():
    got = masks.padding([2, 0, 3], 4)
    assert got.shape == (3, 1, 4) and got.dtype == torch.bool
    assert torch.equal(got[:, 0], _t([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]]))
    assert masks.padding(torch.tensor([1, 2])).shape == (2, 1, 2)


def test_causal_square_and_end_aligned():
    assert torch.equal(masks.causal(3), _t([[1, 0, 0], [1, 1, 0], [1, 1, 1]]))
    assert torch.equal(masks.causal(2, 4), _t([[1, 1, 1, 0], [1, 1, 1, 1]]))  # 2 new tokens after 2 cached
    assert torch.equal(masks.causal(1, 3), _t([[1, 1, 1]]))
    assert torch.equal(masks.causal(3, 2), _t([[0, 0], [1, 0], [1, 1]]))


def test_window():
    assert torch.equal(masks.window(4, left=1, right=1), _t([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]))
    assert torch.equal(masks.window(3, right=0), masks.causal(3))
    assert torch.equal(masks.window(3, left=0, right=0), torch.eye(3, dtype=torch.bool))


def test_prefix():
    got = masks.prefix([2, 0], 4)
    assert got.shape == (2, 4, 4)
    assert torch.equal(got[0], _t([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]))
    assert torch.equal(got[1], masks.causal(4))
    assert masks.prefix(3, 5, batch=2).shape == (2, 5, 5)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: masks.padding([1, -1], 3), ValueError, "lengths must be >= 0"),
        (lambda: masks.padding([4], 3), ValueError, "lengths must be <= max_len=3"),
        (lambda: masks.padding(torch.tensor([1.0]), 3), TypeError, "integer tensor"),
        (lambda: masks.causal(-1), ValueError, "tq must be >= 0"),
        (lambda: masks.causal(2.0), TypeError, "tq must be an int"),
        (lambda: masks.window(3, left=-1), ValueError, "left must be >= 0"),
        (lambda: masks.prefix([5], 4), ValueError, "prefix_lengths must lie in"),
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()
