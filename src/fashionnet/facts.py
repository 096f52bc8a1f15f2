"""What a model file says besides its weights, parsed once and checked against the model:
the layer config's shape (before anything recurses into it), the class names, the image shape
and the input scale. Every consumer (predict, evaluate, report, export) then trusts them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import CLASS_NAMES
from .model import Classifier, unwrap

MAX_DEPTH = 16  # residual blocks inside residual blocks
MAX_LAYERS = 10_000
MAX_PIXELS = 1 << 22  # 2048 x 2048: far beyond any classifier input here
MAX_NAME = 200


class FactError(ValueError):
    """A model file's metadata that does not fit its model; the message names the field."""


def check_layer_config(config: Any) -> None:
    """The model config's nesting and size, walked without recursion (a file may nest
    thousands of residual blocks to exhaust the stack)."""
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise FactError("model config has no list of layers")
    stack: list[tuple[Any, int]] = [(config["layers"], 1)]
    count = 0
    while stack:
        layers, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FactError(f"model config nests layers deeper than {MAX_DEPTH} levels")
        for spec in layers:
            count += 1
            if count > MAX_LAYERS:
                raise FactError(f"model config has more than {MAX_LAYERS} layers")
            if not isinstance(spec, dict):
                raise FactError(f"a layer spec is {type(spec).__name__}, expected an object")
            for part in ("body", "shortcut"):
                inner = spec.get(part)
                if inner is not None and not isinstance(inner, list):
                    raise FactError(f"a layer's {part} is {type(inner).__name__}, expected a list")
                if inner:
                    stack.append((inner, depth + 1))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelFacts:
    class_names: tuple[str, ...]
    image_shape: tuple[int, int]
    input_scale: float

    @classmethod
    def parse(cls, meta: dict[str, Any], model: Classifier) -> ModelFacts | None:
        """The facts `meta` gives (or their defaults), checked against the model itself: the
        image shape must be what the model takes (a one-image forward proves it), the names as
        many as its outputs. None when neither the file nor the model says what size it takes."""
        in_features = _input_features(model)
        shape = meta.get("image_shape")
        if shape is None:
            if in_features is None:
                return None
            side = math.isqrt(in_features)  # older files: square images of the input size
            shape = [side, side] if side * side == in_features else [1, in_features]
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(d) for d in shape)):
            raise FactError(f"image_shape must be two integers, got {str(shape)[:80]}")
        h, w = shape
        if min(h, w) < 1 or h * w > MAX_PIXELS:
            raise FactError(f"image_shape {h}x{w} is out of range (1 to {MAX_PIXELS} pixels)")
        if in_features is not None and h * w != in_features:
            raise FactError(f"image_shape {h}x{w} does not fit the model's {in_features} inputs")
        try:
            n_out = int(model.predict_proba(np.zeros((1, h * w), np.float32)).shape[1])
        except ValueError:
            raise FactError(f"image_shape {h}x{w} does not fit the model") from None
        names = meta.get("class_names")
        if names is None:
            ten = n_out == len(CLASS_NAMES)
            names = list(CLASS_NAMES) if ten else [str(i) for i in range(n_out)]
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise FactError("class_names must be a list of strings")
        if len(names) != n_out:
            raise FactError(f"{len(names)} class_names for the model's {n_out} outputs")
        if any(len(n) > MAX_NAME for n in names):
            raise FactError(f"a class name is longer than {MAX_NAME} characters")
        scale = meta.get("input_scale", 1 / 255)
        if not (isinstance(scale, int | float) and not isinstance(scale, bool)) or not (
            math.isfinite(scale) and scale > 0
        ):
            raise FactError(f"input_scale must be a positive number, got {str(scale)[:80]}")
        return cls(tuple(names), (h, w), float(scale))

    def as_metadata(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "image_shape": list(self.image_shape),
                "input_scale": self.input_scale}  # fmt: skip


def _input_features(model: Classifier) -> int | None:
    """How many numbers the model takes per image, when its first layers say so: a Linear's
    in_features or a Reshape's shape, after any layers that keep the size (None otherwise)."""
    for layer in unwrap(model).layers:
        config = layer.config()
        if "in_features" in config:
            return int(config["in_features"])
        if "shape" in config:  # Reshape: (C, H, W)
            return math.prod(int(d) for d in config["shape"])
        if type(layer).__name__ not in ("Dropout", "ReLU", "LeakyReLU", "Tanh", "Sigmoid"):
            return None
    return None
