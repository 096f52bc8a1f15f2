"""A residual block (He et al. 2016): out = body(x) + shortcut(x)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .conv import Conv2D
from .core import Array, Layer, OnnxGraph, Parameter, build_layer, layer_class
from .norm import BatchNorm


class Residual(Layer):
    """body(x) + x, or body(x) + shortcut(x) when the shortcut is given (a 1x1 convolution and
    BatchNorm where the body changes the channel count or the size).

    The layers inside are named `body.<i>` and `shortcut.<i>` in parameter and checkpoint names.
    A ReLU after the sum is a separate layer, as in `Residual.basic`.
    """

    splits_batch = True  # its convolutions do (threads.py)

    def __init__(self, body: Sequence[Layer], shortcut: Sequence[Layer] | None = None) -> None:
        if not body:
            raise ValueError("Residual needs at least one layer in its body")
        self.body, self.shortcut = list(body), list(shortcut) if shortcut else None

    @classmethod
    def basic(
        cls,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        rng: np.random.Generator,
        dtype: Any = np.float32,
    ) -> Residual:
        """conv3x3 -> BatchNorm -> ReLU -> conv3x3 -> BatchNorm, plus the input (ResNet's basic
        block); a 1x1 convolution and BatchNorm on the shortcut when shapes change."""
        from .activations import ReLU

        body: list[Layer] = [
            Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, rng=rng,
                   dtype=dtype),
            BatchNorm(out_channels, dtype=dtype),
            ReLU(),
            Conv2D(out_channels, out_channels, 3, padding=1, bias=False, rng=rng, dtype=dtype),
            BatchNorm(out_channels, dtype=dtype),
        ]  # fmt: skip
        shortcut: list[Layer] | None = None
        if stride != 1 or in_channels != out_channels:
            shortcut = [
                Conv2D(in_channels, out_channels, 1, stride=stride, bias=False, rng=rng,
                       dtype=dtype),
                BatchNorm(out_channels, dtype=dtype),
            ]  # fmt: skip
        return cls(body, shortcut)

    def _parts(self) -> list[tuple[str, list[Layer]]]:
        return [("body", self.body)] + ([("shortcut", self.shortcut)] if self.shortcut else [])

    def _named(self, kind: str) -> dict[str, Any]:
        """Every inner layer's params() or buffers(), as {"body.0.weight": ...}."""
        return {
            f"{part}.{i}.{name}": value
            for part, layers in self._parts()
            for i, layer in enumerate(layers)
            for name, value in getattr(layer, kind)().items()
        }

    def params(self) -> dict[str, Parameter]:
        return self._named("params")

    def buffers(self) -> dict[str, Array]:
        return self._named("buffers")

    def forward(self, x: Array, *, training: bool = False) -> Array:
        out = x
        for layer in self.body:
            out = layer.forward(out, training=training)
        skip = x
        for layer in self.shortcut or []:
            skip = layer.forward(skip, training=training)
        return out + skip

    def mult_adds(self, x: Array, out: Array) -> int:
        total = 0
        for _, layers in self._parts():
            h = x
            for layer in layers:
                h, before = layer.forward(h), h
                total += layer.mult_adds(before, h)
        return total

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = body's input gradient + the shortcut's (grad_out itself for the identity)."""
        grads = []
        for _, layers in self._parts():
            g: Array | None = grad_out
            for i in range(len(layers) - 1, -1, -1):
                assert g is not None
                g = layers[i].backward(g, input_grad=input_grad or i > 0)
            grads.append(g)
        if not input_grad:
            return None
        body_grad = grads[0]
        assert body_grad is not None
        skip_grad = grads[1] if self.shortcut else grad_out
        return body_grad + skip_grad

    def config(self) -> dict[str, Any]:
        return {
            "body": [layer.spec() for layer in self.body],
            "shortcut": [layer.spec() for layer in self.shortcut or []],
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], *, rng: np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> Layer:  # fmt: skip
        body = [build_layer(spec, rng, dtype) for spec in config["body"]]
        shortcut = [build_layer(spec, rng, dtype) for spec in config.get("shortcut") or []]
        return cls(body, shortcut or None)

    @classmethod
    def param_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        return {
            f"{part}.{i}.{name}": shape
            for part in ("body", "shortcut")
            for i, spec in enumerate(config.get(part) or [])
            for name, shape in layer_class(spec).param_shapes(spec).items()
        }

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        return cls.basic(2, 3, stride=2, rng=rng, dtype=dtype), rng.normal(
            size=(2, 2, 4, 4)
        ).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        out, skip = x, x
        for i, inner in enumerate(self.body):
            out = inner.to_onnx(graph, f"{prefix}.body.{i}", out)
        for i, inner in enumerate(self.shortcut or []):
            skip = inner.to_onnx(graph, f"{prefix}.shortcut.{i}", skip)
        return graph.node("Add", [out, skip], f"{prefix}.add")

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.body)
        skip = ", ".join(repr(layer) for layer in self.shortcut or []) or "identity"
        return f"Residual(body=[{inner}], shortcut=[{skip}])"
