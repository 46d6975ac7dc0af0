"""Figures: each function writes a valid PNG of the promised pixel size, small enough to embed, and refuses bad
input with a ValueError naming the argument."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.image import imread

from attnlab.masks import prefix
from attnlab.viz import figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)


def _weights(rows: int, cols: int) -> np.ndarray:
    return RNG.dirichlet(np.ones(cols), size=rows)


def _check_png(path, size=None):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) < 150_000, f"{path.name} is {len(data)} bytes"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    if size is not None:
        width, height = size
        assert pixels.shape[:2] == (round(height * figures.DPI), round(width * figures.DPI))
    assert pixels.std() > 0  # something was drawn
    return pixels


def _prefix_mask(source: int, total: int) -> np.ndarray:
    return prefix(source, total).numpy().reshape(total, total)


def test_alignment_heatmap(tmp_path):
    path = figures.alignment_heatmap(_weights(4, 6), list("letter"), ["L", "EH1", "T", "ER0"], tmp_path / "a.png",
                                     title="letter", annotate=True, size=(4.0, 3.0))  # fmt: skip
    assert path == tmp_path / "a.png"
    _check_png(path, (4.0, 3.0))
    _check_png(figures.alignment_heatmap(_weights(1, 1), None, None, tmp_path / "sub" / "one.png"))


def test_attention_grid_of_layers_by_heads(tmp_path):
    stack = RNG.dirichlet(np.ones(5), size=(2, 3, 4))  # (layers, heads, Tq, Tk)
    titles = [f"layer {i} head {j}" for i in range(2) for j in range(3)]
    path = figures.attention_grid(stack, tmp_path / "g.png", titles=titles, x_labels=list("abcde"),
                                  y_labels=list("wxyz"), suptitle="all heads", size=(6.0, 3.5))  # fmt: skip
    _check_png(path, (6.0, 3.5))


def test_attention_grid_with_one_label_list_per_panel(tmp_path):
    matrices = [_weights(2, 3), _weights(4, 5), _weights(1, 2)]
    path = figures.attention_grid(
        matrices,
        tmp_path / "words.png",
        titles=["cat", "hello", "a"],
        x_labels=[list("cat"), list("hello"), list("ab")],
        y_labels=[["K", "T"], list("HELO"), ["EY1"]],
        ncols=2,
        shared_scale=False,
    )
    _check_png(path)


def test_mask_structure_alone_and_with_weights(tmp_path):
    mask = _prefix_mask(4, 9)
    _check_png(figures.mask_structure(mask, tmp_path / "m.png", boundary=4, size=(3.0, 3.0)), (3.0, 3.0))
    learned = mask / mask.sum(-1, keepdims=True)
    labels = [*"cat", "SEP", "<bos>", "K", "AE1", "T", "x"]
    _check_png(figures.mask_structure(mask, tmp_path / "mw.png", boundary=4, labels=labels, weights=learned))


def test_line_chart(tmp_path):
    lengths = [5, 10, 20, 40, 80]
    series = {"with attention": (lengths, [0.95, 0.94, 0.93, 0.9, 0.88]),
              "without": (lengths, [0.95, 0.8, 0.5, 0.2, float("nan")])}  # fmt: skip
    path = figures.line_chart(series, tmp_path / "l.png", xlabel="input length", ylabel="accuracy", logx=True,
                              title="accuracy by length", size=(5.0, 3.0))  # fmt: skip
    _check_png(path, (5.0, 3.0))
    steps = np.arange(1, 500)
    _check_png(figures.line_chart({"loss": (steps, 1 / steps)}, tmp_path / "curve.png", logy=True))


def test_bar_chart(tmp_path):
    values = {"rnn": 41.2, "bahdanau": 30.5, "transformer": 28.9}
    path = figures.bar_chart(values, tmp_path / "b.png", errors={"rnn": 1.0, "bahdanau": 0.7, "transformer": 0.6},
                             ylabel="WER (%)", size=(3.5, 3.0))  # fmt: skip
    _check_png(path, (3.5, 3.0))


def test_figures_use_no_pyplot(tmp_path):
    figures.alignment_heatmap(_weights(2, 2), None, None, tmp_path / "x.png")
    assert "matplotlib.pyplot" not in sys.modules or sys.modules["matplotlib.pyplot"].get_fignums() == []


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda p: figures.alignment_heatmap(np.ones(4), None, None, p), "weights"),
        (lambda p: figures.alignment_heatmap(np.ones((2, 3, 1)), None, None, p), "weights"),
        (lambda p: figures.alignment_heatmap(np.ones((2, 3)), ["a", "b"], None, p), "x_labels"),
        (lambda p: figures.alignment_heatmap(np.ones((2, 3)), None, ["a"], p), "y_labels"),
        (lambda p: figures.alignment_heatmap(np.ones((2, 3)), None, None, p.with_suffix(".jpg")), "path"),
        (lambda p: figures.alignment_heatmap(np.ones((2, 3)), None, None, p, size=(0, 3)), "size"),
        (lambda p: figures.attention_grid(np.ones((2, 3)), p), "matrices"),
        (lambda p: figures.attention_grid([np.ones((2, 3)), np.ones(3)], p), r"matrices\[1\]"),
        (lambda p: figures.attention_grid([np.ones((2, 3))], p, titles=["a", "b"]), "titles"),
        (lambda p: figures.attention_grid([np.ones((2, 3))], p, x_labels=["a", "b"]), "x_labels"),
        (lambda p: figures.attention_grid([np.ones((2, 3))] * 2, p, y_labels=[["a", "b"], ["c"]]), r"y_labels\[1\]"),
        (lambda p: figures.mask_structure(np.ones(3, dtype=bool), p), "mask"),
        (lambda p: figures.mask_structure(np.full((2, 2), 0.5), p), "mask"),
        (lambda p: figures.mask_structure(np.ones((3, 3), dtype=bool), p, boundary=3), "boundary"),
        (lambda p: figures.mask_structure(np.ones((3, 3), dtype=bool), p, labels=["a"]), "labels"),
        (lambda p: figures.mask_structure(np.ones((3, 3), dtype=bool), p, weights=np.ones((2, 3))), "weights"),
        (lambda p: figures.line_chart({}, p), "series"),
        (lambda p: figures.line_chart({"a": ([1, 2], [1, 2, 3])}, p), r"series\['a'\]"),
        (lambda p: figures.line_chart({"a": ([0, 2], [1, 2])}, p, logx=True), r"series\['a'\]"),
        (lambda p: figures.bar_chart({}, p), "values"),
        (lambda p: figures.bar_chart({"a": 1.0}, p, errors={"b": 1.0}), "errors"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(tmp_path, call, name):
    with pytest.raises(ValueError, match=name):
        call(tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_annotated_cells_write_counts_as_integers_and_weights_with_two_decimals():
    assert figures.cell_text(6.0, counts=True) == "6" and figures.cell_text(0.0, counts=True) == "0"
    assert figures.cell_text(0.25) == ".25" and figures.cell_text(1.0) == "1.00"
