"""fashionnet predict MODEL INPUT...: the most probable classes of photos, CSV, NPZ, IDX images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..data import CLASS_NAMES, to_float
from ..predict import load_inputs
from ._common import MODEL_HELP, load_model, positive_int, shown


def add_parser(sub: Any) -> None:
    pr = sub.add_parser("predict", help="classify images with a saved model")
    pr.add_argument("model", type=Path, help=MODEL_HELP)
    pr.add_argument("inputs", nargs="+", help="PNG/JPEG images, .csv, .npz, IDX files, - (stdin)")
    pr.add_argument("--top-k", type=positive_int, default=1,
                    help="the K most probable classes (default: 1)")  # fmt: skip
    pr.add_argument("--json", action="store_true", help="one JSON object per image")


def run(args: argparse.Namespace) -> int:
    model, meta = load_model(args.model)
    shape = tuple(meta.get("image_shape", (28, 28)))
    names = [shown(n) for n in meta.get("class_names", CLASS_NAMES)]
    stdin = sys.stdin.buffer.read() if "-" in args.inputs else None
    labels, images = load_inputs(args.inputs, (int(shape[0]), int(shape[1])), stdin)
    probs = model.predict_proba(to_float(images))
    k = min(args.top_k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    for label, row, best in zip(labels, probs, top, strict=True):
        picks = [(names[c], float(row[c])) for c in best]
        if args.json:
            found = [{"class": n, "probability": p} for n, p in picks]
            print(json.dumps({"input": label, "predictions": found}))
        else:
            print(label + "  " + "  ".join(f"{n} {p:.4f}" for n, p in picks))
    return 0
