"""fashionnet evaluate MODEL: test-set accuracy, per-class precision / recall / F1, confusions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .._text import shown
from ..data import CLASS_NAMES
from ..runs import evaluate_test_set
from ._common import DATA_HELP, MODEL_HELP, load_model, positive_int
from .report import test_split


def add_parser(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="evaluate a saved model on the test set")
    ev.add_argument("model", type=Path, help=MODEL_HELP)
    ev.add_argument("--data", help=DATA_HELP)
    ev.add_argument("--limit", type=positive_int,
                    help="use only the first N test images (default: as the run did)")  # fmt: skip
    ev.add_argument("--json", action="store_true", help="print the result as JSON (default: text)")


def run(args: argparse.Namespace) -> int:
    model, meta = load_model(args.model)
    images, labels, _ = test_split(meta, args.data, args.limit)
    result = evaluate_test_set(model, images, labels)
    del result["probabilities"]
    names = meta.get("class_names", list(CLASS_NAMES))
    if args.json:  # JSON escapes control characters itself
        print(json.dumps(result | {"class_names": names}))
        return 0
    names = [shown(n) for n in names]
    acc, loss = result["test_accuracy"], result["test_loss"]
    print(f"test accuracy {acc:.4f} (loss {loss:.4f}) on {len(labels)} images")
    print(f"top-2 accuracy {result['top_2_accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}, "
          f"expected calibration error {result['expected_calibration_error']:.4f}\n")  # fmt: skip
    width = max(len(n) for n in names)
    print(f"{'class':<{width}}  precision  recall     F1  support")
    pc, confusion = result["per_class"], np.asarray(result["confusion_matrix"])
    seen = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    for i, name in enumerate(names):
        if seen[i]:
            print(f"{name:<{width}}  {pc['precision'][i]:9.4f}  {pc['recall'][i]:6.4f}  "
                  f"{pc['f1'][i]:.4f}  {pc['support'][i]:7d}")  # fmt: skip
    if not seen.all():  # photos sorted into a few class folders
        unseen = ", ".join(n for n, s in zip(names, seen, strict=True) if not s)
        print(f"(no images of, and no predictions for: {unseen})")
    if result["most_confused"]:
        print("\nmost confused (true -> predicted: images)")
        for true, pred, count in result["most_confused"]:
            print(f"  {names[true]} -> {names[pred]}: {count}")
    return 0
