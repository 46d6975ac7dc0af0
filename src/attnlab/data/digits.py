"""Digit canvases built from scikit-learn's 8x8 digits (``load_digits``: 1,797 images, pixels 0..16).

Pools first: the 1,797 images are split once, stratified by class, with a fixed seed (``POOL_SEED``): in each
class a permutation puts ``round(0.2 * count)`` images in the test pool and the rest in the train pool, giving
1,438 train and 359 test images. Canvases of split ``s`` draw every digit and every clutter crop from pool ``s``
only, so no test canvas contains a pixel of a training image. Each canvas records the dataset indices it used
(``Canvases.sources``), which is how the tests check this.

Digits keep their native 8x8 size (no resampling); pixels are scaled to [0, 1]; overlapping pieces combine by
maximum. Every generator is a pure function of ``(seed, split)`` and its arguments, and returns float32 images
[N, 1, H, W]:

* :func:`cluttered`: one digit anywhere on a square canvas among 3x3 / 4x4 crops of other digits; 10 classes.
* :func:`relational`: two digits in the outer quarters of a wide canvas; are they the same class, or their sum.
* :func:`digit_strings`: 3-5 digits left to right with random gaps, for an image-to-text reader.
* :func:`pointer`: two digits at the far ends of a wide canvas and an arrow in the middle; the label is the class
  of the digit the arrow points at (a long-range question that a bag of local features cannot answer).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from attnlab.data.vocab import check_int

SPLITS = ("train", "test")
POOL_SEED = 0
TEST_FRACTION = 0.2
DIGIT = 8  # side of a digit image, pixels
MAX_GAP = 4  # widest gap between neighbouring digits in digit_strings, pixels
QUESTIONS = ("same", "sum")
POINTER_MIN_WIDTH = 80  # pointer(): keeps the arrow more than 22 columns from either digit
# pointer(): the arrow, 5 rows x 3 columns, pointing left (mirrored for right)
ARROW = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1], [0, 0, 1]], dtype=np.float32)


@dataclass(frozen=True)
class Canvases:
    """Images [N, 1, H, W] float32 in [0, 1]; labels: LongTensor [N] or, for digit strings, one list of digit
    classes per image; sources: per image, the ``load_digits`` indices used (digits first, then clutter)."""

    images: torch.Tensor
    labels: torch.Tensor | list[list[int]]
    sources: list[tuple[int, ...]]


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """All images as float32 [1797, 8, 8] in [0, 1], and their labels [1797]."""
    from sklearn.datasets import load_digits  # lab dependency; imported here so the package imports without it

    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


@functools.cache
def _pools() -> dict[str, np.ndarray]:
    labels = _digits()[1]
    rng = np.random.default_rng(POOL_SEED)
    test = []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[: round(TEST_FRACTION * len(members))])
    test_idx = np.sort(np.concatenate(test))
    return {"train": np.setdiff1d(np.arange(len(labels)), test_idx), "test": test_idx}


def pool_indices(split: str) -> np.ndarray:
    """Sorted ``load_digits`` indices of the images that canvases of ``split`` may use (a copy)."""
    return _pools()[_check_split(split)].copy()


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, received {split!r}")
    return split


class _Painter:
    """Draws digits and clutter from one pool onto canvases, recording which images it used."""

    def __init__(self, split: str, seed: int) -> None:
        self.images, self.labels = _digits()
        self.pool = _pools()[_check_split(split)]
        self.by_class = [self.pool[self.labels[self.pool] == c] for c in range(10)]
        self.rng = np.random.default_rng([check_int("seed", seed, 0), SPLITS.index(split)])

    def pick(self, digit_class: int | None = None, exclude: tuple[int, ...] = ()) -> int:
        """A random image index of the pool (of ``digit_class`` if given), not in ``exclude``."""
        candidates = self.pool if digit_class is None else self.by_class[digit_class]
        while True:
            index = int(candidates[self.rng.integers(len(candidates))])
            if index not in exclude:
                return index

    def paste(self, canvas: np.ndarray, patch: np.ndarray, y: int, x: int) -> None:
        h, w = patch.shape
        np.maximum(canvas[y : y + h, x : x + w], patch, out=canvas[y : y + h, x : x + w])

    def digit(self, canvas: np.ndarray, index: int, y: int, x: int) -> None:
        self.paste(canvas, self.images[index], y, x)

    def clutter(self, canvas: np.ndarray, count: int, sizes: tuple[int, ...], exclude: tuple[int, ...]) -> list[int]:
        """Paste ``count`` random square crops (side from ``sizes``) of images not in ``exclude``."""
        used = []
        height, width = canvas.shape
        for _ in range(count):
            k = int(sizes[self.rng.integers(len(sizes))])
            index = self.pick(exclude=exclude)
            cy, cx = self.rng.integers(0, DIGIT - k + 1, size=2)
            y, x = self.rng.integers(0, height - k + 1), self.rng.integers(0, width - k + 1)
            self.paste(canvas, self.images[index, cy : cy + k, cx : cx + k], y, x)
            used.append(index)
        return used


def _as_images(canvases: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(canvases).unsqueeze(1)  # (N, 1, H, W)


def cluttered(n: int, split: str, size: int = 32, clutter: int = 4, seed: int = 0) -> Canvases:
    """One digit at a uniform position on a ``size`` x ``size`` canvas, plus ``clutter`` 3x3 or 4x4 crops of
    other images of the same pool; the label is the digit's class. Finding the digit among look-alike strokes
    is what attention should help with."""
    n = check_int("n", n, 0)
    size = check_int("size", size, DIGIT)
    clutter = check_int("clutter", clutter, 0)
    painter = _Painter(split, seed)
    canvases = np.zeros((n, size, size), dtype=np.float32)
    labels, sources = [], []
    for canvas in canvases:
        index = painter.pick()
        used = painter.clutter(canvas, clutter, (3, 4), exclude=(index,))
        y, x = painter.rng.integers(0, size - DIGIT + 1, size=2)
        painter.digit(canvas, index, y, x)
        labels.append(int(painter.labels[index]))
        sources.append((index, *used))
    return Canvases(_as_images(canvases), torch.tensor(labels, dtype=torch.long), sources)


def relational(
    n: int, split: str, height: int = 16, width: int = 64, question: str = "same", clutter: int = 2, seed: int = 0
) -> Canvases:
    """Two digits, one inside the left quarter and one inside the right quarter of the canvas, each with
    horizontal and vertical jitter, plus ``clutter`` 3x3 crops of other images anywhere.

    ``question="same"``: label 1 if both digits have the same class, else 0; exactly ``ceil(n/2)`` positives, in
    random order; classes uniform in both cases. ``question="sum"``: label = sum of the two classes (0..18).

    Why 16x64: the left digit covers columns [x, x+8) with x <= 8 and the right one [x', x'+8) with x' >= 48, so
    at least 32 empty columns separate them and covering both needs a 48-pixel window. A stack of four 3x3
    stride-1 convolutions sees 9 pixels; even with a 2x2 pooling after each of the first three it sees 38. So
    no unit of a small local CNN sees both digits whole: the pair can only be related after global pooling
    (a bag of per-digit features) or by attention.
    """
    n = check_int("n", n, 0)
    height = check_int("height", height, DIGIT)
    width = check_int("width", width, 4 * DIGIT)
    clutter = check_int("clutter", clutter, 0)
    if question not in QUESTIONS:
        raise ValueError(f"question: expected one of {QUESTIONS}, received {question!r}")
    painter = _Painter(split, seed)
    rng = painter.rng
    same = rng.permutation(np.arange(n) < (n + 1) // 2)  # exactly balanced, used by question="same" only
    quarter = width // 4
    canvases = np.zeros((n, height, width), dtype=np.float32)
    labels, sources = [], []
    for canvas, is_same in zip(canvases, same, strict=True):
        if question == "same":
            first = int(rng.integers(10))
            second = first if is_same else (first + int(rng.integers(1, 10))) % 10
            left = painter.pick(first)
            right = painter.pick(second, exclude=(left,))
            labels.append(int(is_same))
        else:
            left = painter.pick()
            right = painter.pick(exclude=(left,))
            labels.append(int(painter.labels[left] + painter.labels[right]))
        used = painter.clutter(canvas, clutter, (3,), exclude=(left, right))
        painter.digit(canvas, left, int(rng.integers(0, height - DIGIT + 1)), int(rng.integers(0, quarter - DIGIT + 1)))
        x_right = int(rng.integers(width - quarter, width - DIGIT + 1))
        painter.digit(canvas, right, int(rng.integers(0, height - DIGIT + 1)), x_right)
        sources.append((left, right, *used))
    return Canvases(_as_images(canvases), torch.tensor(labels, dtype=torch.long), sources)


def digit_strings(
    n: int, split: str, min_digits: int = 3, max_digits: int = 5, height: int = 12, width: int = 64, seed: int = 0
) -> Canvases:
    """``min_digits``..``max_digits`` digits left to right, gaps of 0..``MAX_GAP`` pixels, the string starting at a
    random column, each digit with its own vertical jitter; labels are the digit classes left to right.
    ``width`` must fit the longest string with the widest gaps."""
    n = check_int("n", n, 0)
    min_digits = check_int("min_digits", min_digits, 1)
    max_digits = check_int("max_digits", max_digits, min_digits)
    height = check_int("height", height, DIGIT)
    width = check_int("width", width, max_digits * DIGIT + (max_digits - 1) * MAX_GAP)
    painter = _Painter(split, seed)
    rng = painter.rng
    canvases = np.zeros((n, height, width), dtype=np.float32)
    labels, sources = [], []
    for canvas in canvases:
        count = int(rng.integers(min_digits, max_digits + 1))
        gaps = rng.integers(0, MAX_GAP + 1, size=count - 1)
        x = int(rng.integers(0, width - (count * DIGIT + int(gaps.sum())) + 1))
        used = []
        for i in range(count):
            index = painter.pick(exclude=tuple(used))
            painter.digit(canvas, index, int(rng.integers(0, height - DIGIT + 1)), x)
            used.append(index)
            x += DIGIT + (int(gaps[i]) if i < count - 1 else 0)
        labels.append([int(painter.labels[i]) for i in used])
        sources.append(tuple(used))
    return Canvases(_as_images(canvases), labels, sources)


def pointer(n: int, split: str, height: int = 16, width: int = 80, clutter: int = 2, seed: int = 0) -> Canvases:
    """Two digits, one within the leftmost and one within the rightmost 16 columns (horizontal jitter 0..8,
    vertical jitter anywhere), an arrow (:data:`ARROW`, 5x3, pointing left or right) in the middle columns at a
    random row, and ``clutter`` 3x3 crops of other images anywhere. The label is the class of the digit the arrow
    points at (10 classes); exactly ``ceil(n/2)`` arrows point left, in random order. ``sources`` lists the pointed
    digit first, then the other digit, then the clutter.

    Why: the ``same`` question of :func:`relational` is long-range but learns slowly from a one-bit label; here the
    label names a digit (rich supervision) and the question is still relational, *which* digit depends on a symbol
    far from both. A CNN whose head is linear on globally averaged local features (the average of a per-position
    head) scores ``a(arrow) + g(left digit) + h(right digit)``; a sum cannot select one digit by the arrow's
    direction, so it tops out near 55% (one side always: 50%, plus the 10% of canvases whose digits agree, half of
    which it would miss otherwise). Geometry: the digits cover columns <= 15 and >= ``width - 16``; the arrow
    covers columns ``width // 2 - 2 .. width // 2 + 1``; at ``width >= 80`` more than 22 columns separate the arrow
    from either digit, so a unit that sees 25 pixels (a four-stage ResNet-style CNN's last stage) sees at most two
    columns of a digit together with the arrow.
    """
    n = check_int("n", n, 0)
    height = check_int("height", height, DIGIT)
    width = check_int("width", width, POINTER_MIN_WIDTH)
    clutter = check_int("clutter", clutter, 0)
    painter = _Painter(split, seed)
    rng = painter.rng
    points_left = rng.permutation(np.arange(n) < (n + 1) // 2)
    arrow_height = ARROW.shape[0]
    canvases = np.zeros((n, height, width), dtype=np.float32)
    labels, sources = [], []
    for canvas, left_pointed in zip(canvases, points_left, strict=True):
        left = painter.pick()
        right = painter.pick(exclude=(left,))
        used = painter.clutter(canvas, clutter, (3,), exclude=(left, right))
        painter.digit(canvas, left, int(rng.integers(0, height - DIGIT + 1)), int(rng.integers(0, DIGIT + 1)))
        x_right = int(rng.integers(width - 2 * DIGIT, width - DIGIT + 1))
        painter.digit(canvas, right, int(rng.integers(0, height - DIGIT + 1)), x_right)
        arrow = ARROW if left_pointed else ARROW[:, ::-1]
        y = int(rng.integers(0, height - arrow_height + 1))
        x = width // 2 - 2 + int(rng.integers(0, 2))  # columns width//2 - 2 .. width//2 + 1
        painter.paste(canvas, np.ascontiguousarray(arrow), y, x)
        pointed, other = (left, right) if left_pointed else (right, left)
        labels.append(int(painter.labels[pointed]))
        sources.append((pointed, other, *used))
    return Canvases(_as_images(canvases), torch.tensor(labels, dtype=torch.long), sources)
