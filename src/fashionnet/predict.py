"""Inputs for prediction, as the model's uint8 images: picture files, folders of them, pictures'
http(s) addresses, CSV / IDX / NPZ / NPY files, bytes from stdin, and from Python PIL images and
arrays.

Every picture goes through the one pipeline in data/photos.py; arrays that already have the model's
image size are taken as they are (they are dataset images), other arrays are pictures too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import threads
from .data import DataError, read_idx
from .data.download import fetch_picture, is_url
from .data.formats import _read_bytes, parse_csv
from .data.image_folders import IMAGE_KINDS, IMAGE_SUFFIXES
from .data.npzfile import read_arrays
from .data.photos import array_to_gray, prepare

IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF")
ARRAY_SUFFIXES = (".npz", ".npy")
IDX_SUFFIXES = (".idx", ".gz", ".ubyte")
EXPECTED = f"an image ({IMAGE_KINDS}), a folder of them, .csv, .npz, .npy, IDX or -"
# pictures fetched at once when some inputs are addresses: a fetch mostly waits on the network,
# and browsers open six connections to a server
URL_WORKERS = 6


def _csv_images(raw: bytes, name: str, n_pixels: int) -> np.ndarray:
    """A CSV with or without the label column (told apart by its width): uint8 images."""
    first, start = b"", 0
    while start < len(raw):  # the first data row, found without splitting the whole input
        end = raw.find(b"\n", start)
        end = len(raw) if end == -1 else end
        line = raw[start:end].strip()
        if line and not line[:1].isalpha():
            first = line
            break
        start = end + 1
    width = first.count(b",") + 1
    if first and width not in (n_pixels, n_pixels + 1):
        raise DataError(
            f"{name}: rows of {width} values, expected {n_pixels} pixels (or a label and "
            f"{n_pixels} pixels)"
        )
    images = parse_csv(raw, Path(name), has_labels=width != n_pixels).images
    side = _square(n_pixels)
    return images.reshape(len(images), side, side) if images.ndim == 2 and side else images


def as_images(batch: np.ndarray, name: str, shape: tuple[int, int]) -> np.ndarray:
    """Arrays from a file or from Python -> uint8 (n, h, w) at the model's `shape`.

    (n, h, w) or one (h, w) image; flat (n, h*w) rows when h*w is the model's or a square; uint8,
    uint16 or floats 0..1 / 0..255. Images of another size are pictures: the pipeline frames them.
    """
    n_pixels = shape[0] * shape[1]
    if batch.ndim == 2 and batch.shape[1] == n_pixels and batch.shape != shape:
        batch = batch.reshape(len(batch), *shape)
    elif batch.ndim == 2 and batch.shape != shape and _square(batch.shape[1]):
        side = _square(batch.shape[1])
        batch = batch.reshape(len(batch), side, side)
    elif batch.ndim == 2 or (
        batch.ndim == 3 and batch.shape[-1] in (3, 4) and min(batch.shape[:2]) > 4
    ):
        batch = batch[None]  # one picture, gray or colour
    if batch.ndim == 1:
        raise DataError(
            f"{name}: a list of {len(batch)} numbers (labels?), expected images (n, "
            f"{shape[0]}, {shape[1]})"
        )
    if (
        batch.ndim not in (3, 4)
        or 0 in batch.shape
        or (batch.ndim == 4 and batch.shape[-1] not in (3, 4))
    ):
        raise DataError(f"{name}: an array of shape {batch.shape}, expected images (n, h, w)")
    if batch.dtype == np.uint8 and batch.shape[1:] == shape:
        return batch
    views = [np.clip(array_to_gray(im, name), 0, 255).round().astype(np.uint8)
             if im.shape == shape else prepare(im, shape, name=name) for im in batch]  # fmt: skip
    return np.stack(views)


def _is_image(raw: bytes) -> bool:
    """Picture data, by its first bytes (AVIF and HEIC: an ISO 'ftyp' box)."""
    return raw.startswith(IMAGE_MAGIC) or raw[4:8] == b"ftyp"


def _square(n: int) -> int:
    side = round(n**0.5)
    return side if side * side == n and side > 1 else 0


def _folder_images(folder: Path) -> list[Path]:
    """The pictures in a folder and its sub-folders, sorted, hidden entries left out."""
    found = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]  # fmt: skip
    if not found:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return sorted(found)


def _file(path: Path, shape: tuple[int, int]) -> tuple[list[str], np.ndarray]:
    """(names, uint8 images) of one input file, by its name and, failing that, its first bytes."""
    suffix, name = path.suffix.lower(), str(path)
    if suffix in IMAGE_SUFFIXES:
        return [name], prepare(_read_bytes(path), shape, name=name)[None]
    if suffix in ARRAY_SUFFIXES:
        return _numbered(name, as_images(read_arrays(path), name, shape))
    if suffix == ".csv":
        return _numbered(name, _csv_images(_read_bytes(path), name, shape[0] * shape[1]))
    if "idx" in path.name or suffix in IDX_SUFFIXES:
        return _numbered(name, as_images(read_idx(path), name, shape))
    raw = _read_bytes(path)
    if _is_image(raw):
        return [name], prepare(raw, shape, name=name)[None]
    if raw.startswith((b"PK\x03\x04", b"\x93NUMPY")):
        return _numbered(name, as_images(read_arrays(path), name, shape))
    raise DataError(f"{name}: unknown input (expected {EXPECTED})")


def _numbered(name: str, batch: np.ndarray) -> tuple[list[str], np.ndarray]:
    return [f"{name}:{i}" for i in range(len(batch))], batch


def _one(arg: str, shape: tuple[int, int], stdin: bytes | None) -> tuple[list[str], np.ndarray]:
    if arg == "-":
        raw = stdin or b""
        if _is_image(raw):
            return ["-"], prepare(raw, shape, name="stdin")[None]
        return _numbered("-", _csv_images(raw, "stdin", shape[0] * shape[1]))
    if is_url(arg):
        return [arg], prepare(fetch_image(arg), shape, name=arg)[None]
    path = Path(arg)
    if not path.exists() and "://" in arg:
        raise DataError(f"{arg}: only http:// and https:// addresses are fetched")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return _file(path, shape)


def fetch_image(url: str) -> bytes:
    """The picture at an http(s) address; a web page or other content is one line saying so."""
    raw, kind = fetch_picture(url)
    if _is_image(raw):
        return raw
    if kind == "text/html":
        raise DataError(
            f"{url}: a web page, not a picture; give the picture's own address (a browser's "
            "'Copy image address')"
        )
    raise DataError(f"{url}: not a picture (the server sent {kind}; expected {IMAGE_KINDS})")


def _picture(path: Path, shape: tuple[int, int]) -> tuple[list[str], np.ndarray]:
    return [str(path)], prepare(_read_bytes(path), shape, name=str(path))[None]


def iter_inputs(
    paths: Iterable[str], shape: tuple[int, int], stdin: bytes | None = None
) -> Iterator[Callable[[], tuple[list[str], np.ndarray]]]:
    """A reader per input, in order, each returning (names, uint8 images) or raising the
    DataError of that input alone; a folder gives one per picture in it."""
    for arg in paths:
        path = Path(arg)
        if arg == "-" or is_url(arg) or not path.is_dir():
            yield partial(_one, arg, shape, stdin)
            continue
        try:
            pictures = _folder_images(path)
        except DataError as e:
            yield partial(_raise, e)
            continue
        for picture in pictures:
            yield partial(_picture, picture, shape)


def _raise(e: Exception) -> Any:
    raise e


def _call(read: Callable[[], tuple[list[str], np.ndarray]]) -> Any:
    return read()


def _attempt(read: Callable[[], tuple[list[str], np.ndarray]]) -> Any:
    try:
        return read()
    except DataError as e:
        return e


def load_inputs(
    paths: list[str],
    shape: tuple[int, int],
    stdin: bytes | None = None,
    *,
    on_error: Callable[[DataError], None] | None = None,
) -> tuple[list[str], np.ndarray]:
    """(a name per image, uint8 images (n, h, w)) from every input; '-' reads `stdin`. An input
    that cannot be read raises its DataError, or with `on_error` is passed to it and left out
    (then the images may be none: (0, h, w)).

    Inputs are read on `threads.count()` threads (decoding a phone photo takes tens of
    milliseconds), or URL_WORKERS where some are addresses, in input order."""
    names: list[str] = []
    images = [np.zeros((0, *shape), np.uint8)]
    read = _attempt if on_error is not None else _call  # _call: the first error stops the rest
    workers = max(threads.count(), URL_WORKERS) if any(map(is_url, paths)) else None
    for result in threads.map_ordered(read, list(iter_inputs(paths, shape, stdin)), workers):
        if isinstance(result, DataError) and on_error is not None:
            on_error(result)
            continue
        names += result[0]
        images.append(result[1])
    return names, np.concatenate(images)


def to_images(inputs: Any, shape: tuple[int, int]) -> tuple[list[str], np.ndarray]:
    """What classify() takes, as (names, uint8 images): a path or an http(s) address (str or
    Path), bytes, a PIL image, an array (one picture, or a batch), or a list of any of these."""
    from PIL import Image

    one = isinstance(inputs, str | Path | bytes | Image.Image | np.ndarray)
    names: list[str] = []
    images: list[np.ndarray] = []
    for i, item in enumerate([inputs] if one else list(inputs)):
        if isinstance(item, str | Path):
            found, batch = load_inputs([str(item)], shape)
        elif isinstance(item, bytes):
            found, batch = [f"bytes:{i}"], prepare(item, shape, name=f"input {i}")[None]
        elif isinstance(item, Image.Image):
            found, batch = [f"image:{i}"], prepare(item, shape, name=f"input {i}")[None]
        else:
            batch = as_images(np.asarray(item), f"input {i}", shape)
            found = (
                [f"array:{i}"] if len(batch) == 1 else [f"array:{i}:{j}" for j in range(len(batch))]
            )
        names += found
        images.append(batch)
    if not images:
        raise DataError("no inputs")
    return names, np.concatenate(images)
