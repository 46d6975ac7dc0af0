"""The terminal heatmap: levels (0 blank, max densest), colored vs plain output, labels, and bad inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from attnlab.viz import DENSITY, heatmap

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _cells(text: str, labels: list[str], width: int = 2) -> list[str]:
    """The cell part of each labelled row (monochrome rendering, no annotation)."""
    indent = max(len(label) for label in labels) + 1
    rows = {line[:indent].rstrip(): line[indent:] for line in text.splitlines()}
    return [rows[label] for label in labels]


def test_monochrome_maps_max_to_densest_and_zero_to_blank():
    weights = np.array([[0.0, 0.25, 1.0], [0.5, 0.0, 0.01]])
    text = heatmap(weights, ["A", "B"], ["x", "y", "z"], color=False, legend=False)
    a, b = _cells(text, ["A", "B"])
    assert a == "  " + DENSITY[3] * 2 + DENSITY[-1] * 2  # 0 -> blank, 0.25 -> ceil(2.25)=3, max -> "@"
    assert b.startswith(DENSITY[5] * 2)  # 0.5 -> level ceil(4.5) = 5
    assert b[2:4] == "  "
    assert b[4:6] == DENSITY[1] * 2  # a small positive weight is visible, never blank like a masked one


def test_vmax_sets_the_densest_level():
    text = heatmap([[0.5, 1.0]], ["r"], ["a", "b"], color=False, vmax=2.0, legend=False)
    (row,) = _cells(text, ["r"])
    assert DENSITY[-1] not in row and row == DENSITY[3] * 2 + DENSITY[5] * 2


def test_color_has_ansi_escapes_and_no_color_has_none():
    weights = np.random.default_rng(0).random((3, 4))
    colored = heatmap(weights, list("abc"), list("wxyz"))
    plain = heatmap(weights, list("abc"), list("wxyz"), color=False, annotate=True)
    assert "\x1b[48;5;" in colored and colored.count("\x1b[0m") >= 12
    assert "\x1b" not in plain
    truecolor = heatmap(weights, list("abc"), list("wxyz"), truecolor=True)
    assert "\x1b[48;2;" in truecolor
    # Without the escapes a colored heatmap has the same layout as the plain one: labels and cell widths line up.
    stripped = ANSI.sub("", colored).splitlines()
    assert stripped[0] == plain.splitlines()[0]
    assert [len(line) for line in stripped[1:4]] == [2 + 4 * 2] * 3


def test_zero_rows_stay_blank_in_both_renderings():
    weights = np.array([[0.2, 0.8], [0.0, 0.0]])  # a fully masked row is exactly 0
    plain = heatmap(weights, ["a", "b"], ["x", "y"], color=False, legend=False, annotate=True)
    assert plain.splitlines()[-1] == "b       -"
    colored = heatmap(weights, ["a", "b"], ["x", "y"], legend=False)
    assert "\x1b" not in colored.splitlines()[-1]
    assert heatmap(np.zeros((2, 2)), color=False, legend=False).splitlines()[1:] == ["0     ", "1     "]


def test_single_row_and_single_column():
    assert heatmap([[0.3]], ["only"], ["c"], color=False, legend=False).splitlines() == ["     c", "only @@"]
    column = heatmap([[1.0], [0.5], [0.0]], ["a", "b", "c"], ["x"], color=False, legend=False)
    assert column.splitlines()[1:] == ["a @@", "b " + DENSITY[5] * 2, "c   "]


def test_long_labels_are_cut_and_wide_column_labels_written_downwards():
    text = heatmap(np.eye(2), ["a_very_long_row_label_indeed", "b"], ["abc", "d"], color=False, max_label=8,
                   legend=False)  # fmt: skip
    lines = text.splitlines()
    assert lines[:3] == ["         a d", "         b", "         c"]
    assert lines[3] == "a_very_… @@  "
    assert all(len(line) <= 9 + 4 for line in lines)


def test_legend_and_nan():
    text = heatmap([[np.nan, 1.0]], ["r"], ["a", "b"], color=False)
    assert "??" in text.splitlines()[1]
    assert text.splitlines()[-1].startswith("scale:") and "1.00" in text


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"weights": np.ones(3)}, "weights"),
        ({"weights": np.ones((2, 2, 2))}, "weights"),
        ({"weights": np.ones((0, 3))}, "weights"),
        ({"weights": -np.ones((2, 2))}, "weights"),
        ({"weights": np.ones((2, 3)), "row_labels": ["a"]}, "row_labels"),
        ({"weights": np.ones((2, 3)), "col_labels": ["a", "b"]}, "col_labels"),
        ({"weights": np.ones((2, 3)), "vmax": 0}, "vmax"),
        ({"weights": np.ones((2, 3)), "cell_width": 0}, "cell_width"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(kwargs, names):
    with pytest.raises(ValueError, match=names):
        heatmap(**kwargs)
