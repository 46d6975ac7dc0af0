"""Attention maps over an image: the image in gray, each map overlaid in colour, one panel per query.

    overlay_maps(image [H, W], maps [K, h, w], titles, path, query=(row, col))

A map on a coarser grid (``h x w``, e.g. CNN features at 1/2 resolution) is stretched over the whole image, each
map cell covering ``H/h x W/w`` image pixels (nearest, so what was computed per cell is what is shown). Every
panel has its own colour scale, from 0 to that map's maximum (written in the panel's title), unless
``shared_scale``: a shared scale compares magnitudes, per-panel scales show where each query looks.

Plots draw numpy arrays (anything ``numpy.asarray`` reads, CPU tensors included) and know nothing of models:
the lab computes the maps (:mod:`attnlab.lab.image_maps`). Figures are built with
:class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot state), written as small PNGs.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["overlay_maps"]

DPI = 110
PANEL_INCHES = 3.2  # the longer side of one panel


def _array(name: str, value: Any, ndim: int, shape: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name}: expected an array {shape} of numbers, received {type(value).__name__} ({exc})"
        ) from None
    if array.ndim != ndim or 0 in array.shape:
        raise ValueError(f"{name}: expected a non-empty array {shape}, received shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite values, received NaN or infinity")
    return array


def _titles(titles: Sequence[str] | None, count: int) -> list[str]:
    if titles is None:
        return [""] * count
    if isinstance(titles, str) or not isinstance(titles, Sequence):
        raise TypeError(f"titles: expected a list of {count} strings (one per map) or None, received {titles!r:.80}")
    if len(titles) != count:
        raise ValueError(f"titles: expected {count} titles (one per map), received {len(titles)}")
    return [str(title) for title in titles]


def _query(query: Sequence[float] | None, height: int, width: int) -> tuple[float, float] | None:
    if query is None:
        return None
    if isinstance(query, str) or not isinstance(query, Sequence) or len(query) != 2:
        raise ValueError(f"query: expected (row, col) in image pixels or None, received {query!r}")
    row, col = (float(q) for q in query)
    if not (0 <= row <= height - 1 and 0 <= col <= width - 1):
        raise ValueError(f"query: expected a pixel inside the {height} x {width} image, received {tuple(query)}")
    return row, col


def overlay_maps(
    image: Any,
    maps: Any,
    titles: Sequence[str] | None,
    path: str | Path,
    *,
    query: Sequence[float] | None = None,
    columns: int | None = None,
    shared_scale: bool = False,
    title: str | None = None,
    cmap: str = "inferno",
    alpha: float = 0.6,
) -> Path:
    """Draw ``image [H, W]`` in gray under each of ``maps [K, h, w]`` (one panel each, titled ``titles[k]``)
    and write the PNG ``path``; returns it.

    ``maps`` must be >= 0 (weights, gates). ``query`` = ``(row, col)`` in image pixels marks the query pixel on
    every panel (a cyan cross). ``columns`` defaults to a near-square grid of panels (a wide image gets one
    column). ``title`` goes above the grid.
    """
    image = _array("image", image, 2, "[H, W]")
    maps = _array("maps", maps, 3, "[K, h, w]")
    if maps.min() < 0:
        raise ValueError(
            f"maps: expected values >= 0 (attention weights or gates), received a minimum of {maps.min():g}"
        )
    count, height, width = maps.shape[0], image.shape[0], image.shape[1]
    if maps.shape[1] > height or maps.shape[2] > width:
        raise ValueError(f"maps: expected a grid no finer than the image {image.shape}, received {maps.shape[1:]}")
    labels = _titles(titles, count)
    marker = _query(query, height, width)
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path: expected a .png file name, received {str(path)!r}")
    if columns is None:
        columns = max(1, min(count, round(math.sqrt(count * height / width))))
    elif isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns: expected a positive int or None, received {columns!r}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in (0, 1], received {alpha!r}")
    rows = math.ceil(count / columns)

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lab dependency: imported when drawing
    from matplotlib.figure import Figure

    scale = PANEL_INCHES / max(height, width)
    panel_w, panel_h = width * scale, height * scale + 0.3  # room for the panel's title
    fig_w = columns * panel_w + 0.2
    heading = textwrap.wrap(title, width=max(24, int(fig_w * 15))) if title else []  # ~15 characters per inch
    head_h = 0.17 * len(heading) + 0.1
    figure = Figure(figsize=(fig_w, rows * panel_h + head_h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # the map's cells stretched over the image's pixels
    top = float(maps.max()) or 1.0
    for k in range(count):
        ax = figure.add_subplot(rows, columns, k + 1)
        ax.imshow(image, cmap="gray", interpolation="nearest", extent=extent)
        vmax = top if shared_scale else (float(maps[k].max()) or 1.0)
        ax.imshow(maps[k], cmap=cmap, alpha=alpha, vmin=0.0, vmax=vmax, interpolation="nearest", extent=extent)
        if marker is not None:
            ax.plot(marker[1], marker[0], marker="x", color="cyan", markersize=7, markeredgewidth=2)
        ax.set_title(f"{labels[k]}  (max {float(maps[k].max()):.2g})".strip(), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if heading:
        figure.suptitle("\n".join(heading), fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path
