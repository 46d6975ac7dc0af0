"""digits.pointer: shapes, determinism, provenance, balance, labels and the arrow's place."""

import numpy as np
import pytest
import torch

from attnlab.data.digits import ARROW, DIGIT, POINTER_MIN_WIDTH, pointer, pool_indices


def _targets() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


def _arrow_direction(image: np.ndarray) -> str | None:
    """Where the arrow in the middle columns points, read back from the pixels (None if no full arrow is there)."""
    height, width = image.shape
    for y in range(height - ARROW.shape[0] + 1):
        for x in range(width // 2 - 2, width // 2):
            patch = image[y : y + ARROW.shape[0], x : x + ARROW.shape[1]]
            for direction, arrow in (("left", ARROW), ("right", ARROW[:, ::-1])):
                if np.all(patch[arrow > 0] == 1.0):
                    return direction
    return None


def test_shapes_determinism_and_pools():
    c = pointer(40, "test", seed=3)
    assert c.images.shape == (40, 1, 16, POINTER_MIN_WIDTH) and c.images.dtype == torch.float32
    assert c.images.min() >= 0 and c.images.max() == 1.0 and c.labels.dtype == torch.long
    again = pointer(40, "test", seed=3)
    assert torch.equal(c.images, again.images) and c.sources == again.sources
    assert not torch.equal(c.images, pointer(40, "test", seed=4).images)
    assert all(set(s) <= set(pool_indices("test").tolist()) for s in c.sources)
    assert all(set(s) <= set(pool_indices("train").tolist()) for s in pointer(40, "train", seed=3).sources)
    assert pointer(5, "train", height=20, width=96, clutter=0).images.shape == (5, 1, 20, 96)


def test_label_is_the_class_of_the_pointed_digit_and_directions_are_balanced():
    targets = _targets()
    c = pointer(61, "train", clutter=0, seed=1)
    assert c.labels.tolist() == [int(targets[s[0]]) for s in c.sources]
    assert all(len(s) == 2 and s[0] != s[1] for s in c.sources)
    directions = [_arrow_direction(image[0].numpy()) for image in c.images]
    assert directions.count("left") == 31 and directions.count("right") == 30  # ceil(61 / 2) point left
    # Without clutter the pointed digit is on the side the arrow shows: its pixels are all in that outer band.
    for image, direction, (pointed, _) in zip(c.images, directions, c.sources, strict=True):
        band = image[0, :, : 2 * DIGIT] if direction == "left" else image[0, :, -2 * DIGIT :]
        digit = torch.from_numpy(_digit_pixels(pointed))
        assert any(torch.equal(band[y : y + DIGIT, x : x + DIGIT], digit) for y in range(9) for x in range(9))


def _digit_pixels(index: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[index] / 16.0).astype(np.float32)


def test_arrow_is_far_from_both_digits():
    """Columns between the digits' bands and the arrow stay empty without clutter: more than 22 of them per side."""
    images = pointer(50, "train", clutter=0, seed=2).images[:, 0]  # (N, H, W)
    used = images.amax(dim=(0, 1)) > 0  # (W,) columns touched by any canvas
    empty = (~used).nonzero().flatten().tolist()
    assert set(range(2 * DIGIT, POINTER_MIN_WIDTH // 2 - 2)) <= set(empty)
    assert set(range(POINTER_MIN_WIDTH // 2 + 2, POINTER_MIN_WIDTH - 2 * DIGIT)) <= set(empty)
    assert (POINTER_MIN_WIDTH // 2 - 2) - 2 * DIGIT >= 22


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="width"):
        pointer(4, "train", width=64)
    with pytest.raises(ValueError, match="split"):
        pointer(4, "dev")
    with pytest.raises(TypeError, match="n"):
        pointer(2.5, "train")
