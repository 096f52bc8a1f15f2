"""Sequential: a stack of layers with forward, backward, parameters in one flat buffer the model
owns, state_dict / load_state_dict, predict, summary and a config."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from .layers import (
    Array,
    BatchNorm,
    Conv2D,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2D,
    Parameter,
    ReLU,
    Reshape,
    array_namespace,
    build_layer,
    flatten_parameters,
    layer_class,
)
from .losses import softmax
from .threads import region

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
# Inference batch: activations of 2048 images stay in cache, and below glibc's mmap threshold
# most temporaries are reused rather than page-faulted in (sizes compared in BENCHMARKS.md).
INFERENCE_BATCH = 2048


class Sequential:
    """Layers applied in order."""

    def __init__(self, layers: Iterable[Layer]) -> None:
        self.layers = list(layers)
        # every parameter and gradient becomes a view of one flat buffer, weight-decayed ones
        # first (an optimiser's weight decay is then one slice); layers keep working on views
        params = sorted(self.parameters(), key=lambda p: not p.decay)  # stable
        self.flat: Array | None = None  # None for a model without parameters
        self.flat_grad: Array | None = None
        if params:
            self.flat, self.flat_grad = flatten_parameters(params)

    def state_dict(self) -> dict[str, Array]:
        """Every parameter and buffer by name ("0.weight", "1.running_mean", ...): the model's
        own arrays, not copies (as in PyTorch)."""
        return {name: p.data for name, p in self.named_parameters().items()} | self.named_buffers()

    def load_state_dict(self, state: dict[str, Array], *, strict: bool = True) -> list[str]:
        """Copy `state`'s arrays into the model's own (views of the flat buffer stay views).

        Names, shapes and dtypes are checked first, and nothing is copied unless all match; with
        strict=False, names missing from `state` are left as they are and returned.
        """
        mine = self.state_dict()
        missing = sorted(set(mine) - set(state))
        unexpected = sorted(set(state) - set(mine))
        if unexpected or (strict and missing):
            raise ValueError(
                f"state does not match the model: missing {missing}, unexpected {unexpected}"
            )
        for name, value in state.items():
            if value.shape != mine[name].shape or value.dtype != mine[name].dtype:
                raise ValueError(
                    f"state {name}: {value.dtype} {value.shape}, the model has "
                    f"{mine[name].dtype} {mine[name].shape}"
                )
        for name, value in state.items():
            mine[name][...] = value
        return missing

    def forward(self, x: Array, *, training: bool = False) -> Array:
        with region(None if self._splits else 1):
            for layer in self.layers:
                x = layer.forward(x, training=training)
        return x

    def backward(self, grad_out: Array) -> None:
        """Set every parameter's .grad, from dL/d(output) down to the first layer with parameters.

        Nothing below that layer has parameters, so its input gradient is never computed.
        """
        first = next((i for i, layer in enumerate(self.layers) if layer.params()), 0)
        with region(None if self._splits else 1):
            for i in range(len(self.layers) - 1, first - 1, -1):
                g = self.layers[i].backward(grad_out, input_grad=i > first)
                if g is not None:
                    grad_out = g

    @property
    def _splits(self) -> bool:
        """Whether a layer splits its batch over threads (threads.py): convolutions do."""
        return any(layer.splits_batch for layer in self.layers)

    def named_parameters(self) -> dict[str, Parameter]:
        """{'0.weight': Parameter, '0.bias': ..., '3.weight': ...} in layer order."""
        return {
            f"{i}.{name}": p
            for i, layer in enumerate(self.layers)
            for name, p in layer.params().items()
        }

    def named_buffers(self) -> dict[str, Array]:
        """{'1.running_mean': array, ...}: saved with the model, never trained."""
        return {
            f"{i}.{name}": b
            for i, layer in enumerate(self.layers)
            for name, b in layer.buffers().items()
        }

    def parameters(self) -> list[Parameter]:
        return list(self.named_parameters().values())

    def n_parameters(self) -> int:
        return sum(p.data.size for p in self.parameters())

    def predict_proba(
        self, x: Array, *, batch_size: int = INFERENCE_BATCH, pixels: bool = True
    ) -> Array:
        """Class probabilities (n, n_classes), evaluated in large batches without caching.
        `pixels=False` lifts the 0..1 check for inputs that are not images."""
        x = self._checked(x, pixels)
        parts = [softmax(self._forward_checked(x[i : i + batch_size]))
                 for i in range(0, len(x), batch_size)]  # fmt: skip
        return parts[0] if len(parts) == 1 else array_namespace(x).concatenate(parts)

    def predict(self, x: Array, *, batch_size: int = INFERENCE_BATCH, pixels: bool = True) -> Array:
        """Predicted class indices (n,)."""
        x = self._checked(x, pixels)
        parts = [self._forward_checked(x[i : i + batch_size]).argmax(axis=1)  # logits rank as
                 for i in range(0, len(x), batch_size)]  # probabilities do  # fmt: skip
        return array_namespace(x).concatenate(parts)

    @staticmethod
    def _checked(x: Array, pixels: bool) -> Array:
        """Inputs as predict takes them, floats, (n, features) or (n, h, w); what the model would
        silently get wrong (uint8 images, pixels 0..255 as floats) is a ValueError that says how
        to convert."""
        if len(x) == 0:
            raise ValueError("predict needs at least one sample")
        if x.dtype.kind != "f":
            raise ValueError(
                f"predict takes float pixels 0..1, got {x.dtype} values: convert images with "
                "fashionnet.to_float(images), which divides by 255"
            )
        if pixels and _looks_like_raw_pixels(x):
            raise ValueError(
                f"predict takes pixels 0..1, got whole numbers up to {float(x.max()):g}: divide "
                "by 255 (fashionnet.to_float(images) does)"
            )
        return x.reshape(len(x), -1) if x.ndim == 3 else x

    def _forward_checked(self, x: Array) -> Array:
        try:
            return self.forward(x)
        except ValueError as e:  # a matmul or reshape of the wrong size
            raise ValueError(
                f"inputs of shape {x.shape[1:]} per sample do not fit this model ({e})"
            ) from None

    def config(self) -> dict[str, Any]:
        return {"layers": [layer.spec() for layer in self.layers]}

    @staticmethod
    def param_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """{"0.weight": (784, 256), ...}: parameter and buffer shapes, without building it."""
        return {
            f"{i}.{name}": shape
            for i, spec in enumerate(config["layers"])
            for name, shape in layer_class(spec).param_shapes(spec).items()
        }

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        *,
        rng: np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> Sequential:
        """Rebuild the architecture (weights freshly initialised from rng)."""
        return cls(build_layer(spec, rng, dtype) for spec in config["layers"])

    def summary(self, n_features: int) -> str:
        """Per layer its output shape and parameter count, then the totals, as Keras prints a
        model.summary(). Non-trainable parameters are buffers (BatchNorm's running statistics).
        The shapes come from one forward pass of a zero image with `n_features` pixels."""
        width = (34, 26, 12)
        rows = [f"{'Layer (type)':<{width[0]}}{'Output Shape':<{width[1]}}{'Param #':>{width[2]}}"]
        x = np.zeros((1, n_features), np.float32)
        for i, layer in enumerate(self.layers):
            x = layer.forward(x)
            n = sum(p.data.size for p in layer.params().values())
            shape = "(None, " + ", ".join(str(d) for d in x.shape[1:]) + ")"
            rows.append(f"{f'{i} ({type(layer).__name__})':<{width[0]}}{shape:<{width[1]}}"
                        f"{n:>{width[2]},}")  # fmt: skip
        trainable = self.n_parameters()
        frozen = sum(b.size for b in self.named_buffers().values())
        line, double = "_" * sum(width), "=" * sum(width)
        return "\n".join([
            line, *rows[:1], double, *rows[1:], double,
            f"Total params: {trainable + frozen:,}", f"Trainable params: {trainable:,}",
            f"Non-trainable params: {frozen:,}", line,
        ])  # fmt: skip

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"


class FlipAveraged:
    """Test-time augmentation around a Sequential: class probabilities are the mean of each square
    image's and its mirror image's. Training, weights and files are the wrapped model's; `fit`
    trains `model` and measures validation through the wrapper."""

    def __init__(self, model: Sequential) -> None:
        self.model = model

    def predict_proba(
        self, x: Array, *, batch_size: int = INFERENCE_BATCH, pixels: bool = True
    ) -> Array:
        x = x.reshape(len(x), -1) if x.ndim == 3 else x
        probs = self.model.predict_proba(x, batch_size=batch_size, pixels=pixels)
        probs += self.model.predict_proba(mirror(x), batch_size=batch_size, pixels=pixels)
        probs *= probs.dtype.type(0.5)
        return probs

    def predict(self, x: Array, *, batch_size: int = INFERENCE_BATCH, pixels: bool = True) -> Array:
        return self.predict_proba(x, batch_size=batch_size, pixels=pixels).argmax(axis=1)

    def config(self) -> dict[str, Any]:
        return {**self.model.config(), "tta": "flip"}

    def __repr__(self) -> str:
        return f"FlipAveraged({self.model!r})"


def _looks_like_raw_pixels(x: Array) -> bool:
    """Floats that are whole numbers from 0 to over 1: 0..255 pixels cast without scaling (real
    features, standardised or not, are not all whole numbers)."""
    xp = array_namespace(x)
    return bool(x.max() > 1.5 and x.min() >= 0 and xp.all(x == xp.round(x)))


# what predicts: a Sequential, or one wrapped for test-time augmentation
Classifier = Sequential | FlipAveraged
TTA_MODES = ("flip",)


def unwrap(model: Classifier) -> Sequential:
    """The Sequential that holds the layers and weights."""
    return model.model if isinstance(model, FlipAveraged) else model


def model_from_config(
    config: dict[str, Any], *, rng: np.random.Generator | None = None, dtype: Any = np.float32
) -> Classifier:
    """A model's config() back to the model: the layers, wrapped when the config says "tta"."""
    tta = config.get("tta")
    if tta is not None and tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)} or None; got {tta!r}")
    model = Sequential.from_config(config, rng=rng, dtype=dtype)
    return FlipAveraged(model) if tta == "flip" else model


def mirror(x: Array) -> Array:
    """Flat square images (n, side * side) mirrored left to right."""
    n, features = x.shape
    side = math.isqrt(features)
    if side * side != features:
        raise ValueError(f"flip averaging needs square images; got {features} pixels per image")
    return x.reshape(n, side, side)[:, :, ::-1].reshape(n, features)


def mlp(
    in_features: int,
    hidden: Sequence[int],
    n_classes: int,
    *,
    rng: np.random.Generator,
    activation: str = "relu",
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    init: str = "he",
    batch_norm: bool = False,
    dtype: Any = np.float32,
) -> Sequential:
    """in -> [Linear -> (BatchNorm) -> activation -> (Dropout)] per hidden size -> Linear."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
    kind = {"relu": "ReLU", "leaky_relu": "LeakyReLU", "tanh": "Tanh", "sigmoid": "Sigmoid"}[
        activation
    ]
    layers: list[Layer] = []
    if input_dropout:
        layers.append(Dropout(input_dropout, rng=rng))
    sizes = [in_features, *hidden]
    for fan_in, fan_out in pairwise(sizes):
        # BatchNorm's shift makes the Linear's bias redundant
        layers.append(Linear(fan_in, fan_out, rng=rng, init=init, bias=not batch_norm, dtype=dtype))
        if batch_norm:
            layers.append(BatchNorm(fan_out, dtype=dtype))
        layers.append(Layer.registry[kind]())
        if dropout:
            layers.append(Dropout(dropout, rng=rng))
    layers.append(Linear(sizes[-1], n_classes, rng=rng, init=init, dtype=dtype))
    return Sequential(layers)


def cnn(
    image_side: int,
    stages: Sequence[Sequence[int]],
    hidden: Sequence[int],
    n_classes: int,
    *,
    rng: np.random.Generator,
    dropout: float = 0.0,
    dtype: Any = np.float32,
) -> Sequential:
    """Flat square images -> stages of 3x3 convolutions -> dense layers -> class scores.

    Each stage is a list of output channels: a 3x3 convolution (padding 1, no bias) -> BatchNorm
    -> ReLU per entry, except that the stage's last convolution is followed by a 2x2 max-pool
    and only then BatchNorm and ReLU, which so run on a quarter of the pixels.
    Then Flatten -> [Linear -> BatchNorm -> ReLU -> (Dropout)] per hidden size -> Linear.
    """
    layers: list[Layer] = [Reshape((1, image_side, image_side))]
    channels, side = 1, image_side
    for stage in stages:
        for i, out_channels in enumerate(stage):
            conv = Conv2D(channels, out_channels, 3, padding=1, bias=False, rng=rng, dtype=dtype)
            norm = BatchNorm(out_channels, dtype=dtype)
            if i < len(stage) - 1:
                layers += [conv, norm, ReLU()]
            else:  # pooled first: BatchNorm and ReLU then run on a quarter of the pixels
                layers += [conv, MaxPool2D(2), norm, ReLU()]
            channels = out_channels
        side //= 2
    layers.append(Flatten())
    features = channels * side * side
    for width in hidden:
        layers += [
            Linear(features, width, rng=rng, bias=False, dtype=dtype),
            BatchNorm(width, dtype=dtype),
            ReLU(),
        ]
        if dropout:
            layers.append(Dropout(dropout, rng=rng))
        features = width
    layers.append(Linear(features, n_classes, rng=rng, dtype=dtype))
    return Sequential(layers)
