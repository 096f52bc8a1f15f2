"""The networks fashionnet's presets build: mlp, cnn and resnet, each a Sequential."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from ..layers import (
    BatchNorm,
    Conv2D,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    Linear,
    MaxPool2D,
    ReLU,
    Reshape,
    Residual,
)
from .sequential import Sequential

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")


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
    layers += _head(channels * side * side, hidden, n_classes, rng, dropout, dtype)
    return Sequential(layers)


def resnet(
    image_side: int,
    stages: Sequence[Sequence[int]],
    hidden: Sequence[int],
    n_classes: int,
    *,
    rng: np.random.Generator,
    dropout: float = 0.0,
    dtype: Any = np.float32,
) -> Sequential:
    """Flat square images -> a residual network (He et al. 2016) -> class scores.

    A stem (3x3 convolution to the first stage's first width, 2x2 max-pool, BatchNorm, ReLU:
    pooled first as in `cnn`, so 28x28 images become 14x14 maps), then a basic block
    (Residual.basic, then ReLU) per entry of each stage; the first block of every stage after
    the first halves the maps (stride 2, a 1x1 convolution on its shortcut). Global average
    pooling, [Linear -> BatchNorm -> ReLU -> (Dropout)] per hidden size, then Linear.
    """
    width = stages[0][0]
    layers: list[Layer] = [
        Reshape((1, image_side, image_side)),
        Conv2D(1, width, 3, padding=1, bias=False, rng=rng, dtype=dtype),
        MaxPool2D(2), BatchNorm(width, dtype=dtype), ReLU(),
    ]  # fmt: skip
    for s, stage in enumerate(stages):
        for i, out_channels in enumerate(stage):
            stride = 2 if s > 0 and i == 0 else 1
            block = Residual.basic(width, out_channels, stride=stride, rng=rng, dtype=dtype)
            layers += [block, ReLU()]
            width = out_channels
    layers.append(GlobalAvgPool2D())
    layers += _head(width, hidden, n_classes, rng, dropout, dtype)
    return Sequential(layers)


def _head(features: int, hidden: Sequence[int], n_classes: int, rng: np.random.Generator,
          dropout: float, dtype: Any) -> list[Layer]:  # fmt: skip
    """[Linear -> BatchNorm -> ReLU -> (Dropout)] per hidden size, then Linear to the classes."""
    layers: list[Layer] = []
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
    return layers
