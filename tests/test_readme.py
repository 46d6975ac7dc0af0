"""The README's Python example runs as written and its claimed results hold."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["out"].context.shape == (2, 5, 8)
    assert namespace["out"].path == "dense"
    x, cross, encoder, masks = namespace["x"], namespace["cross"], namespace["encoder"], namespace["masks"]
    assert torch.equal(cross(x, context=x, mask=masks.causal(7)), encoder(x))
    assert namespace["block"](x).shape == (2, 7, 32)
    ours = namespace["ours"]
    torch.testing.assert_close(ours.to_torch()(x, x, x, need_weights=False)[0], ours(x))
    torch.testing.assert_close(namespace["program"].module()(x[:, :5]), ours(x[:, :5]))
    assert namespace["attended"].weights.shape == (2, 4, 7, 7)
