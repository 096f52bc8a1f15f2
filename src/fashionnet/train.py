"""fit(...) -> History: minibatches, validation, best-epoch weights, early stopping."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from .augment import Augment
from .data import iterate_batches
from .layers import Array
from .losses import softmax_cross_entropy
from .model import Sequential
from .optim import Optimizer
from .schedules import Schedule

# Called after every epoch with that epoch's record; returning True stops training.
Callback = Callable[[dict[str, Any]], bool | None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights of the last finished epoch are kept."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(f"loss became {loss} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.loss = epoch, step, loss


@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0

    def best(self) -> dict[str, Any]:
        return self.epochs[self.best_epoch - 1]


def evaluate(
    model: Sequential, x: Array, y: Array, *, batch_size: int = 8192
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of model on (x, y), in inference mode."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model.forward(x[start : start + batch_size])
        labels = y[start : start + batch_size]
        loss, _ = softmax_cross_entropy(logits, labels)
        total_loss += loss * len(labels)
        correct += int((logits.argmax(axis=1) == labels).sum())
    return total_loss / len(x), correct / len(x)


def fit(
    model: Sequential,
    optimizer: Optimizer,
    train: tuple[Array, Array],
    *,
    val: tuple[Array, Array] | None = None,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    schedule: Schedule | None = None,
    label_smoothing: float = 0.0,
    augment: Augment | None = None,
    patience: int | None = None,
    restore_best: bool = True,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
) -> History:
    """Train for `epochs` passes over `train`, reshuffled each epoch from `rng`.

    With `val`, the epoch with the best validation accuracy is remembered; `patience` epochs
    without improvement stop training, and `restore_best` puts the best weights back at the end.
    `augment` transforms each training batch with `rng`.
    `progress`: a tqdm bar (None: only on a terminal).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    x, y = train
    history, best_acc, best_weights = History(), -1.0, None
    params = optimizer.params
    start_time = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        loss_sum, correct = 0.0, 0
        bar = tqdm(
            total=len(x),
            desc=f"epoch {epoch}",
            unit="img",
            leave=False,
            disable=None if progress is None else not progress,
        )
        for xb, yb in iterate_batches(x, y, batch_size, rng=rng):
            if schedule is not None:
                optimizer.lr = schedule(optimizer.steps)
            if augment is not None:
                xb = augment(xb, rng)
            logits = model.forward(xb, training=True)
            loss, grad_logits = softmax_cross_entropy(logits, yb, label_smoothing=label_smoothing)
            if not math.isfinite(loss):
                raise TrainingDiverged(epoch, optimizer.steps, loss)
            model.backward(grad_logits)
            optimizer.step()
            loss_sum += loss * len(yb)
            correct += int((logits.argmax(axis=1) == yb).sum())
            bar.update(len(yb))
        bar.close()
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_sum / len(x),
            "train_accuracy": correct / len(x),
            "lr": optimizer.lr,
        }
        if val is not None:
            record["val_loss"], record["val_accuracy"] = evaluate(model, *val)
            if record["val_accuracy"] > best_acc:
                best_acc, history.best_epoch = record["val_accuracy"], epoch
                best_weights = [p.data.copy() for p in params] if restore_best else None
        else:
            history.best_epoch = epoch
        record["seconds"] = time.perf_counter() - t0
        history.epochs.append(record)
        stop = any([cb(record) for cb in callbacks])
        if patience is not None and epoch - history.best_epoch >= patience:
            history.stopped_early = True
            stop = True
        if stop:
            break
    if best_weights is not None:
        for p, w in zip(params, best_weights, strict=True):
            p.data[...] = w
    history.train_seconds = time.perf_counter() - start_time
    return history
