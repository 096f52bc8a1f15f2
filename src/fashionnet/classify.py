"""fashionnet.classify: pictures in, class names and probabilities out, in one call.

    >>> fashionnet.classify("runs/mlp", "shirt.jpg", top_k=2)
    [{'label': 'Shirt', 'score': 0.81}, {'label': 'T-shirt/top', 'score': 0.12}]

The shape of the answer is what image-classification pipelines return: one input gives a list of
{label, score}, several inputs a list of such lists. Every input goes through the same picture
pipeline as `fashionnet predict`, so Python and the command line agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import load_model_with_metadata
from .data import CLASS_NAMES, to_float
from .model import Classifier, with_tta
from .model.sequential import TTA_MODES
from .predict import to_images

# what --tta takes at predict, evaluate, serve and export: "model", the views the model was trained
# and calibrated with; "none", each image alone; or one of FlipAveraged's modes
TTA_CHOICES = ("model", "none", *TTA_MODES)


@dataclass(frozen=True)
class LoadedModel:
    """A model with what predict needs to know about its inputs and outputs."""

    model: Classifier
    class_names: tuple[str, ...]
    image_shape: tuple[int, int]
    metadata: dict[str, Any]


def open_model(source: str | os.PathLike[str] | Classifier | LoadedModel) -> LoadedModel:
    """A model file, a run folder (its model.npz), or a model object (Fashion-MNIST's classes and
    28x28 images assumed)."""
    if isinstance(source, LoadedModel):
        return source
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        model, meta = load_model_with_metadata(path / "model.npz" if path.is_dir() else path)
        shape = meta.get("image_shape", (28, 28))
        names = tuple(meta.get("class_names", CLASS_NAMES))
        return LoadedModel(model, names, (int(shape[0]), int(shape[1])), meta)
    return LoadedModel(source, CLASS_NAMES, (28, 28), {})


def through(model: Classifier, tta: str, image_shape: tuple[int, ...] = (28, 28)) -> Classifier:
    """`model` predicting through the views `tta` names (TTA_CHOICES), its weights shared: fewer
    views for speed (flip-shift is five times flip's work), or more. Views need square images:
    other `image_shape`s are refused here, before a server starts or a file is written."""
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {', '.join(TTA_CHOICES)}; got {tta!r}")
    if tta in TTA_MODES and len(set(image_shape)) != 1:
        raise ValueError(f"tta {tta}: averaging views needs square images; the model's are "
                         f"{'x'.join(map(str, image_shape))}")  # fmt: skip
    return model if tta == "model" else with_tta(model, None if tta == "none" else tta)


def top_classes(
    probs: np.ndarray, names: tuple[str, ...], top_k: int
) -> list[list[dict[str, Any]]]:
    """Each row's `top_k` classes as [{label, score}], most probable first (ties by class)."""
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"label": names[c], "score": float(row[c])} for c in best]
            for row, best in zip(probs, order, strict=True)]  # fmt: skip


def classify(
    model: str | os.PathLike[str] | Classifier | LoadedModel,
    inputs: Any,
    top_k: int = 1,
    tta: str = "model",
) -> list[Any]:
    """The `top_k` classes of each input: file paths (pictures, folders, CSV / NPZ / NPY / IDX),
    pictures' http(s) addresses, image bytes, PIL images or arrays (uint8, or floats 0..1 or
    0..255; gray or colour; one picture or a batch). A single input gives [{label, score}, ...];
    a list, one such list per image. `tta`: the views each prediction averages (`through`)."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    loaded = open_model(model)
    _, images = to_images(inputs, loaded.image_shape)
    probs = through(loaded.model, tta, loaded.image_shape).predict_proba(to_float(images))
    found = top_classes(probs, loaded.class_names, top_k)
    return found[0] if len(found) == 1 and not isinstance(inputs, list | tuple) else found
