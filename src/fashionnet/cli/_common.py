"""What every command shares: the one-line error, argument types, loading data and models."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._text import shown
from ..checkpoint import load_model_with_metadata
from ..classify import TTA_CHOICES
from ..data import Dataset, load_fashion_mnist
from ..model import Classifier


class UsageError(Exception):
    """Bad input found after parsing: reported as one line, exit 2."""


def int_at_least(lo: int) -> Any:
    what = "a positive integer" if lo == 1 else f"an integer >= {lo}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lo - 1
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


MODEL_HELP = "model file (model.npz in a run folder) or run folder"
DATA_HELP = (
    "dataset folder, a folder of pictures in a sub-folder per class, or a training or test "
    "file (default: the data the model was tested on); only the test split is read"
)


def add_tta_argument(parser: Any) -> None:
    """--tta on the commands that predict with a saved model (predict, evaluate, serve, export)."""
    parser.add_argument(
        "--tta", choices=TTA_CHOICES, default="model",
        help="the views each prediction averages: model (the ones the model was trained and "
        "calibrated with), none (each image alone), flip (and its mirror image), flip-shift "
        "(both, as they are and moved a pixel each way: 10 views, five times flip's work) "
        "(default: model)",
    )  # fmt: skip


def model_path(path: Path) -> Path:
    """A model file, or a run folder's model.npz. A sweep's folder holds no model of its own:
    the line says where its chosen one is, rather than that model.npz is missing."""
    if not path.is_dir():
        return path
    if not (path / "model.npz").exists() and (path / "study.db").exists():
        best = path / "best"
        where = f"its chosen trial is {best}" if best.exists() else "no trial has been chosen yet"
        raise UsageError(f"{path}: a sweep's folder, not a run's; {where}")
    return path / "model.npz"


def load_model(path: Path) -> tuple[Classifier, dict[str, Any]]:
    return load_model_with_metadata(model_path(path))


def load_data(path: str | None) -> Dataset:
    """The dataset, its warnings (a checksum mismatch, say) printed to stderr."""
    data = load_fashion_mnist(path)
    warn(data.warnings)
    return data


def warn(notes: Iterable[str]) -> None:
    for note in notes:
        print(f"fashionnet: warning: {shown(note)}", file=sys.stderr)
