"""Bytes -> arrays: the official IDX files, the Kaggle CSV, finding the data, splits and batches.

Imports nothing else of fashionnet, so it can be used on its own.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "FASHIONNET_DATA"
HOW_TO_GET_DATA = (
    "install it with 'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), "
    f"or pass --data PATH / set {ENV_VAR} to a folder of the four IDX files or the Kaggle CSVs"
)

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CSV_FILES = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}

# IDX type codes (the third byte of the magic number) -> numpy dtype (big-endian on disk)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_IDX_BYTES = 1 << 34  # 16 GiB: anything larger is a corrupt header, refused before allocating


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and what was expected."""


@dataclass(frozen=True)
class Split:
    """Images as stored (uint8, (n, h, w)) and integer labels (int64, (n,))."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise DataError(
                f"{len(self.images)} images but {len(self.labels)} labels: counts must agree"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    class_names: tuple[str, ...] = CLASS_NAMES
    source: str = ""


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot read ({e})") from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or .gz) exactly as stored: shape and dtype from its header."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header (4 bytes)")
    zero0, zero1, code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path}: byte 0: bad IDX magic {raw[:4].hex()}, expected 0000 + type code "
            f"(08 for uint8) + number of dimensions"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes, header of {ndim} dimensions needs {header}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.float64)) * dtype.itemsize
    if expected > _MAX_IDX_BYTES:
        raise DataError(f"{path}: header declares dimensions {dims}, far larger than any dataset")
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: byte {header}: dimensions {dims} need {expected} bytes of data, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_csv(path: str | os.PathLike[str]) -> Split:
    """Read a Kaggle-style CSV: a label column then h*w pixel columns, optional header row."""
    path = Path(path)
    text = _read_bytes(path).decode("ascii", errors="replace")
    lines = text.splitlines()
    skip = 1 if lines and lines[0][:1].isalpha() else 0
    if len(lines) <= skip:
        raise DataError(f"{path}: no data rows")
    try:
        table = np.loadtxt(lines[skip:], delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise DataError(f"{path}: {e} (data rows start at line {skip + 1})") from None
    n_pixels = table.shape[1] - 1
    side = round(n_pixels**0.5)
    if n_pixels < 1 or side * side != n_pixels:
        raise DataError(
            f"{path}: {n_pixels} pixel columns is not a square image (e.g. 784 = 28*28)"
        )
    pixels, labels = table[:, 1:], table[:, 0]
    for name, values, hi in (("pixel", pixels, 255), ("label", labels, None)):
        bad = np.flatnonzero(((values < 0) | (values > hi)).any(axis=-1) if hi else values < 0)
        if bad.size:
            raise DataError(
                f"{path}: line {bad[0] + skip + 1}: {name} out of range (expected 0..{hi or 'K-1'})"
            )
    return Split(pixels.astype(np.uint8).reshape(-1, side, side), labels)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_split(folder: Path, split: str) -> Split:
    """Load 'train' or 't10k'/'test' from a folder of IDX files or Kaggle CSVs."""
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = _find_file(folder, images_stem), _find_file(folder, labels_stem)
    if images_path and labels_path:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(
                f"{images_path}: expected images (n, h, w) and labels (n,), "
                f"got {images.shape} and {labels.shape}"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{labels_path}: {len(labels)} labels for {len(images)} images in "
                f"{images_path.name}"
            )
        return Split(images.astype(np.uint8, copy=False), labels.astype(np.int64))
    csv = folder / CSV_FILES[split]
    if csv.is_file():
        return read_csv(csv)
    raise DataError(
        f"{folder}: no {split} data (expected {images_stem}[.gz] + {labels_stem}[.gz], "
        f"or {CSV_FILES[split]})"
    )


def find_data(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the data is: PATH if given, else $FASHIONNET_DATA, else Debian's dataset folder."""
    if path is not None:
        found = Path(path)
        if not found.exists():
            raise DataError(f"{found}: no such file or folder; {HOW_TO_GET_DATA}")
        return found
    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).exists():
            raise DataError(f"{ENV_VAR}={env}: no such file or folder; {HOW_TO_GET_DATA}")
        return Path(env)
    if SYSTEM_DATA_DIR.is_dir():
        return SYSTEM_DATA_DIR
    raise DataError(f"no Fashion-MNIST data found; {HOW_TO_GET_DATA}")


def load_fashion_mnist(path: str | os.PathLike[str] | None = None) -> Dataset:
    """Training and test splits from a folder (IDX or Kaggle CSV) or a training CSV file.

    A training CSV file's test set is the file of the same name with 'train' replaced by 'test'.
    """
    where = find_data(path)
    if where.is_dir():
        return Dataset(load_split(where, "train"), load_split(where, "test"), source=str(where))
    test_csv = where.with_name(where.name.replace("train", "test"))
    if test_csv == where or not test_csv.is_file():
        raise DataError(f"{where}: no test file beside it (expected {test_csv.name})")
    return Dataset(read_csv(where), read_csv(test_csv), source=str(where))


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (n, h, w) -> float32 (n, h*w) in [0, 1]."""
    return (images.reshape(len(images), -1) * np.float32(1 / 255)).astype(np.float32, copy=False)


def train_val_split(split: Split, val_size: int, rng: np.random.Generator) -> tuple[Split, Split]:
    """Carve a validation set of val_size images from split, after a seeded shuffle."""
    if not 0 <= val_size < len(split):
        raise ValueError(f"val_size must be in [0, {len(split)}), got {val_size}")
    order = rng.permutation(len(split))
    val, train = order[:val_size], order[val_size:]
    return (
        Split(split.images[train], split.labels[train]),
        Split(split.images[val], split.labels[val]),
    )


def iterate_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, rng: np.random.Generator | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(x, y) minibatches; shuffled with rng when given. The last batch may be smaller."""
    n = len(x)
    if rng is None:
        for start in range(0, n, batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]
