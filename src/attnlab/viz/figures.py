"""PNG figures from recorded weights and saved results: alignments, grids of heads, mask structure, curves, bars.

Every function takes arrays (numpy, lists, CPU tensors) and labels, writes one PNG to ``path`` and returns it as a
``Path``. Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through ``pyplot``: no global
backend switch, no figure registry, safe in a headless process. Style settings apply inside ``rc_context`` only.

The pixel size of a PNG is ``size`` (inches) times ``DPI`` exactly (no ``bbox_inches="tight"``: matplotlib's
constrained layout fits everything inside the canvas instead), so callers that embed figures know their size in
advance. When ``size`` is left out it grows with the data, within bounds that keep a figure small enough to
embed (well under 150 KB).

Status: complete.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._checks import as_labels, as_matrix, as_png_path, shorten

__all__ = ["DPI", "alignment_heatmap", "attention_grid", "bar_chart", "line_chart", "mask_structure"]

DPI = 110
CMAP = "viridis"  # perceptually uniform; 0 is dark, so masked (exactly zero) cells read as "nothing"
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
LABEL_CHARS = 14  # longer tick labels are cut with an ellipsis


# -- shared helpers ----------------------------------------------------------------------------------------------
def _size(name: str, size: tuple[float, float] | None, default: tuple[float, float]) -> tuple[float, float]:
    if size is None:
        return default
    ok = isinstance(size, tuple | list) and len(size) == 2
    if ok:
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) and 0.5 <= v <= 30 for v in size)
    if not ok:
        raise ValueError(f"{name}: expected (width, height) in inches, each in [0.5, 30], received {size!r}")
    return float(size[0]), float(size[1])


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _new_figure(size: tuple[float, float]) -> Figure:
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")  # makes room for colorbars and titles
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def _tick_labels(axis: Any, which: str, labels: list[str] | None, count: int) -> None:
    """One tick per row/column; labels cut to ``LABEL_CHARS``; x labels turned upright when any is wide."""
    ticks = np.arange(count)
    if which == "x":
        axis.set_xticks(ticks)
        if labels is None:
            axis.set_xticklabels([str(i) for i in ticks] if count <= 40 else [])
        else:
            cut = [shorten(label, LABEL_CHARS) for label in labels]
            axis.set_xticklabels(cut, rotation=90 if max(len(label) for label in cut) > 2 else 0)
    else:
        axis.set_yticks(ticks)
        if labels is None:
            axis.set_yticklabels([str(i) for i in ticks] if count <= 40 else [])
        else:
            axis.set_yticklabels([shorten(label, LABEL_CHARS) for label in labels])
    axis.tick_params(length=0)


def _show_matrix(axis: Any, matrix: np.ndarray, vmax: float | None) -> Any:
    top = np.nanmax(matrix) if np.isfinite(matrix).any() else 1.0
    image = axis.imshow(matrix, cmap=CMAP, vmin=0.0, vmax=vmax if vmax is not None else max(float(top), 1e-12),
                        aspect="auto", interpolation="nearest")  # fmt: skip
    for side in ("top", "right", "bottom", "left"):
        axis.spines[side].set_visible(False)
    return image


def _check_vmax(vmax: float | None) -> None:
    if vmax is not None and (isinstance(vmax, bool) or not isinstance(vmax, int | float) or not vmax > 0):
        raise ValueError(f"vmax: expected a positive number or None, received {vmax!r}")


# -- attention matrices ------------------------------------------------------------------------------------------
def alignment_heatmap(
    weights: Any,
    x_labels: Sequence[Any] | None,
    y_labels: Sequence[Any] | None,
    path: str | Path,
    *,
    title: str | None = None,
    xlabel: str = "source",
    ylabel: str = "output",
    vmax: float | None = None,
    annotate: bool = False,
    size: tuple[float, float] | None = None,
) -> Path:
    """One cross-attention matrix ``weights [outputs, sources]``: x = source tokens, y = output tokens, colorbar.

    ``annotate`` writes each weight in its cell (for small matrices). ``vmax`` fixes the top of the color scale
    (default: the largest weight); the bottom is always 0.
    """
    matrix = as_matrix("weights", weights, nonnegative=True)
    rows, cols = matrix.shape
    xs = as_labels("x_labels", x_labels, cols, f"column of weights {matrix.shape}")
    ys = as_labels("y_labels", y_labels, rows, f"row of weights {matrix.shape}")
    _check_vmax(vmax)
    path = as_png_path(path)
    size = _size("size", size, (_clamp(1.6 + 0.32 * cols, 3.2, 10.0), _clamp(1.2 + 0.28 * rows, 2.4, 9.0)))
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(size)
        axis = figure.add_subplot()
        image = _show_matrix(axis, matrix, vmax)
        _tick_labels(axis, "x", xs, cols)
        _tick_labels(axis, "y", ys, rows)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        if title:
            axis.set_title(title)
        if annotate:
            limit = image.norm.vmax
            counts = bool(np.all(np.mod(matrix[np.isfinite(matrix)], 1) == 0))  # whole numbers: write them so
            for (i, j), value in np.ndenumerate(matrix):
                if np.isfinite(value):
                    shade = "black" if value > 0.6 * limit else "white"
                    axis.text(j, i, cell_text(value, counts), ha="center", va="center", fontsize=6, color=shade)
        figure.colorbar(image, ax=axis, fraction=0.05, pad=0.03)
        return _save(figure, path)


def cell_text(value: float, counts: bool = False) -> str:
    """How an annotated cell reads: a count as an integer (``6``), a weight with two decimals (``.25``)."""
    return str(int(value)) if counts else f"{value:.2f}".lstrip("0")


def _panels(matrices: Any) -> tuple[list[np.ndarray], tuple[int, int] | None]:
    """A list of 2-D matrices, and the grid shape a 4-D array implies (``[rows, cols, Tq, Tk]``)."""
    if isinstance(matrices, np.ndarray) or hasattr(matrices, "__array__"):
        array = np.asarray(matrices, dtype=np.float64)
        if array.ndim == 4:
            grid = array.shape[:2]
            return [array[i, j] for i in range(grid[0]) for j in range(grid[1])], grid
        if array.ndim == 3:
            return list(array), None
        raise ValueError(f"matrices: expected a 3-D [N, rows, cols] or 4-D [layers, heads, rows, cols] array or a "
                         f"list of 2-D arrays, received shape {array.shape}")  # fmt: skip
    if isinstance(matrices, str) or not isinstance(matrices, Sequence):
        raise TypeError(f"matrices: expected an array or a list of 2-D arrays, received {type(matrices).__name__}")
    return [as_matrix(f"matrices[{i}]", m, nonnegative=True) for i, m in enumerate(matrices)], None


def _panel_labels(name: str, labels: Any, shapes: list[tuple[int, int]], axis: int) -> list[list[str] | None]:
    """Labels for each panel: one shared sequence of strings, or one sequence (a list, not a str) per panel."""
    what = "column" if axis == 1 else "row"
    if labels is None:
        return [None] * len(shapes)
    labels = list(labels)
    if labels and all(isinstance(item, str) for item in labels):  # shared
        return [as_labels(name, labels, shape[axis], f"{what} of every matrix") for shape in shapes]
    if len(labels) != len(shapes):
        raise ValueError(f"{name}: expected one shared list of labels or one list per matrix ({len(shapes)}), "
                         f"received {len(labels)} items")  # fmt: skip
    return [as_labels(f"{name}[{k}]", item, shape[axis], f"{what} of matrices[{k}] {shape}")
            for k, (item, shape) in enumerate(zip(labels, shapes, strict=True))]  # fmt: skip


def attention_grid(
    matrices: Any,
    path: str | Path,
    *,
    titles: Sequence[str] | None = None,
    x_labels: Any = None,
    y_labels: Any = None,
    ncols: int | None = None,
    suptitle: str | None = None,
    shared_scale: bool = True,
    size: tuple[float, float] | None = None,
) -> Path:
    """Several attention matrices as a grid of small panels (e.g. every head of every layer).

    ``matrices``: a list of 2-D arrays, a 3-D array ``[N, rows, cols]`` or a 4-D array ``[layers, heads, rows,
    cols]`` (drawn as layers x heads). ``x_labels``/``y_labels``: one list of strings shared by every panel (tick
    labels are then written on the bottom row and the left column only) or one list of labels per panel (a list
    of lists: a list of strings always means shared labels). ``shared_scale``: one color
    scale for all panels (the largest weight) and one colorbar, so heads compare; otherwise each panel is scaled
    to its own maximum.
    """
    panels, grid = _panels(matrices)
    if not panels:
        raise ValueError("matrices: expected at least one matrix, received none")
    panels = [as_matrix(f"matrices[{k}]", m, nonnegative=True) for k, m in enumerate(panels)]
    shapes = [m.shape for m in panels]
    xs = _panel_labels("x_labels", x_labels, shapes, 1)
    ys = _panel_labels("y_labels", y_labels, shapes, 0)
    shared_x = x_labels is not None and all(isinstance(item, str) for item in x_labels)
    shared_y = y_labels is not None and all(isinstance(item, str) for item in y_labels)
    if titles is not None:
        titles = [str(t) for t in titles]
        if len(titles) != len(panels):
            raise ValueError(f"titles: expected {len(panels)} titles (one per matrix), received {len(titles)}")
    if grid is None:
        if ncols is not None and (isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1):
            raise ValueError(f"ncols: expected a positive int or None, received {ncols!r}")
        columns = ncols or min(len(panels), 4)
        grid = (math.ceil(len(panels) / columns), columns)
    rows_n, cols_n = grid
    path = as_png_path(path)
    tq = max(s[0] for s in shapes)
    tk = max(s[1] for s in shapes)
    panel_w, panel_h = _clamp(0.6 + 0.16 * tk, 1.4, 3.2), _clamp(0.5 + 0.16 * tq, 1.2, 3.0)
    size = _size("size", size, (_clamp(0.8 + panel_w * cols_n, 3.0, 14.0), _clamp(0.5 + panel_h * rows_n, 2.0, 14.0)))
    finite_max = [float(np.nanmax(m)) for m in panels if np.isfinite(m).any()]
    top = max([*finite_max, 1e-12])
    with matplotlib.rc_context({**STYLE, "axes.titlesize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7}):
        figure = _new_figure(size)
        axes = figure.subplots(rows_n, cols_n, squeeze=False)
        image = None
        for k, axis in enumerate(axes.flat):
            if k >= len(panels):
                axis.set_visible(False)
                continue
            r, c = divmod(k, cols_n)
            image = _show_matrix(axis, panels[k], top if shared_scale else None)
            _tick_labels(axis, "x", xs[k], shapes[k][1])
            _tick_labels(axis, "y", ys[k], shapes[k][0])
            if shared_x and r != rows_n - 1 and k + cols_n < len(panels):
                axis.set_xticklabels([])
            if shared_y and c != 0:
                axis.set_yticklabels([])
            if titles is not None:
                axis.set_title(shorten(titles[k], 28))
        if suptitle:
            figure.suptitle(suptitle)
        if shared_scale and image is not None:
            figure.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
        return _save(figure, path)


def mask_structure(
    mask: Any,
    path: str | Path,
    *,
    boundary: int | None = None,
    labels: Sequence[Any] | None = None,
    weights: Any = None,
    title: str = "mask: may attend",
    weights_title: str = "learned weights",
    size: tuple[float, float] | None = None,
) -> Path:
    """A boolean attention mask ``[Tq, Tk]`` as blocks (filled = may attend), e.g. a prefix-LM mask.

    ``boundary``: the first target position of a ``[source; target]`` stream; lines are drawn there on both axes
    so the bidirectional source block and the causal target block show. ``labels``: one per position (used on
    both axes when the mask is square, else on the key axis). ``weights``: optional ``[Tq, Tk]`` learned weights
    drawn beside the mask with the same boundary.
    """
    try:
        raw = np.asarray(mask)
    except (TypeError, ValueError):
        raise TypeError(f"mask: expected a 2-D boolean array, received {type(mask).__name__}") from None
    if raw.ndim != 2 or 0 in raw.shape:
        raise ValueError(f"mask: expected a non-empty 2-D array [Tq, Tk], received shape {raw.shape}")
    if raw.dtype != np.bool_:
        if not np.isin(raw, (0, 1)).all():
            raise ValueError("mask: expected booleans (True = may attend) or 0/1 values, received other values")
        raw = raw.astype(bool)
    tq, tk = raw.shape
    key_labels = as_labels("labels", labels, tk, f"key position of mask {raw.shape}")
    query_labels = key_labels if tq == tk else None
    if boundary is not None and (isinstance(boundary, bool) or not isinstance(boundary, int)
                                 or not 0 < boundary < max(tq, tk)):  # fmt: skip
        raise ValueError(f"boundary: expected an int in [1, {max(tq, tk) - 1}] or None, received {boundary!r}")
    learned = None
    if weights is not None:
        learned = as_matrix("weights", weights, nonnegative=True)
        if learned.shape != raw.shape:
            raise ValueError(f"weights: expected the mask's shape {raw.shape}, received {learned.shape}")
    path = as_png_path(path)
    panels = 1 if learned is None else 2
    side = _clamp(1.0 + 0.22 * max(tq, tk), 2.6, 6.5)
    size = _size("size", size, (side * panels + 0.6 * (panels - 1), side + 0.4))
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(size)
        axes = figure.subplots(1, panels, squeeze=False)[0]
        views = [(axes[0], raw.astype(np.float64), title, "Greys")]
        if learned is not None:
            views.append((axes[1], learned, weights_title, CMAP))
        for axis, data, heading, cmap in views:
            vmax = 1.0 if cmap == "Greys" else max(float(np.nanmax(data)), 1e-12)
            image = axis.imshow(data, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
            if cmap == "Greys":  # cell borders, so single positions can be counted
                axis.set_xticks(np.arange(-0.5, tk, 1), minor=True)
                axis.set_yticks(np.arange(-0.5, tq, 1), minor=True)
                axis.grid(which="minor", color="0.75", linewidth=0.4)
            else:
                figure.colorbar(image, ax=axis, fraction=0.046, pad=0.03)
            _tick_labels(axis, "x", key_labels, tk)
            _tick_labels(axis, "y", query_labels, tq)
            axis.tick_params(which="minor", length=0)
            axis.set_xlabel("key position")
            axis.set_ylabel("query position")
            axis.set_title(heading)
            if boundary is not None:
                for line in (axis.axvline, axis.axhline):
                    line(boundary - 0.5, color="tab:red", linewidth=1.2)
        return _save(figure, path)


# -- results -----------------------------------------------------------------------------------------------------
def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    markers: bool = True,
    size: tuple[float, float] | None = None,
) -> Path:
    """Several named series ``{name: (x, y)}`` on one axis, with a legend (e.g. accuracy by input length with and
    without attention, or training curves). NaN in ``y`` leaves a gap."""
    if not isinstance(series, Mapping) or not series:
        raise ValueError(f"series: expected a non-empty mapping name -> (x, y), received {series!r:.80}")
    curves = []
    for name, pair in series.items():
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValueError(f"series[{name!r}]: expected an (x, y) pair, received {type(pair).__name__}")
        x = np.asarray(pair[0], dtype=np.float64)
        y = np.asarray(pair[1], dtype=np.float64)
        if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape or x.size == 0:
            raise ValueError(f"series[{name!r}]: expected 1-D x and y of one non-zero length, received shapes "
                             f"{x.shape} and {y.shape}")  # fmt: skip
        if logx and (x <= 0).any():
            raise ValueError(f"series[{name!r}]: logx needs x > 0, received a minimum of {x.min():g}")
        curves.append((str(name), x, y))
    path = as_png_path(path)
    size = _size("size", size, (5.0, 3.2))
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(size)
        axis = figure.add_subplot()
        for name, x, y in curves:
            axis.plot(x, y, marker="o" if markers and x.size <= 40 else None, markersize=3, linewidth=1.5, label=name)
        if logx:  # plain numbers at the data's x values (few) instead of 6 x 10^0
            axis.set_xscale("log")
            xs = np.unique(np.concatenate([x for _, x, _ in curves]))
            if xs.size <= 12:
                axis.set_xticks(xs, [f"{v:g}" for v in xs])
                axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            else:
                axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        if logy:
            axis.set_yscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        if title:
            axis.set_title(title)
        axis.grid(alpha=0.3, linewidth=0.5)
        axis.legend(frameon=False)
        return _save(figure, path)


def bar_chart(
    values: Mapping[str, float],
    path: str | Path,
    *,
    errors: Mapping[str, float] | None = None,
    ylabel: str = "",
    title: str | None = None,
    value_format: str = "{:.3g}",
    size: tuple[float, float] | None = None,
) -> Path:
    """Named values as bars, each with its value written above it; ``errors`` (same names) draws error bars."""
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"values: expected a non-empty mapping name -> number, received {values!r:.80}")
    names = [str(name) for name in values]
    try:
        heights = np.asarray([float(v) for v in values.values()], dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError("values: expected numbers as values") from None
    spread = None
    if errors is not None:
        if not isinstance(errors, Mapping) or set(map(str, errors)) != set(names):
            got = sorted(map(str, errors)) if isinstance(errors, Mapping) else type(errors).__name__
            raise ValueError(f"errors: expected one error per name {names}, received {got}")
        lookup = {str(k): float(v) for k, v in errors.items()}
        spread = np.asarray([lookup[name] for name in names])
        if (spread < 0).any():
            raise ValueError("errors: expected values >= 0 (half-widths of the error bars)")
    path = as_png_path(path)
    size = _size("size", size, (_clamp(1.5 + 0.55 * len(names), 3.0, 10.0), 3.2))
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(size)
        axis = figure.add_subplot()
        positions = np.arange(len(names))
        bars = axis.bar(positions, heights, yerr=spread, capsize=3 if spread is not None else 0, color="tab:blue",
                        error_kw={"linewidth": 1})  # fmt: skip
        axis.bar_label(bars, labels=[value_format.format(h) for h in heights], fontsize=7, padding=2)
        axis.set_xticks(positions)
        cut = [shorten(name, LABEL_CHARS) for name in names]
        wide = sum(len(name) for name in cut) > 6 * len(cut) or len(cut) > 8
        axis.set_xticklabels(cut, rotation=30 if wide else 0, ha="right" if wide else "center")
        axis.set_ylabel(ylabel)
        if title:
            axis.set_title(title)
        axis.margins(y=0.12)
        axis.grid(axis="y", alpha=0.3, linewidth=0.5)
        return _save(figure, path)
