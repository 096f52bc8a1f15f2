"""Seeded, vectorised batch augmentations: each maps images (n, h, w) to new images (n, h, w).

They work on a whole batch at once (no Python loop over samples) and draw all randomness from
the generator they are given, so a run is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .layers import Array

Augment = Callable[[Array, np.random.Generator], Array]


def random_flip(images: Array, rng: np.random.Generator, p: float = 0.5) -> Array:
    """Mirror each image left-right with probability p (clothes are roughly symmetric)."""
    flip = np.flatnonzero(rng.random(len(images)) < p)
    out = images.copy()
    out[flip] = images[flip, :, ::-1]
    return out


def random_shift(images: Array, rng: np.random.Generator, max_shift: int = 2) -> Array:
    """Move each image by up to max_shift pixels in x and y, filling with zeros (pad + crop)."""
    n, h, w = images.shape
    s = max_shift
    padded = np.zeros((n, h + 2 * s, w + 2 * s), images.dtype)  # faster than np.pad
    padded[:, s : s + h, s : s + w] = images
    windows = sliding_window_view(padded, (h, w), axis=(1, 2))  # (n, 2s+1, 2s+1, h, w), no copy
    dy, dx = rng.integers(0, 2 * s + 1, size=(2, n))
    return windows[np.arange(n), dy, dx]


def random_erasing(
    images: Array, rng: np.random.Generator, p: float = 0.5, max_fraction: float = 0.25
) -> Array:
    """Zero a random rectangle (area up to max_fraction) in a fraction p of the images."""
    n, h, w = images.shape
    eh = rng.integers(1, max(2, int(h * max_fraction**0.5) + 1), n)
    ew = rng.integers(1, max(2, int(w * max_fraction**0.5) + 1), n)
    top = (rng.random(n) * (h - eh + 1)).astype(np.int64)
    left = (rng.random(n) * (w - ew + 1)).astype(np.int64)
    apply = np.less(rng.random(n), p)
    rows, cols = np.arange(h), np.arange(w)
    inside_r = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (n, h)
    inside_c = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (n, w)
    erase = inside_r[:, :, None] & inside_c[:, None, :] & apply[:, None, None]
    return np.where(erase, images.dtype.type(0), images)


def make_augment(config: dict[str, Any] | None, image_shape: tuple[int, int]) -> Augment | None:
    """{'flip': True, 'shift': 2, 'erase': 0.0} -> a function on flat (n, h*w) batches, or None."""
    if not config:
        return None
    unknown = set(config) - {"flip", "shift", "erase"}
    if unknown:
        raise ValueError(f"unknown augmentation {sorted(unknown)}; expected flip, shift, erase")
    flip, shift, erase = (
        bool(config.get("flip")),
        int(config.get("shift", 0)),
        config.get("erase", 0.0),
    )
    if shift < 0 or not 0.0 <= erase <= 1.0:
        raise ValueError(f"augmentation shift must be >= 0 and erase in [0, 1], got {config}")

    def augment(x: Array, rng: np.random.Generator) -> Array:
        images = x.reshape(len(x), *image_shape)
        if flip:
            images = random_flip(images, rng)
        if shift:
            images = random_shift(images, rng, shift)
        if erase:
            images = random_erasing(images, rng, erase)
        return images.reshape(x.shape)

    return augment if (flip or shift or erase) else None
