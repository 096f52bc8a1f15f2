"""Batch normalisation for dense (batch, features) and convolutional (batch, C, H, W) inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .conv import as_nchw, channels_last
from .core import Array, Layer, OnnxGraph, Parameter, _cached, array_namespace


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
        xp = array_namespace(x)
        if not training:
            self._x_hat = None  # backward needs a training forward: it raises, as every layer
            scale = self.weight.data / xp.sqrt(self.running_var + self.eps)
            out = x * xp.tile(scale, tiles)
            out += xp.tile(self.bias.data - self.running_mean * scale, tiles)
            return out
        n = len(x) * tiles
        mean = self._per_feature(x.sum(axis=0), tiles) / n
        x_hat = x - xp.tile(mean, tiles)  # centred now, normalised in place below
        var = self._per_feature(xp.einsum("ij,ij->j", x_hat, x_hat), tiles) / n
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        self.running_var *= 1 - m
        self.running_var += (m * n / max(n - 1, 1)) * var
        inv_std = 1 / xp.sqrt(var + self.eps)
        x_hat *= xp.tile(inv_std, tiles)
        self._x_hat, self._inv_std = x_hat, inv_std
        out = x_hat * xp.tile(self.weight.data, tiles)
        out += xp.tile(self.bias.data, tiles)
        return out

    def _backward(self, grad_out: Array, tiles: int, input_grad: bool) -> Array | None:
        x_hat = _cached(self._x_hat, self)
        xp = array_namespace(x_hat)
        self.bias.grad[...] = self._per_feature(grad_out.sum(axis=0), tiles)
        self.weight.grad[...] = self._per_feature(xp.einsum("ij,ij->j", grad_out, x_hat), tiles)
        if not input_grad:
            return None
        n = len(x_hat) * tiles
        scale = self.weight.data * self._inv_std
        grad = x_hat * xp.tile(-self.weight.grad / n * scale, tiles)
        grad += grad_out * xp.tile(scale, tiles)
        grad -= xp.tile(self.bias.grad / n * scale, tiles)
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
