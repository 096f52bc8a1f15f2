"""ONNX export: a model as a graph any ONNX runtime can run, pixels in, probabilities out.

The graph takes raw pixel values (0..255, float32, (batch, h*w)), scales them as training did,
runs every layer as the ONNX operators its to_onnx adds (Dropout as Identity) and ends in
Softmax. Opset 17.
The `onnx` package is imported here only (`pip install fashionnet[onnx]`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ._fsutil import atomic_write
from .model import Classifier, FlipAveraged, unwrap

OPSET = 17


def to_onnx(
    model: Classifier,
    *,
    n_features: int,
    input_scale: float = 1 / 255,
    name: str = "fashionnet",
    facts: dict[str, Any] | None = None,
) -> Any:
    """The model as an onnx.ModelProto with input 'pixels' and output 'probabilities'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []

    class Graph:  # what each layer's to_onnx adds its nodes to (layers.OnnxGraph)
        def const(self, array: np.ndarray, name: str) -> str:
            inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
            return name

        def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
            nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
            return name

    graph = Graph()
    const, node = graph.const, graph.node

    x = node("Mul", ["pixels", const(np.array(input_scale, np.float32), "input_scale")], "scaled")
    flip, net = isinstance(model, FlipAveraged), unwrap(model)
    if flip:  # the mirror images go through as a second half of the batch
        side = round(n_features**0.5)
        square = node("Reshape", [x, const(np.array([0, side, side]), "tta.square")], "tta.sq")
        steps = [const(np.array([v]), f"tta.{k}") for k, v in
                 (("start", -1), ("end", -(2**63)), ("axis", 2), ("step", -1))]  # fmt: skip
        mirrored = node("Slice", [square, *steps], "tta.mirrored")
        flat = node("Reshape", [mirrored, const(np.array([0, n_features]), "tta.flat")], "tta.m")
        x = node("Concat", [x, flat], "tta.both", axis=0)
    for i, layer in enumerate(net.layers):
        x = layer.to_onnx(graph, f"{i}", x)
    if flip:
        n_out = net.forward(np.zeros((1, n_features), np.float32)).shape[1]
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
    # what a runtime's user needs to feed the graph and read its answer, beside the graph
    props = {"input_range": f"0..{round(1 / input_scale)}", **(facts or {})}
    helper.set_model_props(proto, {k: v if isinstance(v, str) else json.dumps(v)
                                   for k, v in props.items()})  # fmt: skip
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(
    path: str | os.PathLike[str],
    model: Classifier,
    *,
    n_features: int,
    input_scale: float,
    facts: dict[str, Any] | None = None,
) -> None:
    """Write the model as an ONNX file, atomically; `facts` (class names, image shape, ...)
    become the file's metadata properties, JSON-encoded."""
    proto = to_onnx(model, n_features=n_features, input_scale=input_scale, facts=facts)
    with atomic_write(path) as f:
        f.write(proto.SerializeToString())
