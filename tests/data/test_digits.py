"""Digit canvases: pools, shapes, value range, determinism, provenance and label balance."""

import numpy as np
import pytest
import torch

from attnlab.data.digits import DIGIT, cluttered, digit_strings, pool_indices, relational


def test_pools_are_disjoint_stratified_and_complete():
    train, test = pool_indices("train"), pool_indices("test")
    assert len(train) == 1438 and len(test) == 359
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target[test], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of 174..183 per class


GENERATORS = {
    "cluttered": (lambda split, seed: cluttered(40, split, seed=seed), (32, 32)),
    "relational_same": (lambda split, seed: relational(40, split, question="same", seed=seed), (16, 64)),
    "relational_sum": (lambda split, seed: relational(40, split, question="sum", seed=seed), (16, 64)),
    "digit_strings": (lambda split, seed: digit_strings(40, split, seed=seed), (12, 64)),
}


@pytest.mark.parametrize("name", list(GENERATORS))
def test_shapes_range_determinism_and_provenance(name):
    make, (height, width) = GENERATORS[name]
    canvases = make("test", 7)
    images = canvases.images
    assert images.shape == (40, 1, height, width) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.9
    again = make("test", 7)
    assert torch.equal(images, again.images) and canvases.sources == again.sources
    assert not torch.equal(images, make("test", 8).images)
    assert not torch.equal(images, make("train", 7).images)
    test_pool = set(pool_indices("test").tolist())
    assert all(set(used) <= test_pool for used in canvases.sources)
    train_pool = set(pool_indices("train").tolist())
    assert all(set(used) <= train_pool for used in make("train", 7).sources)


def test_cluttered_labels_and_clutter_count():
    from sklearn.datasets import load_digits

    targets = load_digits().target
    c = cluttered(30, "train", size=28, clutter=3, seed=0)
    assert c.images.shape == (30, 1, 28, 28) and c.labels.dtype == torch.long
    assert [targets[s[0]] for s in c.sources] == c.labels.tolist()
    assert all(len(s) == 4 and s[0] not in s[1:] for s in c.sources)
    assert cluttered(5, "train", clutter=0, seed=0).images.sum(dim=(1, 2, 3)).gt(0).all()


def test_relational_same_is_balanced_and_correct():
    from sklearn.datasets import load_digits

    targets = load_digits().target
    r = relational(101, "test", question="same", seed=3)
    assert int(r.labels.sum()) == 51
    for (left, right, *_), label in zip(r.sources, r.labels.tolist(), strict=True):
        assert label == int(targets[left] == targets[right]) and left != right
    s = relational(200, "train", question="sum", seed=3)
    assert s.labels.tolist() == [int(targets[a] + targets[b]) for a, b, *_ in s.sources]
    assert s.labels.min() >= 0 and s.labels.max() <= 18


def test_relational_digits_sit_in_the_outer_quarters():
    r = relational(50, "train", clutter=0, seed=1)
    ink_columns = r.images.amax(dim=(1, 2)) > 0  # (N, W)
    assert not ink_columns[:, 16:48].any()
    assert ink_columns[:, :16].any(dim=1).all() and ink_columns[:, 48:].any(dim=1).all()


def test_digit_strings_labels():
    from sklearn.datasets import load_digits

    targets = load_digits().target
    d = digit_strings(60, "train", min_digits=2, max_digits=4, height=10, width=48, seed=0)
    assert d.images.shape == (60, 1, 10, 48)
    assert {len(labels) for labels in d.labels} == {2, 3, 4}
    assert d.labels == [[int(targets[i]) for i in used] for used in d.sources]


def test_bad_input():
    with pytest.raises(ValueError, match="split: expected one of"):
        cluttered(1, "dev")
    with pytest.raises(ValueError, match=f"size: expected an int >= {DIGIT}, received 6"):
        cluttered(1, "train", size=6)
    with pytest.raises(ValueError, match="question: expected one of"):
        relational(1, "train", question="bigger")
    with pytest.raises(ValueError, match="width: expected an int >= 56, received 50"):
        digit_strings(1, "train", width=50)
