"""Photo-like pictures made from 28x28 dataset images: the kinds of files users bring to predict.

Each kind turns one Fashion-MNIST image (a light garment on black) into the bytes of a picture as
people have them: a dark garment on a white or grey backdrop, larger, in a real file format.
Used by tests/test_images.py and benchmarks/photos.py (the table in BENCHMARKS.md).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

KINDS = ("plain", "exif", "transparent", "16bit", "canvas", "grey", "gradient")


def _garment(image: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(opacity 0..1, shade 0..255) at `side` pixels: the garment is dark where the dataset image
    is bright, like a product shot before the dataset negated it."""
    big = Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC)
    alpha = np.clip(np.asarray(big, np.float64) / 255.0, 0.0, 1.0)
    return alpha, np.full(alpha.shape, 25.0)


def _on(backdrop: np.ndarray, alpha: np.ndarray, shade: np.ndarray) -> np.ndarray:
    return np.clip(backdrop * (1 - alpha) + shade * alpha, 0, 255).round().astype(np.uint8)


def _png(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def make(kind: str, image: np.ndarray, rng: np.random.Generator) -> bytes:
    """The bytes of a `kind` picture of the 28x28 uint8 `image`."""
    alpha, shade = _garment(image, 280)
    white = np.full(alpha.shape, 255.0)
    if kind == "plain":  # RGB, white backdrop
        gray = _on(white, alpha, shade)
        return _png(Image.fromarray(np.stack([gray] * 3, axis=-1)))
    if kind == "exif":  # a JPEG stored sideways, with the tag that makes viewers show it upright
        gray = _on(white, alpha, shade)
        stored = Image.fromarray(np.stack([gray] * 3, axis=-1)).transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 CW to display"
        out = io.BytesIO()
        stored.save(out, "JPEG", quality=90, exif=exif.tobytes())
        return out.getvalue()
    if kind == "transparent":  # RGBA: black under the transparent background, as exporters write
        rgb = np.zeros((*alpha.shape, 3), np.uint8)
        rgb[...] = shade[..., None].astype(np.uint8)
        a = (np.clip(alpha * 1.6, 0, 1) * 255).round().astype(np.uint8)  # object fully opaque
        rgb[a == 0] = 0
        return _png(Image.fromarray(np.dstack([rgb, a])))
    if kind == "16bit":  # 16-bit grayscale PNG
        gray = _on(white, alpha, shade).astype(np.uint16) * 257
        return _png(Image.fromarray(gray))
    if kind == "canvas":  # a garment of about 150x200 somewhere on a 1200x1200 white canvas
        rows, cols = np.nonzero(image)
        crop = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        h, w = crop.shape
        scale = 200 / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        a = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC), np.float64)
        canvas = np.full((1200, 1200), 255.0)
        top, left = rng.integers(50, 1200 - 250, size=2)
        patch = canvas[top : top + size[1], left : left + size[0]]
        patch[...] = _on(patch, np.clip(a / 255, 0, 1), np.full(a.shape, 25.0))
        return _png(Image.fromarray(canvas.astype(np.uint8)))
    if kind == "grey":  # light grey backdrop (170)
        return _png(Image.fromarray(_on(np.full(alpha.shape, 170.0), alpha, shade)))
    if kind == "gradient":  # a studio backdrop: light at the top, darker at the bottom
        ramp = np.linspace(235, 150, alpha.shape[0])[:, None] * np.ones((1, alpha.shape[1]))
        noisy = ramp + rng.normal(0, 2.0, ramp.shape)
        return _png(Image.fromarray(_on(noisy, alpha, shade)))
    raise ValueError(f"unknown kind {kind!r}")
