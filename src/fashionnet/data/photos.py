"""Pictures as the model saw its training images: one pipeline for every photo, file or array.

Fashion-MNIST's images were made from product photos by a documented pipeline (Xiao et al.,
2017): trim to the object, resize the longest side to 28, extend the short side to 28 with the
object centred, negate, 8-bit grayscale. A prediction is only as good as its replay of those
steps, so `prepare` replays them on what users bring, in the dataset's order:

1. the EXIF orientation is applied (phones store pictures sideways and tag them);
2. transparency is composited onto white (cut-out product shots);
3. any mode and bit depth becomes 8-bit grayscale (16-bit PNGs scaled, not clipped);
4. the background is estimated from the border (a plane through the border pixels, so white,
   grey and gradient backdrops all go) and subtracted; on a light background the difference is
   taken the other way round, which is the dataset's negation;
5. the object is cropped to its bounding box and its longest side resized to the inner box,
   keeping the aspect ratio, then centred on the canvas (by its box, as the dataset did, or by
   its centre of mass);
6. the contrast is stretched so the brightest pixel is 255, as in the training images.

A picture that already is in the dataset's format (the model's size, a black background) passes
unchanged: the training images, saved as PNG, come back as they were.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .formats import DataError
from .image_folders import open_image

# border pixels used to fit the background; more add nothing but time on a 48-megapixel photo
_BORDER_SAMPLES = 4096
# pictures are box-reduced to this longest side before the pipeline runs
_MAX_SIDE = 1024


def to_gray(im: Any) -> np.ndarray:
    """A PIL image of any mode, orientation and bit depth -> float64 gray 0..255 on white, its
    longest side at most _MAX_SIDE (a 28-pixel view needs no more, and a 48-megapixel photo as
    floats would take 400 MB)."""
    from PIL import Image, ImageOps  # imported here: only pictures need it

    if max(im.size) > 2 * _MAX_SIDE and im.format == "JPEG":  # decode at a fraction of the size
        im.draft("L", (im.size[0] // 2, im.size[1] // 2))
    if "exif" in im.info or "xmp" in im.info or "XML:com.adobe.xmp" in im.info:
        im = ImageOps.exif_transpose(im)  # only pictures with metadata can be turned
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16-bit / 32-bit gray: scaled
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        gray = Image.fromarray(np.clip(a * (255.0 / top), 0, 255).round().astype(np.uint8))
    elif im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        gray = Image.alpha_composite(white, rgba).convert("L")
    else:
        gray = im.convert("L")
    factor = -(-max(gray.size) // _MAX_SIDE)
    if factor > 1:
        gray = gray.reduce(factor)
    return np.asarray(gray, dtype=np.float64)


def _border(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of the pixels on the picture's outer ring, evenly thinned."""
    h, w = gray.shape
    rows = np.concatenate([np.zeros(w), np.full(w, h - 1), np.arange(h), np.arange(h)])
    cols = np.concatenate([np.arange(w), np.arange(w), np.zeros(h), np.full(h, w - 1)])
    step = max(1, len(rows) // _BORDER_SAMPLES)
    rows, cols = rows[::step].astype(np.intp), cols[::step].astype(np.intp)
    return rows, cols, gray[rows, cols]


def background(gray: np.ndarray) -> tuple[np.ndarray | float, float]:
    """(the background under every pixel, the noise of the border around it).

    The border's most common shade starts the estimate (an object touching the edge covers
    less of the border than the backdrop does); a plane through the border pixels near it is
    then refitted a few times, so a gradient backdrop is followed. A flat backdrop comes back
    as one number, exact when it is exact (a black dataset image: 0.0).
    """
    rows, cols, values = _border(gray)
    counts, edges = np.histogram(values, bins=32, range=(0.0, 256.0))
    peak = int(np.argmax(counts))
    level = float(np.median(values[(values >= edges[peak]) & (values < edges[peak + 1])]))
    near = np.abs(values - level) <= 24.0
    h, w = gray.shape
    x, y = cols / max(w - 1, 1) - 0.5, rows / max(h - 1, 1) - 0.5
    design = np.stack([np.ones_like(x), x, y], axis=1)
    spread = 0.0
    for _ in range(6):
        coef = np.linalg.lstsq(design[near], values[near], rcond=None)[0]
        residual = values - design @ coef
        spread = 1.4826 * float(np.median(np.abs(residual[near])))
        near = np.abs(residual) <= max(12.0, 3.0 * spread)
    if abs(coef[1]) + abs(coef[2]) <= max(4.0, 2.0 * spread):  # no real slope: a flat backdrop
        flat = float(np.median(values[near]))
        return flat, 1.4826 * float(np.median(np.abs(values[near] - flat)))
    noise = spread
    across = coef[1] * (np.arange(w) / max(w - 1, 1) - 0.5)
    down = coef[2] * (np.arange(h) / max(h - 1, 1) - 0.5)
    return coef[0] + down[:, None] + across[None, :], noise


def _bounding_box(obj: np.ndarray, level: float) -> tuple[slice, slice] | None:
    """The rows and columns holding the object: those with pixels above `level` (a few on a big
    picture, so a speck of noise does not stretch the box to the corner)."""
    mask = obj > level
    need_r, need_c = max(1, obj.shape[1] // 400), max(1, obj.shape[0] // 400)
    rows = np.flatnonzero(mask.sum(axis=1) >= need_r)
    cols = np.flatnonzero(mask.sum(axis=0) >= need_c)
    if not len(rows) or not len(cols):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _fit(obj: np.ndarray, size: tuple[int, int], inner: int, centre: str) -> np.ndarray:
    """The cropped object resized so its longest side is `inner`, on a canvas of `size`."""
    from PIL import Image

    h, w = obj.shape
    scale = inner / max(h, w)
    nh, nw = min(size[0], max(1, round(h * scale))), min(size[1], max(1, round(w * scale)))
    if (nh, nw) != (h, w):
        small = Image.fromarray(obj.astype(np.float32), mode="F")
        small = small.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
        obj = np.clip(np.asarray(small, dtype=np.float64), 0, None)
    # an odd margin puts its extra pixel above and left, as in the dataset's images
    top, left = (size[0] - nh + 1) // 2, (size[1] - nw + 1) // 2
    if centre == "mass" and obj.sum() > 0:  # move the centre of mass to the middle, box inside
        cy, cx = (np.indices(obj.shape) * obj).reshape(2, -1).sum(axis=1) / obj.sum()
        top = int(np.clip(round((size[0] - 1) / 2 - cy), 0, size[0] - nh))
        left = int(np.clip(round((size[1] - 1) / 2 - cx), 0, size[1] - nw))
    canvas = np.zeros(size)
    canvas[top : top + nh, left : left + nw] = obj
    return canvas


def _dataset_format(gray: np.ndarray) -> bool:
    """Whether a picture at the model's size already is a dataset image: most of its border
    exactly black (its object may cover much of it: the dataset's longest sides touch the edges)."""
    edges = (gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1])
    black = sum(int(np.count_nonzero(edge == 0.0)) for edge in edges)
    return black >= 0.25 * sum(len(edge) for edge in edges)


def prepare_gray(
    gray: np.ndarray, size: tuple[int, int], *, inner: int | None = None, centre: str = "box"
) -> np.ndarray:
    """8-bit-range float gray (h, w) of any size -> uint8 `size`, as a training image."""
    if gray.shape == size and _dataset_format(gray):
        return np.clip(gray, 0, 255).round().astype(np.uint8)
    bg, noise = background(gray)
    light = float(np.mean(bg)) > 127.0
    obj = np.clip((bg - gray) if light else (gray - bg), 0.0, None)
    floor = 3.0 * noise  # what the backdrop's own grain reaches
    obj = np.clip(obj - floor, 0.0, None)
    peak = float(obj.max())
    if peak <= 0.0:
        return np.zeros(size, np.uint8)  # nothing but background
    if gray.shape != size:
        box = _bounding_box(obj, 0.05 * peak)
        if box is not None:
            obj = obj[box]
        obj = _fit(obj, size, inner or min(size), centre)
    peak = float(obj.max())
    if peak > 0.0:
        obj = obj * (255.0 / peak)
    return np.clip(obj, 0, 255).round().astype(np.uint8)


def prepare(
    source: Any, size: tuple[int, int], *, name: str = "image", centre: str = "box"
) -> np.ndarray:
    """A picture (bytes of an image file, a PIL image, or a gray / RGB / RGBA array) -> uint8
    `size` image as the model's training images were made."""
    from PIL import Image

    if isinstance(source, bytes | bytearray):
        with open_image(bytes(source), name) as im:  # a decoding error is its DataError too
            gray = to_gray(im)
    elif isinstance(source, Image.Image):
        gray = to_gray(source)
    else:
        gray = array_to_gray(np.asarray(source), name)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise DataError(f"{name}: an empty picture")
    return prepare_gray(gray, size, centre=centre)


def array_to_gray(a: np.ndarray, name: str) -> np.ndarray:
    """A gray (h, w) or colour (h, w, 3|4) array, uint8 / uint16 / float 0..1 or 0..255 ->
    float gray 0..255; anything else is one DataError naming what was expected."""
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        from PIL import Image

        if a.dtype != np.uint8:
            a = np.clip(_to_255(a, name), 0, 255).round().astype(np.uint8)
        return to_gray(Image.fromarray(a, mode="RGBA" if a.shape[-1] == 4 else "RGB"))
    if a.ndim != 2:
        raise DataError(
            f"{name}: an array of shape {a.shape}; expected one picture: (height, width) gray "
            "or (height, width, 3 or 4) colour"
        )
    return _to_255(a, name)


def _to_255(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float64)
    if a.dtype == np.uint16:
        return a.astype(np.float64) * (255.0 / 65535.0)
    if a.dtype.kind != "f" or a.size == 0 or not np.isfinite(a).all():
        raise DataError(f"{name}: {a.dtype} pixels; expected uint8, uint16 or finite floats")
    top = float(a.max())
    if a.min() < 0 or top > 255:
        raise DataError(
            f"{name}: pixel values from {a.min():g} to {top:g}; expected 0..1 or 0..255"
        )
    return a.astype(np.float64) * (255.0 if top <= 1.0 else 1.0)
