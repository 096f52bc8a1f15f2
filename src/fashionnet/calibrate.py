"""Temperature scaling: class probabilities that say how often the model is right.

Label smoothing, which the presets train with (0.1 to 0.2), teaches a network never to answer
with more than about 1 - smoothing: the default model is right on 91% of the test images while
its top probability averages 0.76. One number fixes the scale: the logits divided by a
temperature T, fitted on the validation split by minimising the cross-entropy (Guo et al., "On
calibration of modern neural networks", 2017). Dividing by T > 0 keeps each image's ranking of
the classes, so the accuracy stays (with flip averaging, which averages two views'
probabilities, an image whose two views disagree may change sides).

T is folded into the last Linear layer, its weight and bias divided by T, so every reader of the
model file gets the calibrated probabilities with nothing new to apply: predict, serve, the ONNX
export, a run fine-tuned from it.
"""

from __future__ import annotations

import math
from typing import Any

from .layers import Array, Linear, array_namespace
from .losses import softmax
from .metrics import expected_calibration_error
from .model import INFERENCE_BATCH, Classifier, FlipAveraged, unwrap

# Fewer validation images than this say too little about one more parameter: a few dozen photos
# all classified right would ask for T -> 0, certainty the data cannot back.
MIN_IMAGES = 200
LOG_T_RANGE = (math.log(0.05), math.log(20.0))  # T from 0.05 to 20: far past any seen here
STEPS = 60  # golden-section steps: the bracket shrinks to 0.618^60 of its width, 1e-12


def view_logits(model: Classifier, x: Array) -> list[Array]:
    """The logits behind model.predict_proba(x), in float64: one array, or one per view under
    test-time averaging (FlipAveraged.views)."""
    inner = unwrap(model)
    xp = array_namespace(x)
    views = model.views(x) if isinstance(model, FlipAveraged) else [x]
    return [
        xp.concatenate([inner.forward(v[i : i + INFERENCE_BATCH])
                        for i in range(0, len(v), INFERENCE_BATCH)]).astype(xp.float64)
        for v in views
    ]  # fmt: skip


def probabilities(views: list[Array], temperature: float) -> Array:
    """What the model answers with its logits divided by `temperature`: each view's softmax,
    averaged over the views as FlipAveraged does."""
    out = softmax(views[0] / temperature)
    for z in views[1:]:
        out += softmax(z / temperature)
    return out / len(views)


def cross_entropy(views: list[Array], labels: Array, temperature: float) -> float:
    xp = array_namespace(views[0])
    p = probabilities(views, temperature)[xp.arange(len(labels)), labels]
    return float(-xp.log(xp.maximum(p, 1e-300)).mean())


def fit_temperature(views: list[Array], labels: Array) -> float:
    """The T in LOG_T_RANGE that minimises the cross-entropy, by golden-section search over
    log T: for one view the loss is convex in 1/T, so this is its minimum; for two averaged
    views no such proof holds and the search finds a local one."""
    lo, hi = LOG_T_RANGE
    g = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return cross_entropy(views, labels, math.exp(log_t))

    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(STEPS):
        if fa <= fb:  # the minimum is left of b
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    return math.exp((lo + hi) / 2)


def temperature_of(record: Any) -> float | None:
    """The temperature in a model file's calibration record, if it is one calibrate could have
    written (a number in LOG_T_RANGE); None for no record, or a damaged or hand-made one."""
    t = record.get("temperature") if isinstance(record, dict) else None
    if not isinstance(t, int | float) or isinstance(t, bool):
        return None
    lo, hi = (math.exp(v) for v in LOG_T_RANGE)
    return float(t) if lo <= t <= hi else None


def calibrate(model: Classifier, x: Array, labels: Array) -> dict[str, Any] | None:
    """Fit a temperature on (x, labels), validation images as float pixels, and fold it into
    the model's last layer. Returns what was done: T, and the images' cross-entropy and expected
    calibration error before and after; None (the model untouched) for fewer than MIN_IMAGES
    images or a model whose last layer is not Linear."""
    last = unwrap(model).layers[-1]
    if len(labels) < MIN_IMAGES or not isinstance(last, Linear):
        return None
    views = view_logits(model, x)
    t = fit_temperature(views, labels)
    for p in last.params().values():
        p.data /= p.data.dtype.type(t)
    return {
        "temperature": t,
        "images": len(labels),
        "val_loss_before": cross_entropy(views, labels, 1.0),
        "val_loss_after": cross_entropy(views, labels, t),
        "val_ece_before": expected_calibration_error(labels, probabilities(views, 1.0)),
        "val_ece_after": expected_calibration_error(labels, probabilities(views, t)),
    }


__all__ = [
    "MIN_IMAGES",
    "calibrate",
    "cross_entropy",
    "fit_temperature",
    "temperature_of",
    "view_logits",
]
