"""Losses return (mean loss, gradient of that mean with respect to the logits)."""

from __future__ import annotations

import numpy as np

from .layers import Array, array_namespace


def log_softmax(logits: Array) -> Array:
    xp = array_namespace(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)  # softmax is shift-invariant; no overflow
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: Array) -> Array:
    xp = array_namespace(logits)
    e = xp.exp(logits - logits.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def softmax_cross_entropy(
    logits: Array, labels: Array, *, label_smoothing: float = 0.0
) -> tuple[float, Array]:
    """Fused, stable softmax + cross-entropy over a batch.

    logits (batch, n_classes) float, labels (batch,) int. With smoothing eps the target is
    (1 - eps) one-hot + eps / n_classes. dL/dlogits = (softmax - target) / batch.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    xp = array_namespace(logits)
    n, k = logits.shape
    rows = xp.arange(n)
    logp = log_softmax(logits)  # (batch, n_classes)
    nll = -logp[rows, labels]
    if label_smoothing:
        loss = (1 - label_smoothing) * nll - label_smoothing * logp.mean(axis=1)
    else:
        loss = nll
    grad = xp.exp(logp)  # softmax
    grad[rows, labels] -= logits.dtype.type(1 - label_smoothing)
    if label_smoothing:
        grad -= logits.dtype.type(label_smoothing / k)
    grad *= logits.dtype.type(1 / n)
    return float(loss.mean(dtype=np.float64)), grad
