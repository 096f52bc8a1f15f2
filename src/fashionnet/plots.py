"""The pictures of a run, one function each: matplotlib is imported inside them only, so
nothing else pays for it. report.py puts them together."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._fsutil import atomic_write
from .layers import Conv2D, Linear
from .model import Sequential

DPI = 150  # sharp on high-density screens; report.html shows them at 100 pixels an inch


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def _names_drawn() -> Iterator[None]:
    """Class names come from the user's data, in any script: a name the font has no glyphs for
    (Chinese under DejaVu Sans) is drawn as boxes, as matplotlib does, without its warning
    per glyph and per drawing on stderr; report.md and report.html carry the names as text."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        yield


def _save(fig: Any, path: Path) -> None:
    """Write the picture atomically: never half a file."""
    with atomic_write(path) as f:
        fig.savefig(f, dpi=DPI, format=path.suffix.lstrip(".") or "png")


def learning_curves(
    history: list[dict[str, Any]],
    best_epoch: int,
    path: Path,
    lr: tuple[np.ndarray, np.ndarray] | None = None,
    restarts: Sequence[float] = (),
) -> None:
    """Loss and accuracy per epoch; under the loss, the learning rate at every step (`lr`:
    (epoch as a fraction, rate)), with the schedule's restarts marked on both."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    rows = 2 if lr is not None else 1
    fig, axes = plt.subplots(rows, 2, figsize=(10, 3.6 * rows), squeeze=False,
                             sharex="col")  # fmt: skip
    for ax, key in ((axes[0, 0], "loss"), (axes[0, 1], "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], marker=".", label="train")
        if "val_" + key in history[0]:
            ax.plot(epochs, [r[f"val_{key}"] for r in history], marker=".", label="validation")
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
        for x in restarts:
            ax.axvline(x, color="tab:red", alpha=0.3, linewidth=1)
        ax.set_title(key)
        ax.legend()
    if lr is not None:
        steps_at, rate = lr
        axes[1, 0].plot(steps_at, rate, color="tab:green")
        for x in restarts:
            axes[1, 0].axvline(x, color="tab:red", alpha=0.3, linewidth=1)
        axes[1, 0].set_title("learning rate (red: restarts)" if restarts else "learning rate")
        axes[1, 0].set_xlabel("epoch")
        axes[1, 1].axis("off")
    axes[-1, 1 if lr is None else 0].set_xlabel("epoch")
    axes[0, 1].set_xlabel("epoch")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


@_names_drawn()
def confusion_heatmap(confusion: np.ndarray, names: list[str], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = confusion.max()
    for i in range(len(names)):
        for j in range(len(names)):
            color = "white" if confusion[i, j] > top / 2 else "black"
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_title("test set confusion matrix (counts)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


@_names_drawn()
def image_grid(images: np.ndarray, titles: list[str], path: Path, *, columns: int = 8) -> None:
    plt = _pyplot()
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.7), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


@_names_drawn()
def prediction_sheet(
    pictures: list[Any], views: np.ndarray, captions: list[str], path: Path
) -> None:
    """Each input (a PIL picture, or None when there is none to show) beside the view the model
    saw, captioned with its top classes: when a prediction is wrong, this shows why."""
    plt = _pyplot()
    rows = len(views)
    fig, axes = plt.subplots(rows, 2, figsize=(6.4, 2.6 * rows), squeeze=False)
    for (left, right), picture, view, caption in zip(axes, pictures, views, captions, strict=True):
        if picture is not None:
            left.imshow(picture, cmap="gray" if picture.mode in ("L", "I", "F") else None)
        left.set_title("input", fontsize=9)
        right.imshow(view, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        right.set_title(f"what the model saw ({view.shape[1]}x{view.shape[0]})", fontsize=9)
        left.set_xlabel(caption, fontsize=9, loc="left")
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def first_layer(model: Sequential, image_shape: tuple[int, int], path: Path) -> None:
    """The first Linear layer's weights as images, or the first Conv2D's filters."""
    plt = _pyplot()
    layer = next((la for la in model.layers if isinstance(la, (Linear, Conv2D))), None)
    if isinstance(layer, Conv2D):
        filters = layer.weight.data[:, 0]
    elif isinstance(layer, Linear):
        filters = layer.weight.data.T[:, : image_shape[0] * image_shape[1]].reshape(
            -1, *image_shape
        )
    else:
        return
    filters = filters[:32]
    columns = 8
    rows = -(-len(filters) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, f in zip(axes.ravel(), filters, strict=False):
        limit = float(np.abs(f).max()) or 1.0
        ax.imshow(f, cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.suptitle("first layer: weights of the first units (red +, blue -)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def confidence_histogram(
    probs: np.ndarray, labels: np.ndarray, path: Path, ece: float | None = None
) -> None:
    """Confidence of right and wrong predictions, and accuracy per confidence bin (calibration),
    with the expected calibration error `ece` in the title."""
    plt = _pyplot()
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    bins = np.linspace(0, 1, 11)
    axes[0].hist([confidence[right], confidence[~right]], bins=bins, label=["right", "wrong"])
    axes[0].set_xlabel("confidence (top probability)")
    axes[0].set_ylabel("images")
    axes[0].legend()
    which = np.clip(np.digitize(confidence, bins) - 1, 0, 9)
    centers, accuracy = [], []
    for b in range(10):
        if (which == b).any():
            centers.append((bins[b] + bins[b + 1]) / 2)
            accuracy.append(right[which == b].mean())
    axes[1].plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    axes[1].plot(centers, accuracy, marker="o", label="model")
    axes[1].set_xlabel("confidence")
    axes[1].set_ylabel("accuracy")
    axes[1].legend()
    if ece is not None:
        axes[1].set_title(f"calibration: expected calibration error {ece:.4f}")
    axes[0].set_title("how sure the model is, right and wrong")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
