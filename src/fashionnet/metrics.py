"""Classification metrics: pure functions of integer label arrays (and probabilities for top-k)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .layers import Array


def accuracy(labels: Array, predicted: Array) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predicted)))


def confusion_matrix(labels: Array, predicted: Array, n_classes: int) -> Array:
    """counts[i, j] = how many images of class i were predicted as class j."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.shape != predicted.shape:
        raise ValueError(f"{labels.shape} labels but {predicted.shape} predictions")
    for name, a in (("labels", labels), ("predictions", predicted)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{name} must be in 0..{n_classes - 1}")
    flat = np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def per_class(confusion: Array) -> dict[str, Array]:
    """Precision, recall, F1 and support per class; 0 where a ratio is 0/0."""
    confusion = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(confusion)
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def seen_classes(confusion: Array) -> Array:
    """Which classes are in the labels or the predictions (a boolean per class)."""
    confusion = np.asarray(confusion)
    return (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0


def top_k_accuracy(labels: Array, probs: Array, k: int) -> float:
    """Fraction of images whose true class is among the k most probable."""
    if not 1 <= k <= probs.shape[1]:
        raise ValueError(f"k must be in 1..{probs.shape[1]}, got {k}")
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float(np.mean((top == np.asarray(labels)[:, None]).any(axis=1)))


def most_confused(confusion: Array, top: int = 5) -> list[tuple[int, int, int]]:
    """The `top` (true, predicted, count) pairs off the diagonal, most frequent first."""
    off = np.array(confusion, dtype=np.int64)
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    pairs = [
        (int(i), int(j), int(off[i, j]))
        for i, j in zip(*np.unravel_index(order, off.shape), strict=True)
    ]
    return [p for p in pairs if p[2] > 0]


def expected_calibration_error(labels: Array, probs: Array, bins: int = 10) -> float:
    """How far the top probability is from the accuracy, averaged over confidence bins weighted
    by their images (Guo et al., 2017): 0 when a 0.8 means right 80% of the time."""
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    which = np.clip((confidence * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += float(inside.mean()) * abs(
                float(right[inside].mean() - confidence[inside].mean())
            )
    return total


def report(labels: Array, probs: Array, *, losses: Array | None = None) -> dict[str, Any]:
    """Every metric above for one evaluation, JSON-safe."""
    n_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, n_classes)
    classes = per_class(confusion)
    # macro averages over the classes in the labels or the predictions, as scikit-learn's: a
    # folder of shirts and trousers says nothing about sandals
    seen = seen_classes(confusion)
    seen = seen if seen.any() else np.ones_like(seen)
    result: dict[str, Any] = {
        "accuracy": accuracy(labels, predicted),
        "top_2_accuracy": top_k_accuracy(labels, probs, min(2, n_classes)),
        "macro_precision": float(classes["precision"][seen].mean()),
        "macro_recall": float(classes["recall"][seen].mean()),
        "macro_f1": float(classes["f1"][seen].mean()),
        "per_class": {k: v.tolist() for k, v in classes.items()},
        "confusion_matrix": confusion.tolist(),
        "most_confused": most_confused(confusion),
        "expected_calibration_error": expected_calibration_error(labels, probs),
    }
    if losses is not None:
        result["loss"] = float(np.mean(losses))
    return result
