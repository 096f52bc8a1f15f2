"""ONNX export: a model as a graph any ONNX runtime can run, pixels in, probabilities out.

The graph takes raw pixel values (0..255, float32, (batch, h*w)), scales them as training did,
runs every layer as its ONNX operator (Dropout as Identity) and ends in Softmax. Opset 17.
The `onnx` package is imported here only (`pip install fashionnet[onnx]`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .checkpoint import atomic_write
from .layers import (
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    LeakyReLU,
    Linear,
    MaxPool2D,
    ReLU,
    Reshape,
    Residual,
    Sigmoid,
    Tanh,
)
from .model import Sequential

OPSET = 17


def to_onnx(
    model: Sequential, *, n_features: int, input_scale: float = 1 / 255, name: str = "fashionnet"
) -> Any:
    """The model as an onnx.ModelProto with input 'pixels' and output 'probabilities'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []

    def const(array: np.ndarray, label: str) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), label))
        return label

    def node(op: str, inputs: list[str], label: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [label], name=label, **attrs))
        return label

    x = node("Mul", ["pixels", const(np.array(input_scale, np.float32), "input_scale")], "scaled")
    if model.tta == "flip":  # the mirror images go through as a second half of the batch
        side = round(n_features**0.5)
        square = node("Reshape", [x, const(np.array([0, side, side]), "tta.square")], "tta.sq")
        steps = [const(np.array([v]), f"tta.{k}") for k, v in
                 (("start", -1), ("end", -(2**63)), ("axis", 2), ("step", -1))]  # fmt: skip
        mirrored = node("Slice", [square, *steps], "tta.mirrored")
        flat = node("Reshape", [mirrored, const(np.array([0, n_features]), "tta.flat")], "tta.m")
        x = node("Concat", [x, flat], "tta.both", axis=0)
    for i, layer in enumerate(model.layers):
        x = _layer_nodes(layer, f"{i}", x, node, const)
    if model.tta == "flip":
        n_out = model.forward(np.zeros((1, n_features), np.float32)).shape[1]
        probs = node("Softmax", [x], "tta.probabilities", axis=1)
        pairs = node("Reshape", [probs, const(np.array([2, -1, n_out]), "tta.pairs")], "tta.p")
        node("ReduceMean", [pairs], "probabilities", axes=[0], keepdims=0)
    else:
        node("Softmax", [x], "probabilities", axis=1)
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", None])],
        inits,
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fashionnet"
    )
    proto.ir_version = 8  # readable by runtimes from onnxruntime 1.10 on
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _layer_nodes(layer: Layer, prefix: str, x: str, node: Any, const: Any) -> str:
    """Append the ONNX nodes for one layer; return the name of its output."""
    if isinstance(layer, Linear):
        inputs = [x, const(layer.weight.data, f"{prefix}.weight")]
        if layer.bias is not None:
            inputs.append(const(layer.bias.data, f"{prefix}.bias"))
        return node("Gemm", inputs, f"{prefix}.linear")
    if isinstance(layer, Conv2D):
        inputs = [x, const(layer.weight.data, f"{prefix}.weight")]
        if layer.bias is not None:
            inputs.append(const(layer.bias.data, f"{prefix}.bias"))
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        return node("Conv", inputs, f"{prefix}.conv", kernel_shape=[k, k], strides=[s, s],
                    pads=[p, p, p, p])  # fmt: skip
    if isinstance(layer, BatchNorm):
        names = [const(v, f"{prefix}.{k}") for k, v in (
            ("weight", layer.weight.data), ("bias", layer.bias.data),
            ("running_mean", layer.running_mean), ("running_var", layer.running_var),
        )]  # fmt: skip
        return node("BatchNormalization", [x, *names], f"{prefix}.batchnorm", epsilon=layer.eps)
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
        if isinstance(layer, AvgPool2D):
            attrs["count_include_pad"] = 1
        op = "MaxPool" if isinstance(layer, MaxPool2D) else "AveragePool"
        return node(op, [x], f"{prefix}.pool", **attrs)
    if isinstance(layer, GlobalAvgPool2D):
        pooled = node("GlobalAveragePool", [x], f"{prefix}.gap")
        return node("Flatten", [pooled], f"{prefix}.flat", axis=1)
    if isinstance(layer, Reshape):
        shape = const(np.array([0, *layer.shape], np.int64), f"{prefix}.shape")
        return node("Reshape", [x, shape], f"{prefix}.reshape")
    if isinstance(layer, Residual):
        out, skip = x, x
        for i, inner in enumerate(layer.body):
            out = _layer_nodes(inner, f"{prefix}.body.{i}", out, node, const)
        for i, inner in enumerate(layer.shortcut or []):
            skip = _layer_nodes(inner, f"{prefix}.shortcut.{i}", skip, node, const)
        return node("Add", [out, skip], f"{prefix}.add")
    if isinstance(layer, Flatten):
        return node("Flatten", [x], f"{prefix}.flatten", axis=1)
    if isinstance(layer, Dropout):
        return node("Identity", [x], f"{prefix}.identity")
    if isinstance(layer, LeakyReLU):
        return node("LeakyRelu", [x], f"{prefix}.leaky_relu", alpha=layer.negative_slope)
    simple = {ReLU: "Relu", Tanh: "Tanh", Sigmoid: "Sigmoid"}
    if type(layer) in simple:
        return node(simple[type(layer)], [x], f"{prefix}.{simple[type(layer)].lower()}")
    raise ValueError(f"no ONNX export for layer {type(layer).__name__}")


def export_onnx(
    path: str | os.PathLike[str], model: Sequential, *, n_features: int, input_scale: float
) -> None:
    """Write the model as an ONNX file, atomically."""
    proto = to_onnx(model, n_features=n_features, input_scale=input_scale)
    with atomic_write(path) as f:
        f.write(proto.SerializeToString())
