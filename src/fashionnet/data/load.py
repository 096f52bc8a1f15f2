"""Finding the data, loading train and test splits, class names, splits and batches."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._fsutil import atomic_folder
from .formats import (
    DataError,
    Split,
    _check_labels,
    _read_bytes,
    parse_idx,
    read_csv,
    read_idx_bytes,
    write_csv,
    write_idx,
)
from .image_folders import read_image_folder
from .integrity import check_idx_bytes
from .npzfile import read_npz, write_npz

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


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    class_names: tuple[str, ...] = CLASS_NAMES
    source: str = ""
    warnings: tuple[str, ...] = ()  # e.g. an official file whose checksum does not match


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_file(path: Path, n_classes: int | None = None) -> Split:
    """One split from a single file: a Kaggle-style .csv or an .npz of x and y."""
    if path.suffix == ".npz":
        return read_npz(path, n_classes=n_classes)
    if path.suffix in (".csv", ".txt") or path.name.endswith(".csv.gz"):
        return read_csv(path, n_classes=n_classes)
    raise DataError(
        f"{path}: unknown data file type (expected .csv, .npz or a folder of IDX files)"
    )


def load_split(
    folder: Path, split: str, n_classes: int | None = None, notes: list[str] | None = None
) -> Split:
    """Load 'train' or 'test' from a folder: IDX files, then Kaggle CSV, then <split>.npz.

    Official IDX files are checked against their known checksums; a mismatch adds a line to
    `notes` (the data still loads: it may be a deliberately modified copy).
    """
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = _find_file(folder, images_stem), _find_file(folder, labels_stem)
    if images_path and labels_path:
        arrays = []
        for path in (images_path, labels_path):
            raw = read_idx_bytes(path)
            check = check_idx_bytes(path, raw)
            if check is not None and not check.ok and notes is not None:
                notes.append(
                    f"{path}: {check.detail}: damaged, or not the official Fashion-MNIST file "
                    f"(expected for other datasets under the same names, such as MNIST)"
                )
            arrays.append(parse_idx(raw, path))
        images, labels = arrays
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(
                f"{images_path}: expected images (n, h, w) and labels (n,), "
                f"got {images.shape} and {labels.shape}"
            )
        if images.dtype != np.uint8 or labels.dtype.kind not in "iu":
            raise DataError(f"{images_path}: expected uint8 images and integer labels")
        if len(images) != len(labels):
            raise DataError(
                f"{labels_path}: {len(labels)} labels for {len(images)} images in "
                f"{images_path.name}"
            )
        labels = labels.astype(np.int64)
        _check_labels(labels_path, labels, n_classes)
        return Split(images, labels)
    for name in (CSV_FILES[split], f"{split}.npz"):
        if (folder / name).is_file():
            return read_file(folder / name, n_classes)
    raise DataError(_no_split(folder, split))


def read_class_names(path: Path) -> tuple[str, ...] | None:
    """classes.txt, one class name per line (label 0 first), if there is one."""
    if not path.is_file():
        return None
    names = tuple(line.strip() for line in _read_bytes(path).decode(errors="replace").splitlines())
    names = tuple(n for n in names if n)
    if not names:
        raise DataError(f"{path}: no class names (expected one per line)")
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:  # two labels under one name: no prediction could tell them apart
        raise DataError(f"{path}: {twice!r} names two classes; each line must name a class once")
    return names


def find_data(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the data is: PATH if given, else $FASHIONNET_DATA, else Debian's dataset folder.

    An official IDX file given stands for its folder."""
    if path is not None:
        found = Path(path)
        if not found.exists():
            raise DataError(f"{found}: no such file or folder; {HOW_TO_GET_DATA}")
        return _folder_of_idx(found)
    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).exists():
            raise DataError(f"{ENV_VAR}={env}: no such file or folder; {HOW_TO_GET_DATA}")
        return _folder_of_idx(Path(env))
    if SYSTEM_DATA_DIR.is_dir():
        return SYSTEM_DATA_DIR
    raise DataError(f"no Fashion-MNIST data found; {HOW_TO_GET_DATA}")


SPLITS = ("train", "test")


@dataclass(frozen=True)
class Splits:
    """Whichever splits a dataset holds: `data info`, `show` and `convert` take a folder of the
    test files alone, training needs both (load_fashion_mnist)."""

    found: dict[str, Split]
    missing: dict[str, str]  # split -> why it is not there, as one line
    class_names: tuple[str, ...]
    source: str
    warnings: tuple[str, ...] = ()


def _folder_of_idx(path: Path) -> Path:
    """An official IDX file stands for the folder of the four (its images and labels are two
    files, and both splits are found there by their names)."""
    idx = {stem + gz for stems in IDX_FILES.values() for stem in stems for gz in ("", ".gz")}
    return path.parent if path.name in idx and not path.is_dir() else path


def load_fashion_mnist(path: str | os.PathLike[str] | None = None) -> Dataset:
    """Training and test splits from a folder (IDX, Kaggle CSV, train/test .npz, or train/ and
    test/ folders of images in one sub-folder per class) or a training file.

    A training file's test set is the file of the same name with 'train' replaced by 'test'.
    Class names come from classes.txt beside the data, else the ten Fashion-MNIST names when
    the labels fit in 0..9, else the label numbers.
    """
    data = load_splits(path, need=SPLITS)
    train, test = data.found["train"], data.found["test"]
    return Dataset(train, test, data.class_names, source=data.source, warnings=data.warnings)


def load_splits(
    path: str | os.PathLike[str] | None = None, *, need: tuple[str, ...] = ()
) -> Splits:
    """The splits found where load_fashion_mnist looks; one in `need` that is not there raises
    DataError, before any file is read. A file names its split ('train' or 'test' in its name),
    and its twin, the same name with the other word, is the other split; a file naming neither
    is test data (as evaluate reads it)."""
    where = find_data(path)
    folder = where if where.is_dir() else where.parent
    names = read_class_names(folder / "classes.txt")
    sources, missing = _locate(where)
    for split in need:
        if split in missing:
            raise DataError(missing[split])
    notes: list[str] = []
    found: dict[str, Split] = {}
    size = None  # test images are read at the training images' size
    for split, (kind, source) in sources.items():
        if kind == "images":
            found[split], names = read_image_folder(source, class_names=names, size=size)
            size = found[split].images.shape[2:0:-1]
        elif kind == "files":
            found[split] = load_split(source, split, None, notes)
        else:
            found[split] = read_file(source)
    top = max((int(s.labels.max(initial=0)) for s in found.values()), default=0)
    if names is not None and top >= len(names):  # said here: the label files are not wrong
        raise DataError(
            f"{folder / 'classes.txt'}: names {len(names)} classes, but the labels go up to "
            f"{top}; it needs one name per label, label 0 first"
        )
    if names is None:
        k = top + 1
        names = CLASS_NAMES if k <= len(CLASS_NAMES) else tuple(str(i) for i in range(k))
    shapes = {split: s.images.shape[1:] for split, s in found.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(
            f"{where}: training images are {shapes['train']}, test images "
            f"{shapes['test']}: they must agree"
        )
    return Splits(found, missing, names, source=str(where), warnings=tuple(notes))


def _locate(where: Path) -> tuple[dict[str, tuple[str, Path]], dict[str, str]]:
    """Where each split of the data at `where` is, as (kind, path) with kind "images" (a folder
    per class), "files" (a folder of IDX / CSV / .npz files) or "file"; and for a split that is
    not there, why, as one line. Nothing is read."""
    sources: dict[str, tuple[str, Path]] = {}  # split -> ("images" | "files" | "file", path)
    missing: dict[str, str] = {}
    named = next((w for w in SPLITS if w in where.name), None)  # the split a file names
    for split in SPLITS:
        twin = where.with_name(where.name.replace(named, split)) if named else where
        if where.is_dir() and _reads_images(where, split):
            sources[split] = ("images", where / split)
        elif where.is_dir() and _has_split(where, split):
            sources[split] = ("files", where)
        elif split == "test" and _class_folders_only(where):  # photos sorted by class
            sources[split] = ("images", where)
        elif _class_folders_only(where):
            missing[split] = (
                f"{_no_split(where, split)}; its sub-folders are read as test images, one "
                "per class (training needs train/ and test/ folders of such sub-folders: "
                f"fashionnet data split {where} NEW_FOLDER lays them out)"
            )
        elif where.is_dir():
            missing[split] = _no_split(where, split)
        elif split == (named or "test"):  # a file naming none is test data, as evaluate has it
            sources[split] = ("file", where)
        elif named and twin.exists():  # a FIFO there is said to be one when read
            sources[split] = ("file", twin)
        elif named:
            missing[split] = f"{where}: no {split} file beside it (expected {twin.name})"
        else:  # "expected x.csv" would name the file itself
            missing[split] = (
                f"{where}: a training file's name must hold 'train' (its test file is named "
                "with 'test' in its place), or pass their folder"
            )
    return sources, missing


def _reads_images(folder: Path, split: str) -> bool:
    """Whether `split` comes from folder/split/, one sub-folder of images per class: beside the
    other split's image folder, or where the folder holds no `split` files."""
    other = "test" if split == "train" else "train"
    here = folder.is_dir() and (folder / split).is_dir()
    return here and ((folder / other).is_dir() or not _has_split(folder, split))


def _class_folders_only(folder: Path) -> bool:
    """Whether `folder` holds sub-folders (of images per class, then) and no split's data."""
    return (
        folder.is_dir()
        and not any(_reads_images(folder, s) or _has_split(folder, s) for s in SPLITS)
        and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())
    )


def _no_split(folder: Path, split: str) -> str:
    images, labels = IDX_FILES[split]
    return (
        f"{folder}: no {split} data (expected {images}[.gz] + {labels}[.gz], "
        f"{CSV_FILES[split]}, {split}.npz or a {split}/ folder of images)"
    )


def _has_split(folder: Path, split: str) -> bool:
    """Whether load_split finds `split` files in `folder`."""
    idx = all(_find_file(folder, stem) for stem in IDX_FILES[split])
    return idx or any((folder / n).is_file() for n in (CSV_FILES[split], f"{split}.npz"))


def load_test_split(
    path: str | os.PathLike[str] | None = None,
    *,
    class_names: tuple[str, ...] | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[Split, str, tuple[str, ...]]:
    """Only the test split, for measuring a trained model: (split, source, warnings).

    Found as load_fashion_mnist finds it, with no training data needed: a folder's test files
    (IDX, CSV, test.npz) or its test/ image folder, read with the model's `class_names` and
    image `size` (w, h); a file whose name holds 'train' stands for its test file, any other
    .csv or .npz file is the test split itself. A folder with none of these but sub-folders is
    itself the folder of images per class (photos sorted by class). Image folders may hold
    some of the classes only.
    """
    sources, missing = _locate(find_data(path))
    if "test" not in sources:
        raise DataError(missing["test"])
    kind, source = sources["test"]
    if kind == "images":
        test, _ = read_image_folder(source, class_names=class_names, size=size, every_class=False)
        return test, str(source), ()
    if kind == "files":
        notes: list[str] = []
        return load_split(source, "test", None, notes), str(source), tuple(notes)
    return read_file(source), str(source), ()


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


def write_dataset(out: Path, data: Dataset | Splits, fmt: str) -> None:
    """Train and test splits, or those of `data` there are, and classes.txt into the new
    folder `out`, all or nothing.

    Everything is written into a hidden temporary folder beside `out`, renamed into place
    when complete; on any error nothing is left behind.
    """
    if out.exists():
        raise DataError(f"{out}: already exists; give a new folder")
    if not out.parent.is_dir():
        raise DataError(f"{out}: folder {out.parent} does not exist")
    splits = data.found if isinstance(data, Splits) else {"train": data.train, "test": data.test}
    with atomic_folder(out) as tmp:
        for name, split in splits.items():
            if fmt == "idx":
                images, labels = IDX_FILES[name]
                write_idx(tmp / f"{images}.gz", split.images)
                write_idx(
                    tmp / f"{labels}.gz",
                    split.labels.astype(
                        np.uint8 if split.labels.max(initial=0) < 256 else np.int32
                    ),
                )
            elif fmt == "csv":
                write_csv(tmp / CSV_FILES[name], split)
            elif fmt == "npz":
                write_npz(tmp / f"{name}.npz", split)
            else:
                raise ValueError(f"format must be idx, csv or npz, got {fmt!r}")
        if data.class_names != CLASS_NAMES:
            (tmp / "classes.txt").write_text("\n".join(data.class_names) + "\n")
