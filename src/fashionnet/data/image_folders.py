"""Datasets as folders of images: one sub-folder of PNG / JPEG / ... images per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .formats import DataError, Split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def read_image_folder(
    folder: Path, *, class_names: tuple[str, ...] | None = None, size: tuple[int, int] | None = None
) -> tuple[Split, tuple[str, ...]]:
    """One sub-folder per class with images inside, converted to grayscale at `size`.

    Classes are the sub-folder names in sorted order (or `class_names`, which must all exist).
    Without `size`, every image must already have the size of the first one.
    """
    from PIL import Image, UnidentifiedImageError  # imported here: only image folders need it

    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = class_names if class_names is not None else tuple(found)
    if not names:
        raise DataError(f"{folder}: no class sub-folders (expected one folder of images per class)")
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{folder}: no sub-folder for class {missing[0]!r}")
    images, labels = [], []
    for label, name in enumerate(names):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as im:
                    gray = im.convert("L")
                    if size is None:
                        size = gray.size
                    if gray.size != size:
                        gray = gray.resize(size, Image.Resampling.LANCZOS)
                    images.append(np.asarray(gray, dtype=np.uint8))
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise DataError(f"{path}: not a readable image ({e})") from None
            labels.append(label)
    if not images:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64)), tuple(names)
