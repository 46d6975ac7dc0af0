"""Eager or traced: the one switch behind every value-dependent shortcut and input check.

attnlab's forward paths have no Python branch on tensor values, so ``torch.compile(fullgraph=True)`` and
``torch.export`` trace them in one graph and a GPU is never synchronized with the host. Two kinds of code still
read a tensor's value, and both run only where that is free and traceable, eager mode on a CPU tensor:

- shortcuts that skip work the branch-free form does unconditionally (the NaN and empty-row fills of the
  core), each tested to give exactly the branch-free result;
- checks of input *values* (lengths in range, positions below a table's size), which raise a clear error
  eagerly; traced or on a GPU, the caller's inputs are trusted as they are by PyTorch's own modules.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["eager_on_cpu"]


def eager_on_cpu(tensor: Tensor) -> bool:
    """True in eager mode (not ``torch.compile``/``torch.export`` tracing) for a CPU tensor, where asking the
    tensor's value costs no device synchronization and breaks no graph."""
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()
