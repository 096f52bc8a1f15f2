"""fashionnet summary MODEL: each layer's output shape and parameters, and the totals."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..model import unwrap
from ._common import MODEL_HELP, load_model


def add_parser(sub: Any) -> None:
    sm = sub.add_parser("summary", help="a saved model's layers, output shapes and parameters")
    sm.add_argument("model", type=Path, help=MODEL_HELP)


def run(args: argparse.Namespace) -> int:
    model, meta = load_model(args.model)
    shape = [int(d) for d in meta.get("image_shape", (28, 28))]
    print(unwrap(model).summary(math.prod(shape)))
    return 0
