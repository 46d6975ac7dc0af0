"""ONNX export (``torch.onnx.export(..., dynamo=True)``) with a dynamic length, run in onnxruntime against eager.

Self-attention (4 heads, a key-padding mask built inside the graph from a bool ``keep [B, T]``; plain and causal),
cross-attention with the additive score (padding mask), and vision blocks (dynamic height and width). Each model is
exported once at one size and run by onnxruntime's CPU provider at two other sizes. The batch holds a fully padded
item: its attention context is exactly 0 in onnxruntime as in eager, so the module's output there is exactly the
output projection's bias (``W_o 0 + b_o``), and NaN in its padded inputs does not leak.

Needs the ONNX packages of the ``dev`` extra (``pip install -c constraints.txt -e ".[dev]"``: onnx, onnxscript,
onnxruntime); without them the file is skipped.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.export import Dim

from attnlab import CrossAttention, SelfAttention
from attnlab.vision import get_block

_EXTRA = 'ONNX export tests need the dev extra: pip install -c constraints.txt -e ".[dev]"'
pytest.importorskip("onnx", reason=_EXTRA)
pytest.importorskip("onnxscript", reason=_EXTRA)
ort = pytest.importorskip("onnxruntime", reason=_EXTRA)

DIM, CONTEXT_DIM, HEADS, CHANNELS = 16, 12, 4, 16
RTOL = ATOL = 1e-5  # float32; the additive score needs no looser one (its traced form is a plain broadcast sum)


class _Self(torch.nn.Module):
    """``(x [B, T, D], keep [B, T] bool) -> [B, T, D]``: the key-padding mask is built inside the graph."""

    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.attn = SelfAttention(DIM, HEADS, "scaled_dot", causal=causal)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.attn(x, mask=keep[:, None, :])  # (B, 1, T): True = may attend


class _Cross(torch.nn.Module):
    """``(x [B, Tq, D], context [B, Tk, Dc], keep [B, Tk] bool) -> [B, Tq, D]`` with the additive score."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = CrossAttention(DIM, CONTEXT_DIM, HEADS, score="additive")

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.attn(x, context, mask=keep[:, None, :])


def _keep(length: int) -> torch.Tensor:
    """``[3, length]``: item 0 unpadded, item 1 padded by 2, item 2 fully padded (no key to attend)."""
    return torch.arange(length)[None, :] < torch.tensor([length, length - 2, 0])[:, None]


def _nan_where_padded(t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return t.masked_fill(~keep[:, :, None], float("nan"))  # masked inputs must not leak


def _self_inputs(length: int):
    keep = _keep(length)
    return _nan_where_padded(torch.randn(3, length, DIM), keep), keep


def _cross_inputs(length: int):
    keep = _keep(length + 3)
    context = _nan_where_padded(torch.randn(3, length + 3, CONTEXT_DIM), keep)
    return torch.randn(3, length, DIM), context, keep


def _vision_block(name: str) -> torch.nn.Module:
    block = get_block(name, CHANNELS)
    with torch.no_grad():  # the residual gates start at 0 (the branch would vanish): make every part count
        for parameter in block.parameters():
            if not parameter.any():
                parameter.uniform_(0.5, 1.5)
        for module in block.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    return block


def _image_inputs(height: int):
    return (torch.randn(2, CHANNELS, height, height + 1),)


T, S = Dim("t", min=2, max=64), Dim("s", min=3, max=67)
IMAGE = ({2: Dim.DYNAMIC, 3: Dim.DYNAMIC},)  # as tests/compile/test_models_compile.py: named bounds trip ceil(H/p)

# name -> (module factory, inputs at a size, dynamic_shapes, whether item 2 is fully padded)
CASES = {
    "self-padding": (lambda: _Self(causal=False), _self_inputs, ({1: T}, {1: T}), True),
    "self-causal-padding": (lambda: _Self(causal=True), _self_inputs, ({1: T}, {1: T}), True),
    "cross-additive-padding": (_Cross, _cross_inputs, ({1: T}, {1: S}, {1: S}), True),
    "vision-botnet": (lambda: _vision_block("botnet"), _image_inputs, IMAGE, False),
    "vision-sagan": (lambda: _vision_block("sagan"), _image_inputs, IMAGE, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_export_runs_in_onnxruntime_like_eager(name, tmp_path):
    factory, make_inputs, shapes, fully_padded = CASES[name]
    torch.manual_seed(0)
    module = factory().eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision missing, axis renaming: noise of the exporter
        torch.onnx.export(module, make_inputs(8), str(path), dynamo=True, dynamic_shapes=shapes)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = session.get_inputs()
    dynamic = [feed.shape[axis] for feed, axes in zip(feeds, shapes, strict=True) for axis in axes]
    assert all(isinstance(d, str) for d in dynamic), f"a size stayed static: {[f.shape for f in feeds]}"
    for size in (5, 13):  # neither is the export size
        inputs = make_inputs(size)
        (got,) = session.run(None, {f.name: t.numpy() for f, t in zip(feeds, inputs, strict=True)})
        with torch.no_grad():
            want = module(*inputs).numpy()
        assert got.shape == want.shape
        assert np.isfinite(got).all() and np.isfinite(want).all(), "NaN in padded inputs leaked"
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
        if fully_padded:  # no key to attend: context exactly 0, so the output is exactly out_proj's bias
            bias = module.attn.out_proj.bias.detach().numpy()
            np.testing.assert_array_equal(got[2], np.broadcast_to(bias, got[2].shape))
            np.testing.assert_array_equal(want[2], got[2])
