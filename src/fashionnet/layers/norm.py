"""Batch normalisation for dense (batch, features) and convolutional (batch, C, H, W) inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .core import Array, Layer, Parameter, _cached, array_namespace


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

    def _shape(self, x: Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(axes to reduce, shape that broadcasts a per-feature vector against x)."""
        if x.ndim == 2:
            return (0,), (1, -1)
        return (0, *range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)

    def forward(self, x: Array, *, training: bool = False) -> Array:
        axes, shape = self._shape(x)
        xp = array_namespace(x)
        if not training:
            scale = self.weight.data / xp.sqrt(self.running_var + self.eps)
            shift = self.bias.data - self.running_mean * scale
            return x * scale.reshape(shape) + shift.reshape(shape)
        n = x.size // self.num_features
        mean = x.mean(axis=axes)
        x_hat = x - mean.reshape(shape)  # centred now, normalised in place below
        var = xp.square(x_hat).mean(axis=axes)
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        self.running_var *= 1 - m
        self.running_var += (m * n / max(n - 1, 1)) * var
        inv_std = 1 / xp.sqrt(var + self.eps)
        x_hat *= inv_std.reshape(shape)
        self._x_hat, self._inv_std = x_hat, inv_std
        return x_hat * self.weight.data.reshape(shape) + self.bias.data.reshape(shape)

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dx = gamma * inv_std * (g - mean(g) - x_hat * mean(g * x_hat)), means over the batch."""
        x_hat = _cached(self._x_hat, self)
        axes, shape = self._shape(x_hat)
        grad_out.sum(axis=axes, out=self.bias.grad)
        (grad_out * x_hat).sum(axis=axes, out=self.weight.grad)
        if not input_grad:
            return None
        n = x_hat.size // self.num_features
        mean_g = (self.bias.grad / n).reshape(shape)
        mean_gx = (self.weight.grad / n).reshape(shape)
        scale = (self.weight.data * self._inv_std).reshape(shape)
        return (grad_out - mean_g - x_hat * mean_gx) * scale

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}
