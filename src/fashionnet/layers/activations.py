"""Element-wise activations: ReLU, LeakyReLU, Tanh, Sigmoid."""

from __future__ import annotations

from typing import Any

from .. import threads
from .core import Array, Layer, OnnxGraph, _cached, array_namespace


class ReLU(Layer):
    per_image = True
    _out: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        xp = array_namespace(x)
        out = xp.empty_like(x)  # in x's memory order (channels-last feature maps stay so)
        threads.each(len(x), lambda part: xp.maximum(x[part], 0, out=out[part]), x.size)
        self._out = out if training else None  # out > 0 exactly where x > 0
        return out

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * 1[x > 0]."""
        out, g = _cached(self._out, self), grad_out
        xp = array_namespace(g)
        grad = xp.empty_like(out)  # the memory order of out (what grad_out usually has too)
        # dtype= multiplies by the mask without converting it to floats first (2x faster)
        threads.each(len(g), lambda part: xp.multiply(g[part], out[part] > 0, out=grad[part],
                                                      dtype=g.dtype), g.size)  # fmt: skip
        return grad

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        return graph.node("Relu", [x], f"{prefix}.relu")


class LeakyReLU(Layer):
    per_image = True

    def __init__(self, negative_slope: float = 0.01) -> None:
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"LeakyReLU negative_slope must be in [0, 1), got {negative_slope!r}")
        self.negative_slope = negative_slope
        self._slope: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        xp = array_namespace(x)
        slope = xp.where(x > 0, x.dtype.type(1), x.dtype.type(self.negative_slope))
        self._slope = slope if training else None
        return x * slope

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * (1 if x > 0 else slope)."""
        return grad_out * _cached(self._slope, self)

    def config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        return graph.node("LeakyRelu", [x], f"{prefix}.leaky_relu", alpha=self.negative_slope)


class Tanh(Layer):
    per_image = True
    _out: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        out = array_namespace(x).tanh(x)
        self._out = out if training else None
        return out

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * (1 - tanh(x)^2)."""
        out = _cached(self._out, self)
        return grad_out * (1 - out * out)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        return graph.node("Tanh", [x], f"{prefix}.tanh")


class Sigmoid(Layer):
    per_image = True
    _out: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        xp = array_namespace(x)
        # exp of -|x| never overflows, and e / (1 + e) keeps the tiny values of very negative x
        # (0.5 * (1 + tanh(x / 2)) was exactly 0 from x = -20 in float32)
        e = xp.exp(-xp.abs(x))
        out = xp.where(x >= 0, 1, e) / (1 + e)
        self._out = out if training else None
        return out

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * s * (1 - s)."""
        out = _cached(self._out, self)
        return grad_out * out * (1 - out)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        return graph.node("Sigmoid", [x], f"{prefix}.sigmoid")
