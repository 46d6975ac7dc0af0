"""Argument checks shared by the terminal and figure renderers: arrays, label lists, output paths.

Every check raises ``ValueError`` (wrong shape, count or value) or ``TypeError`` (wrong kind) naming the argument,
what was expected and what was received (STYLE rule 13).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["as_labels", "as_matrix", "as_png_path", "shorten"]


def as_matrix(name: str, value: Any, *, nonnegative: bool = False) -> np.ndarray:
    """``value`` as a float64 ``[rows, cols]`` array with at least one row and one column.

    Anything ``numpy.asarray`` reads works (lists, numpy arrays, CPU torch tensors). NaN is kept (drawn as a gap);
    with ``nonnegative`` a negative finite value is refused.
    """
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a 2-D array of numbers, received {type(value).__name__} ({exc})") from None
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [rows, cols], received shape {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"{name}: expected at least one row and one column, received shape {array.shape}")
    if nonnegative:
        finite = array[np.isfinite(array)]
        if finite.size and finite.min() < 0:
            raise ValueError(
                f"{name}: expected values >= 0 (attention weights), received a minimum of {finite.min():g}"
            )
    return array


def as_labels(name: str, labels: Sequence[Any] | None, count: int, what: str) -> list[str] | None:
    """``labels`` as strings, exactly ``count`` of them (one per ``what``), or None when not given."""
    if labels is None:
        return None
    if isinstance(labels, str):
        # A plain string is a sequence of characters: accept it (letters of a word), it is a common shorthand.
        labels = list(labels)
    try:
        labels = [str(label) for label in labels]
    except TypeError:
        raise TypeError(f"{name}: expected a sequence of labels, received {type(labels).__name__}") from None
    if len(labels) != count:
        raise ValueError(f"{name}: expected {count} labels (one per {what}), received {len(labels)}")
    return labels


def as_png_path(path: str | Path) -> Path:
    """``path`` as a ``Path`` ending in ``.png``; its folder is created if missing."""
    if not isinstance(path, str | Path):
        raise TypeError(f"path: expected a str or Path, received {type(path).__name__}")
    path = Path(path).expanduser()
    if path.suffix.lower() != ".png":
        raise ValueError(f"path: expected a file name ending in .png, received {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def shorten(label: str, width: int) -> str:
    """``label`` cut to ``width`` characters, the last one an ellipsis when something was cut."""
    return label if len(label) <= width else label[: max(0, width - 1)] + "…"
