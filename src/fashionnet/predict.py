"""Inputs for prediction: image files, CSV / IDX / NPZ files, or bytes from stdin, as uint8 images.

A photo is turned into what the model saw in training: grayscale, the object centred on a square
canvas, resized to the training size, and inverted when its background is light (Fashion-MNIST
items are light on black; product photos are usually dark on white).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import DataError, read_idx, read_npz
from .data.formats import _read_bytes, parse_csv
from .data.image_folders import IMAGE_SUFFIXES, open_image

IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF")


def prepare_image(raw: bytes, name: str, size: tuple[int, int]) -> np.ndarray:
    """Image bytes of any size and colour -> uint8 (h, w) like a training image."""
    from PIL import Image  # imported here: only photos need it

    with open_image(raw, name) as im:
        gray = np.asarray(im.convert("L"), dtype=np.uint8)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.mean() > 127:  # light background: invert, so the object is light on black
        gray = 255 - gray
    h, w = gray.shape
    side = max(h, w)
    canvas = np.zeros((side, side), np.uint8)  # pad to a square, keeping the aspect ratio
    canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = gray
    out = Image.fromarray(canvas).resize((size[1], size[0]), Image.Resampling.LANCZOS)
    return np.asarray(out, dtype=np.uint8)


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
    has_labels = first.count(b",") + 1 != n_pixels
    return parse_csv(raw, Path(name), has_labels=has_labels).images


def load_inputs(
    paths: list[str], image_shape: tuple[int, int], stdin: bytes | None = None
) -> tuple[list[str], np.ndarray]:
    """(a name per image, uint8 images (n, h, w)) from every input; '-' reads `stdin`."""
    names: list[str] = []
    images: list[np.ndarray] = []
    n_pixels = image_shape[0] * image_shape[1]
    for arg in paths:
        if arg == "-":
            raw = stdin or b""
            if raw.startswith(IMAGE_MAGIC):
                names.append("-")
                images.append(prepare_image(raw, "stdin", image_shape)[None])
            else:
                batch = _csv_images(raw, "stdin", n_pixels)
                names += [f"-:{i}" for i in range(len(batch))]
                images.append(batch)
            continue
        path = Path(arg)
        if not path.is_file():
            raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            names.append(str(path))
            images.append(prepare_image(_read_bytes(path), str(path), image_shape)[None])
            continue
        if suffix == ".npz":
            batch = read_npz(path).images
        elif suffix == ".csv":
            batch = _csv_images(_read_bytes(path), str(path), n_pixels)
        elif "idx3" in path.name or suffix in (".idx", ".gz", ".ubyte"):
            batch = read_idx(path)
        else:
            raise DataError(
                f"{path}: unknown input (expected an image, .csv, .npz, an IDX file or -)"
            )
        if batch.ndim != 3 or batch.shape[1:] != image_shape or batch.dtype != np.uint8:
            raise DataError(
                f"{path}: images are {batch.shape[1:]} {batch.dtype}, "
                f"the model expects {image_shape} uint8"
            )
        names += [f"{path}:{i}" for i in range(len(batch))]
        images.append(batch)
    return names, np.concatenate(images)
