"""Dense layers: Linear, Dropout, Flatten.

Weights are stored (in_features, out_features) so a dense layer is `x @ weight + bias`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import threads
from .conv import as_nchw, channels_last
from .core import (
    Array,
    Layer,
    OnnxGraph,
    Parameter,
    _cached,
    array_namespace,
    column_sums,
    init_weight,
)


class Linear(Layer):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rng: np.random.Generator | None = None,
        init: str = "he",
        bias: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear sizes must be positive, got {in_features}, {out_features}")
        rng = rng if rng is not None else np.random.default_rng(0)
        self.in_features, self.out_features, self.init = in_features, out_features, init
        w = init_weight(init, in_features, out_features, (in_features, out_features), rng)
        self.weight = Parameter(w.astype(dtype))
        self.bias: Parameter | None = None
        if bias:
            b = (
                rng.uniform(-0.5, 0.5, out_features)
                if init == "uniform"
                else np.zeros(out_features)
            )
            self.bias = Parameter(b.astype(dtype), decay=False)
        self._x: Array | None = None

    def params(self) -> dict[str, Parameter]:
        return {"weight": self.weight} | ({"bias": self.bias} if self.bias else {})

    def mult_adds(self, x: Array, out: Array) -> int:
        return int(self.weight.data.size)

    @classmethod
    def param_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        n_in, n_out = int(config["in_features"]), int(config["out_features"])
        return {"weight": (n_in, n_out)} | ({"bias": (n_out,)} if config.get("bias", True) else {})

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._x = x if training else None
        xp = array_namespace(x)
        out = xp.empty((len(x), self.out_features), xp.result_type(x, self.weight.data))

        def part(rows: slice) -> None:  # one part, the whole batch, unless in threads.region()
            xp.matmul(x[rows], self.weight.data, out=out[rows])  # (batch, out_features)
            if self.bias is not None:
                out[rows] += self.bias.data

        threads.each(len(x), part, x.size * self.out_features // threads.MADDS_PER_VALUE)
        return out

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dW = x^T g, db = sum_batch g, dx = g W^T."""
        x, g = _cached(self._x, self), grad_out
        xp = array_namespace(x)
        work = 2 * x.size * self.out_features // threads.MADDS_PER_VALUE  # two products
        if len(threads.plan(len(x), work)) == 1:
            xp.matmul(x.T, g, out=self.weight.grad)
            if self.bias is not None:
                self.bias.grad[...] = column_sums(g)
            return g @ self.weight.data.T if input_grad else None
        grad = xp.empty_like(x) if input_grad else None

        def part(rows: slice) -> tuple[Array, Array]:
            if grad is not None:
                xp.matmul(g[rows], self.weight.data.T, out=grad[rows])
            return x[rows].T @ g[rows], column_sums(g[rows])

        d_weight, d_bias = threads.summed(len(x), part, work)
        self.weight.grad[...] = d_weight
        if self.bias is not None:
            self.bias.grad[...] = d_bias
        return grad

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "init": self.init,
            "bias": self.bias is not None,
        }

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        return cls(4, 5, rng=rng, dtype=dtype), rng.normal(size=(3, 4)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        inputs = [x, graph.const(self.weight.data, f"{prefix}.weight")]
        if self.bias is not None:
            inputs.append(graph.const(self.bias.data, f"{prefix}.bias"))
        return graph.node("Gemm", inputs, f"{prefix}.linear")


class Dropout(Layer):
    """Inverted dropout: in training, zero units with probability p and scale the rest by 1/(1-p).

    The mask comes from `rng`, which must be given before training (the model's generator).
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout p must be in [0, 1), got {p!r}")
        self.p, self.rng = p, rng
        self._mask: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        if not training or self.p == 0.0:
            self._mask = None
            return x
        if self.rng is None:
            raise RuntimeError("Dropout needs an rng to train: Dropout(p, rng=generator)")
        # a unit is kept with probability 1 - p (to 2^-53: float64 draws), so the scale is
        # 1 / (1 - p) as in PyTorch; as fast here as masks built from 16 or 32 random bits
        xp = array_namespace(x)
        if x.ndim == 4:  # feature maps: the mask in x's channels-last memory order
            n, c, h, w = x.shape
            drawn = self.rng.random((n, h, w, c)) < 1.0 - self.p
            keep = xp.asarray(drawn).transpose(0, 3, 1, 2)
        else:
            keep = xp.asarray(self.rng.random(x.shape) < 1.0 - self.p)
        # the 1/keep scale is folded into the mask: one multiply in forward, one in backward
        self._mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * mask / (1 - p)."""
        return grad_out if self._mask is None else grad_out * self._mask

    def config(self) -> dict[str, Any]:
        return {"p": self.p}

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        return cls(0.3, rng=rng), rng.normal(size=(3, 40)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        return graph.node("Identity", [x], f"{prefix}.identity")  # inference: no dropout


class Flatten(Layer):
    """(batch, ...) -> (batch, features), features in (C, H, W) order as in PyTorch.

    Feature maps held channels-last (conv.py) are copied into that order forward, and their
    gradient goes back channels-last: the layers below (a ReLU's mask, BatchNorm, pooling) then
    meet arrays of their own memory order. An elementwise pass over arrays of two orders walks
    one at a stride: the `cnn` preset's last ReLU took 0.91 ms backward so, 0.16 ms after this
    0.09 ms copy (batch 256, 2 threads).
    """

    per_image = True
    _channels_last = False

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._shape = x.shape
        self._channels_last = (
            x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 2, 3, 1).flags.c_contiguous
        )
        return x.reshape(len(x), -1)

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        grad = grad_out.reshape(self._shape)
        return as_nchw(channels_last(grad)) if self._channels_last else grad

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        return cls(), rng.normal(size=(3, 2, 3, 3)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        return graph.node("Flatten", [x], f"{prefix}.flatten", axis=1)
