"""A weight matrix as text: one cell per weight, rows labelled (e.g. phonemes) and columns labelled (e.g. letters).

Two renderings of the same levels:

- color (``color=True``): each cell is two spaces on an ANSI background from a viridis-like ramp, 256-color codes
  by default or 24-bit with ``truecolor=True``;
- monochrome (``color=False``): each cell repeats one density character of ``" .:-=+*#%@"``; no escape codes.

Values are drawn on ``[0, vmax]`` (``vmax`` defaults to the matrix maximum). Exactly 0 is blank in both renderings
(a masked position, or no weight at all) and the maximum is the densest level; any positive value gets at least
the first visible level, so a small weight never looks like a masked one. NaN is drawn as ``?``.

Status: complete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._checks import as_labels, as_matrix, shorten

__all__ = ["DENSITY", "heatmap"]

DENSITY = " .:-=+*#%@"  # level 0 (exactly zero) .. level 9 (the maximum)
RESET = "\x1b[0m"
# Viridis at 0, 1/8, ..., 1 (matplotlib's values, rounded): dark purple -> blue -> green -> yellow.
_VIRIDIS = (
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
)
_CUBE = (0, 95, 135, 175, 215, 255)  # the six channel levels of the xterm 256-color cube (codes 16..231)


def _ramp(fraction: float) -> tuple[int, int, int]:
    """The viridis color at ``fraction`` in [0, 1], linearly interpolated between the anchors."""
    position = min(max(fraction, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    low = min(int(position), len(_VIRIDIS) - 2)
    t = position - low
    a, b = _VIRIDIS[low], _VIRIDIS[low + 1]
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _xterm256(rgb: tuple[int, int, int]) -> int:
    """The nearest color of the 6x6x6 cube: ``16 + 36 r + 6 g + b`` with each channel one of six levels."""
    r, g, b = (min(range(6), key=lambda i, c=c: abs(_CUBE[i] - c)) for c in rgb)
    return 16 + 36 * r + 6 * g + b


def _background(level: int, levels: int, truecolor: bool) -> str:
    """The escape that paints level ``1 .. levels-1`` (level 0 keeps the terminal's own background)."""
    rgb = _ramp(level / (levels - 1))  # level 1 starts a step above viridis's darkest, to stand out from blank
    if truecolor:
        return "\x1b[48;2;{};{};{}m".format(*rgb)
    return f"\x1b[48;5;{_xterm256(rgb)}m"


def _levels(weights: np.ndarray, vmax: float, levels: int) -> np.ndarray:
    """Integer level of every cell: 0 for ``<= 0``, ``ceil(w / vmax * (levels-1))`` clipped to ``[1, levels-1]``
    otherwise, -1 for NaN."""
    out = np.zeros(weights.shape, dtype=np.int64)
    finite = np.isfinite(weights)
    positive = finite & (weights > 0)
    if vmax > 0:
        scaled = np.ceil(np.where(positive, weights, 0.0) / vmax * (levels - 1))
        out = np.where(positive, np.clip(scaled, 1, levels - 1), 0).astype(np.int64)
    out[~finite] = -1
    return out


def _header(labels: list[str], cell: int, indent: int, max_label: int) -> list[str]:
    """Column labels: one line when every label fits its cell, else written downwards, one character a line."""
    if all(len(label) <= cell for label in labels):
        return [" " * indent + "".join(label.center(cell) for label in labels).rstrip()]
    cut = [shorten(label, max_label) for label in labels]
    depth = max(len(label) for label in cut)
    return [
        " " * indent + "".join((label[i] if i < len(label) else " ").center(cell) for label in cut).rstrip()
        for i in range(depth)
    ]


def heatmap(
    weights: Any,
    row_labels: Sequence[Any] | None = None,
    col_labels: Sequence[Any] | None = None,
    *,
    color: bool = True,
    truecolor: bool = False,
    vmax: float | None = None,
    cell_width: int = 2,
    max_label: int = 12,
    annotate: bool = False,
    legend: bool = True,
) -> str:
    """``weights [rows, cols]`` as a text heatmap; returns the lines joined by newlines (no trailing newline).

    Args:
        weights: non-negative numbers ``[rows, cols]`` (numpy, lists or a CPU tensor).
        row_labels / col_labels: one label per row / column (default: indices). Labels longer than ``max_label``
            characters are cut with an ellipsis; column labels wider than a cell are written downwards.
        color: ANSI background colors; ``False`` gives plain text with density characters.
        truecolor: 24-bit colors instead of the 256-color palette (only with ``color``).
        vmax: the value drawn as the densest level (default: the largest finite weight).
        cell_width: characters per cell (>= 1).
        annotate: append, to each row, the column it weights most and that weight.
        legend: a last line giving the scale.

    Raises:
        ValueError: ``weights`` not 2-D, empty or negative; label counts that differ from the matrix's;
            ``vmax``, ``cell_width`` or ``max_label`` out of range.
    """
    matrix = as_matrix("weights", weights, nonnegative=True)
    rows, cols = matrix.shape
    row_names = as_labels("row_labels", row_labels, rows, f"row of weights {matrix.shape}") or [
        str(i) for i in range(rows)
    ]
    col_names = as_labels("col_labels", col_labels, cols, f"column of weights {matrix.shape}") or [
        str(j) for j in range(cols)
    ]
    if isinstance(cell_width, bool) or not isinstance(cell_width, int) or cell_width < 1:
        raise ValueError(f"cell_width: expected an int >= 1, received {cell_width!r}")
    if isinstance(max_label, bool) or not isinstance(max_label, int) or max_label < 2:
        raise ValueError(f"max_label: expected an int >= 2, received {max_label!r}")
    finite = matrix[np.isfinite(matrix)]
    top = float(finite.max()) if finite.size else 0.0
    if vmax is None:
        vmax = top
    elif not isinstance(vmax, int | float) or isinstance(vmax, bool) or not math.isfinite(vmax) or vmax <= 0:
        raise ValueError(f"vmax: expected a positive finite number or None, received {vmax!r}")

    levels = _levels(matrix, float(vmax), len(DENSITY))  # (rows, cols) in -1 .. 9
    names = [shorten(name, max_label) for name in row_names]
    indent = max(len(name) for name in names) + 1
    lines = _header([shorten(name, max_label) for name in col_names], cell_width, indent, max_label)
    for i, name in enumerate(names):
        cells = []
        for level in levels[i]:
            if level < 0:
                cells.append("?" * cell_width)
            elif not color:
                cells.append(DENSITY[level] * cell_width)
            elif level == 0:
                cells.append(" " * cell_width)
            else:
                cells.append(_background(int(level), len(DENSITY), truecolor) + " " * cell_width + RESET)
        line = name.ljust(indent) + "".join(cells)
        if annotate:
            row = np.where(np.isfinite(matrix[i]), matrix[i], -np.inf)
            best = int(np.argmax(row))
            line += f"  {col_names[best]} {matrix[i, best]:.2f}" if np.isfinite(row[best]) and row[best] > 0 else "  -"
        lines.append(line)
    if legend:
        if color:
            ramp = "".join(_background(k, len(DENSITY), truecolor) + " " + RESET for k in range(1, len(DENSITY)))
            lines.append(f"scale: blank = 0, {ramp} up to {vmax:.2f}")
        else:
            lines.append(f'scale: "{DENSITY}" from 0 (blank) to {vmax:.2f} ("{DENSITY[-1]}")')
    return "\n".join(lines)
