"""fashionnet summary MODEL: each layer's output shape and parameters, and the totals."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..model import FlipAveraged, unwrap
from ._common import MODEL_HELP, load_model


def add_parser(sub: Any) -> None:
    sm = sub.add_parser("summary", help="a saved model's layers, output shapes and parameters")
    sm.add_argument("model", type=Path, help=MODEL_HELP)


def run(args: argparse.Namespace) -> int:
    model, meta = load_model(args.model)
    shape = [int(d) for d in meta.get("image_shape", (28, 28))]
    n = math.prod(shape)
    print(unwrap(model).summary(n))
    if isinstance(model, FlipAveraged):  # what a prediction costs: the layers once per view
        views, cost = model.n_views, model.model.mult_adds(n)
        print(f"Predictions average {views} views of each image (tta {model.mode}): "
              f"{views * cost / 1e6:.2f} M mult-adds an image")  # fmt: skip
    return 0
