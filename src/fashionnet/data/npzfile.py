"""Datasets as .npz files: `x` (uint8 images) and `y` (integer labels), read with every member's
dtype and shape checked from its header before anything is inflated."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .formats import _MAX_IDX_BYTES, ZIP_ERRORS, DataError, Split, _check_file, _check_labels, _open


def read_npz(path: str | os.PathLike[str], *, n_classes: int | None = None) -> Split:
    """An .npz with `x` (uint8, (n, h, w) or (n, h*w) square) and `y` (integer labels)."""
    path = Path(path)
    _check_file(path)
    try:
        with _open(path) as f:
            if f.read(4) != b"PK\x03\x04":
                raise DataError(f"{path}: byte 0: not an .npz archive (expected a zip of x and y)")
            f.seek(0)
            npz = np.load(f, allow_pickle=False)
            missing = {"x", "y"} - set(npz.files)
            if missing:
                raise DataError(f"{path}: no array {sorted(missing)[0]!r} (expected x and y)")
            for name, kinds in (("x", "u"), ("y", "iu")):  # from the headers, before inflating
                dtype, shape = _npz_member(npz, name)
                if dtype.kind not in kinds or dtype.itemsize * math.prod(shape) > _MAX_IDX_BYTES:
                    wanted = "uint8 pixels" if name == "x" else "integer labels"
                    raise DataError(f"{path}: {name} is {dtype} {shape}, expected {wanted}")
            x, y = npz["x"], npz["y"]
    except DataError:
        raise
    except (*ZIP_ERRORS, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz of numbers ({e})") from None
    if x.dtype != np.uint8:
        raise DataError(f"{path}: x has dtype {x.dtype}, expected uint8 pixels 0..255")
    if x.ndim == 2 and round(x.shape[1] ** 0.5) ** 2 == x.shape[1]:
        side = round(x.shape[1] ** 0.5)
        x = x.reshape(len(x), side, side)
    if x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[1] == 0:
        raise DataError(f"{path}: x has shape {x.shape}, expected (n, h, w) square images")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(
            f"{path}: y has shape {y.shape} and dtype {y.dtype}, expected (n,) integers"
        )
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    labels = y.astype(np.int64)
    _check_labels(path, labels, n_classes)
    return Split(x, labels)


def read_arrays(path: str | os.PathLike[str]) -> np.ndarray:
    """The images of an .npz (its `x`; `y` may be absent) or an .npy, as stored: numbers of any
    shape, the header checked before anything is read (no pickles, no absurd sizes)."""
    path = Path(path)
    _check_file(path)
    try:
        with _open(path) as f:
            magic = f.read(6)
            f.seek(0)
            if magic == b"\x93NUMPY":
                version = np.lib.format.read_magic(f)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(f))  # fmt: skip
                _check_numbers(path, "the array", dtype, shape)
                f.seek(0)
                return np.asarray(np.load(f, allow_pickle=False))
            if magic[:4] != b"PK\x03\x04":
                raise DataError(f"{path}: byte 0: not an .npz or .npy file")
            npz = np.load(f, allow_pickle=False)
            if "x" not in npz.files:
                raise DataError(f"{path}: no array 'x' (expected the images as x)")
            _check_numbers(path, "x", *_npz_member(npz, "x"))
            return np.asarray(npz["x"])
    except DataError:
        raise
    except (*ZIP_ERRORS, ValueError) as e:
        raise DataError(f"{path}: not a readable array file ({e})") from None


def _check_numbers(path: Path, name: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    if dtype.kind not in "uif" or dtype.itemsize * math.prod(shape) > _MAX_IDX_BYTES:
        raise DataError(f"{path}: {name} is {dtype} {shape}, expected numbers (pixels)")


def _npz_member(npz: Any, name: str) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """(dtype, shape) of an .npz member from its .npy header alone."""
    with npz.zip.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    return dtype, shape


def write_npz(path: Path, split: Split) -> None:
    with open(path, "wb") as f:
        np.savez(f, x=split.images, y=split.labels)
