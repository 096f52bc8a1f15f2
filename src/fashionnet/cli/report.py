"""fashionnet report RUN_DIR: the pictures and report.html / report.md of a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Split, load_test_split
from ..model import Classifier
from ..runs import evaluate_test_set, recorded_data
from ._common import DATA_HELP, UsageError, load_model, model_path, positive_int, warn


def add_parser(sub: Any) -> None:
    rp = sub.add_parser("report", help="pictures and report.html / report.md for a run folder")
    rp.add_argument("run", type=Path, help="run folder of `fashionnet train`")
    rp.add_argument("--data", help=DATA_HELP)
    rp.add_argument("--limit", type=positive_int,
                    help="use only the first N test images (default: as the run did)")  # fmt: skip


def write(
    run: Path, model: Classifier, meta: dict[str, Any], images: np.ndarray, labels: np.ndarray,
    *, quiet: bool = False, evaluation: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Draw the report of `model` on exactly these test images into RUN/report/ (`evaluation`:
    evaluate_test_set's result for them, when the caller has it already)."""
    from ..report import write_report

    result = (
        dict(evaluation) if evaluation is not None else evaluate_test_set(model, images, labels)
    )
    files = write_report(run, model, meta, images, labels, result.pop("probabilities"), result)
    if not quiet:
        print(f"report {files[-1]}")


def test_split(meta: dict[str, Any], data_path: str | None, limit: int | None) -> tuple[Split, str]:
    """(split, source) of the test images a model is measured on: the flags' data and limit,
    else those it was trained and tested with. Only test data is read: a folder of the test
    files alone, or a test file itself, will do."""
    recorded_path, recorded_limit = recorded_data(meta)
    names, shape = meta.get("class_names"), meta.get("image_shape")
    split, source, notes = load_test_split(
        data_path or recorded_path,
        class_names=tuple(names) if isinstance(names, list) else None,
        size=(shape[1], shape[0]) if isinstance(shape, list) and len(shape) == 2 else None,
    )
    warn(notes)
    split = split.first(limit or recorded_limit)
    images, labels = split.images, split.labels
    expected = tuple(shape or images.shape[1:])
    if images.shape[1:] != expected:
        raise UsageError(f"{source}: images are {images.shape[1:]}, the model expects {expected}")
    top = int(labels.max(initial=0))
    if isinstance(names, list) and top >= len(names):
        raise UsageError(f"{source}: labels go up to {top}, the model knows {len(names)} classes")
    return split, source


def run(args: argparse.Namespace) -> int:
    model_path(args.run)  # a sweep's folder: the line says where its chosen run is
    if not (args.run / "model.npz").is_file():
        raise UsageError(f"{args.run}: no model.npz, not a finished fashionnet run folder")
    model, meta = load_model(args.run)
    split, _ = test_split(meta, args.data, args.limit)
    write(args.run, model, meta, split.images, split.labels)
    return 0
