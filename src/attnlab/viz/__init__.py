"""Plots from recorded weights and saved results: arrays and labels in, a PNG (or a string) out.

This layer imports nothing else of attnlab (a test enforces it): it knows arrays, not models or training.

- :func:`~attnlab.viz.terminal.heatmap`: a weight matrix as colored (ANSI) or monochrome text.
- :mod:`~attnlab.viz.figures`: :func:`alignment_heatmap`, :func:`attention_grid`, :func:`mask_structure`,
  :func:`line_chart`, :func:`bar_chart`, each writing one PNG and returning its path.

matplotlib (a ``lab`` extra) is imported only when a figure function is first used, so the terminal heatmap works
without it.
"""

from __future__ import annotations

from typing import Any

from .terminal import DENSITY, heatmap

_FIGURES = ("DPI", "alignment_heatmap", "attention_grid", "bar_chart", "line_chart", "mask_structure")

__all__ = ["DENSITY", "heatmap", *_FIGURES]


def __getattr__(name: str) -> Any:
    if name in _FIGURES:
        from . import figures

        return getattr(figures, name)
    raise AttributeError(f"module 'attnlab.viz' has no attribute {name!r}")
