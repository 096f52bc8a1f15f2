"""fashionnet evaluate MODEL: test-set accuracy, per-class precision / recall / F1, confusions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .._text import shown
from ..classify import through
from ..data import CLASS_NAMES, Split
from ..metrics import seen_classes
from ..model import tta_of
from ..runs import evaluate_test_set
from ._common import (
    DATA_HELP,
    MODEL_HELP,
    add_tta_argument,
    load_model,
    non_negative_int,
    positive_int,
)
from .report import test_split


def add_parser(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="evaluate a saved model on the test set")
    ev.add_argument("model", type=Path, help=MODEL_HELP)
    ev.add_argument("--data", help=DATA_HELP)
    ev.add_argument("--limit", type=positive_int,
                    help="use only the first N test images (default: as the run did)")  # fmt: skip
    ev.add_argument("--json", action="store_true", help="print the result as JSON (default: text)")
    ev.add_argument("--mistakes", type=non_negative_int, default=0, metavar="N",
                    help="also list the N most confident mistakes, each with its file (or "
                    "index) (default: 0)")  # fmt: skip
    add_tta_argument(ev)


def run(args: argparse.Namespace) -> int:
    model, meta = load_model(args.model)
    model = through(model, args.tta, tuple(meta.get("image_shape", (28, 28))))
    split, _ = test_split(meta, args.data, args.limit)
    result = evaluate_test_set(model, split.images, split.labels) | {"tta": tta_of(model)}
    names = meta.get("class_names", list(CLASS_NAMES))
    mistakes = _mistakes(split, result.pop("probabilities"), names, args.mistakes)
    if args.json:  # JSON escapes control characters itself
        extra = {"mistakes": mistakes} if args.mistakes else {}
        print(json.dumps(result | {"class_names": names} | extra))
    else:
        _print(result, [shown(n) for n in names], mistakes if args.mistakes else None)
    return 0


def _print(result: dict[str, Any], names: list[str], mistakes: list[dict[str, Any]] | None) -> None:
    acc, loss = result["test_accuracy"], result["test_loss"]
    views = f" (tta {result['tta']})" if result["tta"] else ""  # said when views are averaged
    print(f"test accuracy {acc:.4f} (loss {loss:.4f}) on {result['test_size']} images{views}")
    print(f"top-2 accuracy {result['top_2_accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}, "
          f"expected calibration error {result['expected_calibration_error']:.4f}\n")  # fmt: skip
    width = max(len(n) for n in names)
    print(f"{'class':<{width}}  precision  recall     F1  support")
    pc, seen = result["per_class"], seen_classes(result["confusion_matrix"])
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
    if mistakes is not None:
        print(f"\nthe {len(mistakes)} most confident mistakes (true -> predicted, probability)")
        for m in mistakes:
            print(f"  {shown(m['input'])}: {shown(m['true'])} -> {shown(m['predicted'])} "
                  f"{m['probability']:.4f}")  # fmt: skip


def _mistakes(split: Split, probs: np.ndarray, names: list[str], n: int) -> list[dict[str, Any]]:
    """The `n` wrong predictions made with the highest probability, most confident first."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != split.labels)
    order = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:n]
    return [{"input": split.name(int(i)), "true": names[split.labels[i]],
             "predicted": names[predicted[i]], "probability": float(probs[i, predicted[i]])}
            for i in order]  # fmt: skip
