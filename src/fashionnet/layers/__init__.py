"""Layers: forward caches what backward needs; backward assigns (never adds) parameter gradients.

core: the contract, Linear, activations, Dropout, Flatten; norm: BatchNorm;
conv: Conv2D, pooling and Reshape over NCHW batches; residual: Residual blocks.
"""

from .conv import AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D, Reshape
from .core import (
    INITS,
    Array,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    Linear,
    Parameter,
    ReLU,
    Sigmoid,
    Tanh,
    array_namespace,
    init_weight,
)
from .norm import BatchNorm
from .residual import Residual

LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (
        Linear, ReLU, LeakyReLU, Tanh, Sigmoid, Dropout, BatchNorm, Flatten,
        Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Reshape, Residual,
    )
}  # fmt: skip

__all__ = [
    "INITS",
    "LAYER_TYPES",
    "Array",
    "AvgPool2D",
    "BatchNorm",
    "Conv2D",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "Layer",
    "LeakyReLU",
    "Linear",
    "MaxPool2D",
    "Parameter",
    "ReLU",
    "Reshape",
    "Residual",
    "Sigmoid",
    "Tanh",
    "array_namespace",
    "init_weight",
]
