"""Datasets as folders of images: one sub-folder of PNG / JPEG / ... images per class."""

from __future__ import annotations

import io
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .. import threads
from .._fsutil import atomic_folder, open_regular
from .formats import DataError, Split

# what an image may have, checked from its header before decoding: a 48-megapixel phone photo
# fits; a 30000 x 30000 PNG of 110 KB (a decompression bomb) does not
MAX_IMAGE_PIXELS = 50_000_000
# the major brands of HEIF files (ISO/IEC 23008-12), as iPhones and many Android phones save
# their photos: Pillow reads them once the `heif` extra (pillow-heif) has registered its opener
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1",
               b"msf1")  # fmt: skip
IMAGE_KINDS = "PNG, JPEG, GIF, BMP, WebP, AVIF or HEIC"


def is_heif(head: bytes) -> bool:
    """Whether a file's first 12 bytes are a HEIF file's (an ISO box 'ftyp' of a HEIF brand)."""
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def _read_heif(name: str) -> None:
    """Let Pillow open HEIF files: pillow-heif registers its opener (once, imported here only)."""
    try:
        import pillow_heif  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise DataError(
            f"{name}: a HEIC photo (as phones save them); reading it needs the heif extra: "
            "pip install 'fashionnet[heif]', or save it as JPEG"
        ) from None
    pillow_heif.register_heif_opener()


def _limit_pixels() -> None:
    """Pillow's bomb checks at MAX_IMAGE_PIXELS, and its warning (over the limit, up to twice
    it) raised, to be caught in open_image. Set for the process, not within a block: pictures
    are read on several threads (predict, serve), and warnings.catch_warnings() swaps the filters
    of the whole process, so two threads' saves and restores would interleave. (A filter already
    there is moved to the front, not added twice.)"""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


@contextmanager
def open_image(source: Path | bytes, name: str) -> Iterator[Any]:
    """A PIL image, opened (header read, nothing decoded) and within MAX_IMAGE_PIXELS; what goes
    wrong in the block's decoding too (truncated data, Pillow's own bomb checks, which this
    limit also sets) is one DataError naming `name`."""
    from PIL import Image, UnidentifiedImageError  # imported here: only images need it

    _limit_pixels()
    bad = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
           Image.DecompressionBombWarning)  # fmt: skip
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else open_regular(source)
        with fp:
            if is_heif(fp.read(12)):
                _read_heif(name)
            fp.seek(0)
            with Image.open(fp) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise DataError(f"{name}: {w}x{h} pixels, over the limit of "
                                    f"{MAX_IMAGE_PIXELS:,}")  # fmt: skip
                yield im
    except DataError:
        raise
    except UnidentifiedImageError:  # Pillow's own message names a BytesIO object, not a file
        start = source[:8] if isinstance(source, bytes) else _head(source)
        raise DataError(
            f"{name}: not an image (it starts with {start!r}; expected {IMAGE_KINDS} data)"
        ) from None
    except bad as e:
        raise DataError(f"{name}: not a readable image ({str(e).strip()})") from None


def _head(path: Path) -> bytes:
    with open_regular(path) as f:
        return f.read(8)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".avif", ".heic", ".heif")
# a picture larger than this on a side is a photo, not a dataset image: it is framed at 28x28
# by the pipeline predict uses (photos.prepare), so a model sees its training pictures as it will
# see pictures at prediction time, and no network is built on 1200x900 inputs (the default MLP's
# weights and Adam state on those would take 17 GB)
MAX_DATASET_SIDE = 64
PHOTO_SIZE = (28, 28)


def read_image_folder(
    folder: Path,
    *,
    class_names: tuple[str, ...] | None = None,
    size: tuple[int, int] | None = None,
    every_class: bool = True,
) -> tuple[Split, tuple[str, ...]]:
    """One sub-folder per class with images inside, converted to grayscale at `size` (w, h).

    Classes are the sub-folder names in sorted order, or `class_names`, each found as a folder
    of its name or of that name without case and punctuation ('T-shirt/top', which no folder
    can be named, as t-shirt_top or "T-shirt top"); with `every_class`, all of them. A folder
    that names no class is refused rather than left out. Without `size`, the first image's
    size, or 28x28 when it is a photo. Photos (over MAX_DATASET_SIDE pixels on a side) are
    framed as predict frames them; dataset-sized images are resized to `size` when they
    differ. Pictures after the first are read on `threads.count()` threads (a folder of phone
    photos takes tens of milliseconds each).
    """
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = class_names if class_names is not None else tuple(found)
    if not found:
        raise DataError(f"{folder}: no class sub-folders (expected one folder of images per class)")
    label_of = _labels_of_folders(folder, found, names)
    missing = [n for i, n in enumerate(names) if i not in label_of.values()]
    if missing and every_class:
        raise DataError(f"{folder}: no sub-folder for class {missing[0]!r}")
    files = [(label, path) for name, label in sorted(label_of.items(), key=lambda x: x[1])
             for path in sorted((folder / name).iterdir())
             if path.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    first, size = _read_picture(files[0][1], size)
    rest = threads.map_ordered(lambda file: _read_picture(file[1], size)[0], files[1:])
    labels = np.asarray([label for label, _ in files], dtype=np.int64)
    paths = tuple(str(path) for _, path in files)
    return Split(np.stack([first, *rest]), labels, paths), tuple(names)


def _key(name: str) -> str:
    """A class name as folders spell it: no case, no punctuation or spaces."""
    return "".join(c for c in name.casefold() if c.isalnum())


def class_of(name: str, names: tuple[str, ...]) -> int | None:
    """The class among `names` that `name` stands for: the class of that name, else the one
    class of that name without case and punctuation ('t-shirt_top' is 'T-shirt/top')."""
    if name in names:
        return names.index(name)
    same = [i for i, n in enumerate(names) if _key(n) == _key(name)]
    return same[0] if len(same) == 1 else None


def _labels_of_folders(folder: Path, found: list[str], names: tuple[str, ...]) -> dict[str, int]:
    """Each sub-folder's class (class_of its name); a folder naming none is refused."""
    label_of: dict[str, int] = {}
    for sub in found:
        label = class_of(sub, names)
        if label is None:
            more = f" and {len(names) - 12} more" if len(names) > 12 else ""
            listed = ", ".join(names[:12]) + more
            raise DataError(f"{folder / sub}: names no class (the classes: {listed})")
        twin = next((other for other, k in label_of.items() if k == label), None)
        if twin is not None:
            raise DataError(f"{folder}: {twin!r} and {sub!r} are both class {names[label]!r}")
        label_of[sub] = label
    return label_of


def _read_picture(path: Path, size: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int]]:
    """One picture of an image folder as uint8 gray at `size` (w, h), and that size: without
    one, the picture's own, or PHOTO_SIZE for a photo."""
    from PIL import Image  # imported here: only image folders need it

    from .photos import prepare  # imported here: photos.py uses this module's open_image

    with open_image(path, str(path)) as im:
        if max(im.size) > MAX_DATASET_SIDE:  # a photo
            size = size or PHOTO_SIZE
            return prepare(im, (size[1], size[0]), name=str(path)), size
        gray = im.convert("L")
        size = size or gray.size
        if gray.size != size:
            gray = gray.resize(size, Image.Resampling.LANCZOS)
        return np.asarray(gray, dtype=np.uint8), size


def split_image_folder(
    source: Path, out: Path, test_fraction: float, rng: np.random.Generator
) -> dict[str, tuple[int, int]]:
    """Lay out a folder of pictures per class (photos sorted by class) as out/train/<class>/ and
    out/test/<class>/, the layout training reads: of each class's pictures, a `test_fraction`
    drawn with `rng` (at least one, where a class has two) go to test/, the others to train/.
    Files are copied, never moved or changed; `out` appears whole or not at all.
    Returns {class: (train pictures, test pictures)}."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    classes = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{source}: no class sub-folders (expected one folder of images per class)")
    if out.exists():
        raise DataError(f"{out}: already exists; give a new folder")
    plan: dict[str, list[tuple[str, Path]]] = {}
    for name in classes:
        files = sorted(
            p
            for p in (source / name).iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        n_test = min(len(files) - 1, max(1, round(len(files) * test_fraction)))
        test = set(rng.choice(len(files), max(n_test, 0), replace=False).tolist())
        plan[name] = [("test" if i in test else "train", f) for i, f in enumerate(files)]
    if not any(plan.values()):
        raise DataError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    with atomic_folder(out) as tmp:
        for name, placed in plan.items():
            for split in ("train", "test"):
                (tmp / split / name).mkdir(parents=True)
            for split, file in placed:  # a FIFO or a link to a device is refused, not waited on
                with open_regular(file) as src, open(tmp / split / name / file.name, "xb") as dst:
                    shutil.copyfileobj(src, dst)
    return {name: (sum(s == "train" for s, _ in placed), sum(s == "test" for s, _ in placed))
            for name, placed in plan.items()}  # fmt: skip
