"""Layers: forward caches what backward needs; backward assigns (never adds) parameter gradients.

core: the contract (every layer registers itself in Layer.registry); dense: Linear, Dropout,
Flatten; activations: ReLU, LeakyReLU, Tanh, Sigmoid; norm: BatchNorm; conv: Conv2D and Reshape
over NCHW batches; pool: max and average pooling; convpool: a convolution and its 2x2 max-pool
run as one step inside a model's Stretch; residual: Residual blocks.
"""

from .activations import LeakyReLU, ReLU, Sigmoid, Tanh
from .conv import Conv2D, Reshape
from .core import (
    INITS,
    Array,
    Layer,
    OnnxGraph,
    Parameter,
    array_namespace,
    build_layer,
    flat_buffers,
    flatten_parameters,
    init_weight,
    layer_class,
)
from .dense import Dropout, Flatten, Linear
from .norm import BatchNorm
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .residual import Residual

__all__ = [
    "INITS",
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
    "OnnxGraph",
    "Parameter",
    "ReLU",
    "Reshape",
    "Residual",
    "Sigmoid",
    "Tanh",
    "array_namespace",
    "build_layer",
    "flat_buffers",
    "flatten_parameters",
    "init_weight",
    "layer_class",
]
