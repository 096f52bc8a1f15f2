"""Batch normalisation for dense (batch, features) and convolutional (batch, C, H, W) inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import threads
from .conv import as_nchw, channels_last
from .core import Array, Layer, OnnxGraph, Parameter, _cached, array_namespace, column_sums


class BatchNorm(Layer):
    """Batch normalisation (Ioffe & Szegedy 2015) over (batch, features) or (batch, C, H, W).

    Training normalises with the batch's statistics and updates running averages (unbiased
    variance, as PyTorch); evaluation uses the running averages.
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.1,
        eps: float = 1e-5,
        dtype: Any = np.float32,
    ) -> None:
        if num_features < 1:
            raise ValueError(f"BatchNorm num_features must be positive, got {num_features}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"BatchNorm momentum must be in (0, 1], got {momentum!r}")
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.weight = Parameter(np.ones(num_features, dtype), decay=False)
        self.bias = Parameter(np.zeros(num_features, dtype), decay=False)
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)
        self._x_hat: Array | None = None

    def params(self) -> dict[str, Parameter]:
        return {"weight": self.weight, "bias": self.bias}

    def buffers(self) -> dict[str, Array]:
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    @classmethod
    def param_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        n = (int(config["num_features"]),)
        return {"weight": n, "bias": n, "running_mean": n, "running_var": n}

    def forward(self, x: Array, *, training: bool = False) -> Array:
        if x.ndim == 2:
            return self._forward(x, 1, training)
        # channels-last memory viewed as (N, H * W * C): per-channel vectors are tiled H * W
        # times, so every operation runs along whole images rather than rows of C values
        # (faster than broadcasting against (N * H * W, C): BENCHMARKS.md)
        x = channels_last(x)
        n, h, w, c = x.shape
        return as_nchw(self._forward(x.reshape(n, h * w * c), h * w, training).reshape(x.shape))

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dx = gamma * inv_std * (g - mean(g) - x_hat * mean(g * x_hat)), means over the batch."""
        if grad_out.ndim == 2:
            return self._backward(grad_out, 1, input_grad)
        g = channels_last(grad_out)
        n, h, w, c = g.shape
        grad = self._backward(g.reshape(n, h * w * c), h * w, input_grad)
        return None if grad is None else as_nchw(grad.reshape(g.shape))

    def _per_feature(self, wide: Array, tiles: int) -> Array:
        """(tiles * C,) sums -> (C,) sums."""
        return wide.reshape(tiles, self.num_features).sum(axis=0) if tiles > 1 else wide

    def _forward(self, x: Array, tiles: int, training: bool) -> Array:
        """x: (rows, tiles * C); each pass runs over parts of the rows (threads.py)."""
        xp = array_namespace(x)
        out = xp.empty_like(x)
        if not training:
            self._x_hat = None  # backward needs a training forward: it raises, as every layer
            scale = self.weight.data / xp.sqrt(self.running_var + self.eps)
            scale_t = xp.tile(scale, tiles)
            shift_t = xp.tile(self.bias.data - self.running_mean * scale, tiles)

            def infer(rows: slice) -> None:
                xp.multiply(x[rows], scale_t, out=out[rows])
                out[rows] += shift_t

            threads.each(len(x), infer, x.size)
            return out
        n = len(x) * tiles
        sums = threads.summed(len(x), lambda rows: column_sums(x[rows]), x.size)
        mean = self._per_feature(sums, tiles) / n
        x_hat = xp.empty_like(x)  # centred first, normalised in place below
        mean_t = xp.tile(mean, tiles)

        def centre(rows: slice) -> Array:
            xp.subtract(x[rows], mean_t, out=x_hat[rows])
            return xp.einsum("ij,ij->j", x_hat[rows], x_hat[rows])

        var = self._per_feature(threads.summed(len(x), centre, x.size), tiles) / n
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        self.running_var *= 1 - m
        self.running_var += (m * n / max(n - 1, 1)) * var
        inv_std = 1 / xp.sqrt(var + self.eps)
        inv_t, weight_t, bias_t = (xp.tile(v, tiles) for v in (inv_std, self.weight.data,
                                                                 self.bias.data))  # fmt: skip

        def normalise(rows: slice) -> None:
            x_hat[rows] *= inv_t
            xp.multiply(x_hat[rows], weight_t, out=out[rows])
            out[rows] += bias_t

        threads.each(len(x), normalise, x.size)
        self._x_hat, self._inv_std = x_hat, inv_std
        return out

    def _backward(self, grad_out: Array, tiles: int, input_grad: bool) -> Array | None:
        x_hat, g = _cached(self._x_hat, self), grad_out
        xp = array_namespace(x_hat)

        def sums(rows: slice) -> tuple[Array, Array]:  # sum of g, sum of g * x_hat
            return column_sums(g[rows]), xp.einsum("ij,ij->j", g[rows], x_hat[rows])

        d_bias, d_weight = threads.summed(len(x_hat), sums, x_hat.size)
        self.bias.grad[...] = self._per_feature(d_bias, tiles)
        self.weight.grad[...] = self._per_feature(d_weight, tiles)
        if not input_grad:
            return None
        n = len(x_hat) * tiles
        scale = self.weight.data * self._inv_std
        a_t = xp.tile(-self.weight.grad / n * scale, tiles)
        b_t = xp.tile(scale, tiles)
        c_t = xp.tile(self.bias.grad / n * scale, tiles)
        grad = xp.empty_like(x_hat)

        def part(rows: slice) -> None:
            xp.multiply(x_hat[rows], a_t, out=grad[rows])
            grad[rows] += g[rows] * b_t
            grad[rows] -= c_t

        threads.each(len(x_hat), part, x_hat.size)
        return grad

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        return cls(4, dtype=dtype), rng.normal(size=(6, 4)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        names = [graph.const(v, f"{prefix}.{k}") for k, v in (
            ("weight", self.weight.data), ("bias", self.bias.data),
            ("running_mean", self.running_mean), ("running_var", self.running_var),
        )]  # fmt: skip
        return graph.node(
            "BatchNormalization", [x, *names], f"{prefix}.batchnorm", epsilon=self.eps
        )
