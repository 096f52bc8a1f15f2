"""fashionnet data info|verify|download|show|split|convert: inspect, check, fetch, lay out and
convert datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .._text import shown
from ..data import ENV_VAR, DataError, Splits, find_data, load_splits, write_dataset
from ..data.download import download
from ..data.image_folders import split_image_folder
from ..data.integrity import verify_folder
from ._common import UsageError, non_negative_int, positive_int


def add_parser(sub: Any) -> None:
    da = sub.add_parser("data", help="inspect, check and convert datasets")
    dsub = da.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    info = dsub.add_parser("info", help="format, counts, image size and classes of a dataset")
    info.add_argument("path", nargs="?", help="dataset folder or training file (default: found)")
    verify = dsub.add_parser("verify", help="check the official files against their checksums")
    verify.add_argument("path", nargs="?", help="folder of the IDX files (default: found)")
    dl = dsub.add_parser("download", help="fetch the four official files (needs internet)")
    dl.add_argument("--dir", type=Path, help="destination (default: the user cache folder)")
    dl.add_argument("--url", default=None, help="mirror to fetch from (default: the official one)")
    show = dsub.add_parser("show", help="a labelled grid of a dataset's images, as a picture")
    show.add_argument("path", nargs="?", help="dataset folder or training file (default: found)")
    pick = show.add_mutually_exclusive_group()
    pick.add_argument(
        "--index",
        type=non_negative_int,
        nargs="+",
        help="these images (default: the first 8 of each class)",
    )
    pick.add_argument(
        "--per-class", type=positive_int, help="the first K of each class (default: 8)"
    )
    show.add_argument("--split", choices=["train", "test"],
                      help="which split (default: train, or test where there is no "
                      "training data)")  # fmt: skip
    show.add_argument(
        "--out", type=Path, required=True, help="picture file (.png, .svg, .pdf) (required)"
    )
    split = dsub.add_parser("split", help="lay out photos sorted by class as train/ and test/")
    split.add_argument("path", type=Path, help="folder with one sub-folder of pictures per class")
    split.add_argument("out", type=Path,
                       help="new folder for train/<class>/ and test/<class>/ (copies)")  # fmt: skip
    split.add_argument("--test-fraction", type=_fraction, default=0.2,
                       help="share of each class's pictures for test/ (default: 0.2)")  # fmt: skip
    split.add_argument("--seed", type=non_negative_int, default=0,
                       help="which pictures are drawn (default: 0)")  # fmt: skip
    conv = dsub.add_parser("convert", help="write a dataset in another format")
    conv.add_argument("path", help="dataset folder or training file")
    conv.add_argument("out", type=Path,
                      help="new folder for the converted train and test files (or the one "
                      "split there is)")  # fmt: skip
    conv.add_argument("--format", choices=["idx", "csv", "npz"], required=True,
                      help="idx: the official layout; csv: the Kaggle layout; npz: x and y "
                      "arrays (required)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.data_command == "verify":
        folder = find_data(args.path)
        folder = folder if folder.is_dir() else folder.parent
        checks = verify_folder(folder)
        if not checks:
            raise UsageError(f"{folder}: no official Fashion-MNIST IDX files to verify")
        for check in checks:
            print(check.line())
        return 0 if all(c.ok for c in checks) else 1
    if args.data_command == "download":
        kwargs = {"base_url": args.url} if args.url else {}
        folder = download(args.dir, log=print, **kwargs)
        print(f"done: {folder} (use it with --data {folder} or {ENV_VAR}={folder})")
        return 0
    if args.data_command == "split":
        return _split(args)
    if args.data_command == "show" and args.out.suffix.lower() not in PICTURE_TYPES:
        raise UsageError(f"--out {args.out}: expected a {', '.join(PICTURE_TYPES)} file name")
    # a folder of the test files alone is a dataset here too (what evaluate reads)
    data = load_splits(args.path)
    if not data.found:
        raise DataError(next(iter(data.missing.values())))
    if args.data_command == "show":
        return _show(data, args)
    if args.data_command == "info":
        print(f"data {data.source}")
        for name in ("train", "test"):
            if name not in data.found:
                print(f"{name}: none; {data.missing[name]}")
                continue
            split = data.found[name]
            counts = np.bincount(split.labels, minlength=len(data.class_names))
            per_class = ", ".join(
                f"{shown(n)} {c}" for n, c in zip(data.class_names, counts, strict=False)
            )
            h, w = split.images.shape[1:]
            print(f"{name}: {len(split)} images {h}x{w} {split.images.dtype}; {per_class}")
        for note in data.warnings:
            print(f"warning: {note}")
        return 0
    write_dataset(args.out, data, args.format)
    written = ", ".join(f"{len(split)} {name}" for name, split in data.found.items())
    absent = "".join(f"; no {name} data" for name in data.missing)
    print(f"wrote {args.out} ({args.format}: {written} images{absent})")
    return 0


PICTURE_TYPES = (".png", ".svg", ".pdf")
MAX_GRID = 2000  # pictures in one grid: beyond this nobody can read it, and it takes gigabytes


def _show(data: Splits, args: argparse.Namespace) -> int:
    """Write a grid of images titled with their index and class: chosen ones, or K per class."""
    which = args.split or ("train" if "train" in data.found else "test")
    if which not in data.found:
        raise DataError(data.missing[which])
    split = data.found[which]
    names = data.class_names
    if args.index and len(args.index) > MAX_GRID:
        raise UsageError(
            f"--index: {len(args.index):,} pictures; a grid shows at most {MAX_GRID:,}"
        )
    if args.index:
        bad = [i for i in args.index if i >= len(split)]
        if bad:
            raise UsageError(
                f"--index {bad[0]}: the {which} split has {len(split)} images "
                f"(expected 0..{len(split) - 1})"
            )
        picks, columns = list(args.index), min(8, len(args.index))
    else:
        k = args.per_class or 8
        if k * len(names) > MAX_GRID:
            raise UsageError(f"--per-class {k}: {k * len(names):,} pictures; at most {MAX_GRID:,}")
        picks = []  # class by class, a row each; -1 leaves a cell empty
        for c in range(len(names)):
            found = np.flatnonzero(split.labels == c)[:k].tolist()
            picks += found + [-1] * (k - len(found))
        columns = k
    from ..plots import image_grid

    blank = np.zeros(split.images.shape[1:], np.uint8)
    images = np.stack([split.images[i] if i >= 0 else blank for i in picks])
    titles = [f"#{i} {shown(names[split.labels[i]])}" if i >= 0 else "" for i in picks]
    image_grid(images, titles, args.out, columns=columns)
    print(f"wrote {args.out} ({sum(i >= 0 for i in picks)} {which} images)")
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _split(args: argparse.Namespace) -> int:
    if not args.path.is_dir():
        raise UsageError(f"{args.path}: not a folder (expected a sub-folder of pictures per class)")
    rng = np.random.default_rng(args.seed)
    counts = split_image_folder(args.path, args.out, args.test_fraction, rng)
    for name, (train, test) in counts.items():
        if not test:
            print(f"warning: class {shown(name)!r}: {train} picture(s), none left for test/",
                  file=sys.stderr)  # fmt: skip
    n_train = sum(train for train, _ in counts.values())
    n_test = sum(test for _, test in counts.values())
    print(f"wrote {args.out}: {n_train} train and {n_test} test pictures of {len(counts)} "
          f"classes (test fraction {args.test_fraction:g}, seed {args.seed}); "
          f"train on it with --data {args.out}, from a trained model with --from-model RUN "
          f"--data {args.out}")  # fmt: skip
    return 0
