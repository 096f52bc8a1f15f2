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
from .model.sequential import ONE_PIXEL, square_side

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
    views, net = _views(graph, model, x, n_features), unwrap(model)
    if len(views) > 1:  # the other views go through as further parts of the batch
        x = node("Concat", views, "tta.views", axis=0)
    for i, layer in enumerate(net.layers):
        x = layer.to_onnx(graph, f"{i}", x)
    if len(views) > 1:
        n_out = net.forward(np.zeros((1, n_features), np.float32)).shape[1]
        probs = node("Softmax", [x], "tta.probabilities", axis=1)
        shape = const(np.array([len(views), -1, n_out]), "tta.shape")
        parts = node("Reshape", [probs, shape], "tta.parts")
        node("ReduceMean", [parts], "probabilities", axes=[0], keepdims=0)
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


def _views(graph: Any, model: Classifier, x: str, n_features: int) -> list[str]:
    """The graph's names of FlipAveraged.views(x), in its order: x alone for a plain model."""
    if not isinstance(model, FlipAveraged):
        return [x]
    const, node = graph.const, graph.node
    side = square_side(n_features)  # refused before any graph is written
    square = node("Reshape", [x, const(np.array([0, side, side]), "tta.square")], "tta.sq")
    steps = [const(np.array([v]), f"tta.{k}") for k, v in
             (("start", -1), ("end", -(2**63)), ("axis", 2), ("step", -1))]  # fmt: skip
    squares = [square, node("Slice", [square, *steps], "tta.mirrored")]
    if model.mode == "flip-shift":  # each moved view: a window of the image padded by one pixel
        pads = const(np.array([0, 1, 1, 0, 1, 1]), "tta.pads")
        padded = [node("Pad", [s, pads], f"tta.padded{i}") for i, s in enumerate(squares)]
        axes = const(np.array([1, 2]), "tta.axes")
        for dy, dx in ONE_PIXEL:
            start = const(np.array([1 - dy, 1 - dx]), f"tta.from{dy}{dx}")
            end = const(np.array([1 - dy + side, 1 - dx + side]), f"tta.to{dy}{dx}")
            squares += [node("Slice", [p, start, end, axes], f"tta.moved{dy}{dx}.{i}")
                        for i, p in enumerate(padded)]  # fmt: skip
    flat = const(np.array([0, n_features]), "tta.flat")
    return [x] + [node("Reshape", [s, flat], f"tta.view{i}") for i, s in enumerate(squares[1:])]


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
