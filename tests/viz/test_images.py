"""overlay_maps: a small PNG per call; bad arguments raise errors that name the argument."""

from __future__ import annotations

import numpy as np
import pytest

from attnlab.viz.images import overlay_maps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _maps(k: int, h: int, w: int) -> np.ndarray:
    maps = np.random.default_rng(0).random((k, h, w))
    return maps / maps.sum(axis=(1, 2), keepdims=True)


def test_writes_a_small_png_for_a_wide_canvas_and_for_a_square_map(tmp_path):
    canvas = np.random.default_rng(1).random((12, 64))
    path = overlay_maps(canvas, _maps(4, 6, 32), ["3", "1", "4", "<eos>"], tmp_path / "reader.png", title="per token")
    assert path == tmp_path / "reader.png"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) < 200_000
    # a map on the image's own grid, a query marker, no titles, panels on one shared scale, a new directory
    square = overlay_maps(np.zeros((16, 16)), _maps(2, 16, 16), None, tmp_path / "sub" / "pixel.png",
                          query=(3, 12), shared_scale=True, columns=2)  # fmt: skip
    assert square.read_bytes().startswith(PNG_MAGIC)


def test_accepts_tensors_and_lists(tmp_path):
    torch = pytest.importorskip("torch")
    path = overlay_maps(torch.rand(8, 8), torch.rand(1, 4, 4), ["gate"], tmp_path / "g.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    path = overlay_maps([[0.0, 1.0], [1.0, 0.0]], [[[0.5, 0.5], [0.0, 0.0]]], ["a"], tmp_path / "l.png")
    assert path.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("args", "options", "error", "match"),
    [
        ((np.zeros((1, 12, 64)), _maps(1, 6, 32), None), {}, ValueError, r"image: expected a non-empty array \[H, W\]"),
        ((np.zeros((12, 64)), _maps(1, 6, 32)[0], None), {}, ValueError, r"maps: expected a non-empty array \[K"),
        ((np.zeros((12, 64)), np.zeros((0, 6, 32)), None), {}, ValueError, "maps: expected a non-empty array"),
        ((np.zeros((12, 64)), -_maps(1, 6, 32), None), {}, ValueError, "maps: expected values >= 0"),
        ((np.zeros((12, 64)), np.full((1, 6, 32), np.nan), None), {}, ValueError, "maps: expected finite values"),
        ((np.zeros((12, 64)), _maps(1, 24, 32), None), {}, ValueError, "maps: expected a grid no finer"),
        ((np.zeros((12, 64)), _maps(2, 6, 32), ["only one"]), {}, ValueError, "titles: expected 2 titles"),
        ((np.zeros((12, 64)), _maps(1, 6, 32), "one"), {}, TypeError, "titles: expected a list"),
        ((np.zeros((12, 64)), _maps(1, 6, 32), None), {"query": (12, 0)}, ValueError, "query: expected a pixel"),
        ((np.zeros((12, 64)), _maps(1, 6, 32), None), {"query": 3}, ValueError, r"query: expected \(row, col\)"),
        ((np.zeros((12, 64)), _maps(1, 6, 32), None), {"columns": 0}, ValueError, "columns: expected a positive"),
        ((np.zeros((12, 64)), _maps(1, 6, 32), None), {"alpha": 0.0}, ValueError, "alpha: expected a value"),
        ((np.array([["a"]]), _maps(1, 1, 1), None), {}, TypeError, "image: expected an array"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, args, options, error, match):
    with pytest.raises(error, match=match):
        overlay_maps(*args, tmp_path / "x.png", **options)
    assert not (tmp_path / "x.png").exists()


def test_refuses_a_path_that_is_not_png(tmp_path):
    with pytest.raises(ValueError, match=r"path: expected a \.png file name"):
        overlay_maps(np.zeros((4, 4)), _maps(1, 2, 2), None, tmp_path / "x.jpg")
