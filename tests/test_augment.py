import numpy as np
import pytest

from fashionnet.augment import make_augment, random_erasing, random_flip, random_shift


@pytest.fixture
def images(rng):
    return rng.random((64, 6, 5)).astype(np.float32) + 1  # no zeros, so filled pixels show


def test_flip_mirrors_some_images_and_keeps_the_rest(images, rng):
    out = random_flip(images, rng)
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images, strict=True)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54
    assert out.dtype == np.float32 and not np.shares_memory(out, images)


def test_shift_moves_whole_images_and_fills_with_zeros(images, rng):
    out = random_shift(images, rng, max_shift=2)
    assert out.shape == images.shape
    for o, i in zip(out, images, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(o, np.roll(np.roll(i, dy, 0), dx, 1) * _inside(i.shape, dy, dx))
        ]
        assert len(matches) == 1
    # every shift in [-2, 2]^2 is drawn
    assert len({(o != 0).sum() for o in out}) > 3


def _inside(shape, dy, dx):
    h, w = shape
    mask = np.zeros(shape, np.float32)
    mask[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = 1
    return mask


def test_erasing_zeroes_one_rectangle_in_some_images(images, rng):
    out = random_erasing(images, rng, p=0.5)
    erased = [(o == 0) for o in out]
    counts = [int(e.sum()) for e in erased]
    assert 10 < sum(c > 0 for c in counts) < 54
    for e in erased:
        if e.any():
            rows, cols = np.flatnonzero(e.any(axis=1)), np.flatnonzero(e.any(axis=0))
            assert e.sum() == len(rows) * len(cols)  # a filled rectangle
            assert len(rows) * len(cols) <= 0.25 * 30 + 1e-9


def test_same_seed_same_augmentation(images):
    augment = make_augment({"flip": True, "shift": 1, "erase": 0.5}, (6, 5))
    assert augment is not None
    x = images.reshape(64, 30)
    a = augment(x, np.random.default_rng(3))
    b = augment(x, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape


def test_make_augment_validates():
    assert make_augment(None, (28, 28)) is None
    assert make_augment({"flip": False}, (28, 28)) is None
    with pytest.raises(ValueError, match="rotate"):
        make_augment({"rotate": 10}, (28, 28))
    with pytest.raises(ValueError, match="shift"):
        make_augment({"shift": -1}, (28, 28))
