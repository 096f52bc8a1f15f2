"""Convolution and pooling over NCHW batches, as large matrix multiplies.

im2col: a strided view lists every (kh, kw) window of the padded input without copying; one
reshape copies them into a (batch * out_h * out_w, C * kh * kw) matrix, and the convolution is
one matmul with the (C * kh * kw, out_channels) weights. The backward pass scatters the column
gradients back with one vectorised add per kernel position (kh * kw of them, never per pixel).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .core import Array, Layer, Parameter, _cached, array_namespace, init_weight


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _windows(x: Array, kernel: int, stride: int, padding: int) -> Array:
    """(N, C, H, W) -> (N, C, out_h, out_w, kernel, kernel), a view of the zero-padded input."""
    if padding:
        n, c, h, w = x.shape
        padded = array_namespace(x).zeros((n, c, h + 2 * padding, w + 2 * padding), x.dtype)
        padded[:, :, padding : padding + h, padding : padding + w] = x
        x = padded
    return sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]


def _scatter(
    grad_windows: Array, x_shape: tuple[int, ...], kernel: int, stride: int, padding: int
) -> Array:
    """The adjoint of _windows: add (N, C, out_h, out_w, k, k) window gradients to (N, C, H, W)."""
    n, c, h, w = x_shape
    out_h, out_w = grad_windows.shape[2:4]
    grad = array_namespace(grad_windows).zeros(
        (n, c, h + 2 * padding, w + 2 * padding), grad_windows.dtype
    )
    for i in range(kernel):
        for j in range(kernel):
            grad[:, :, i : i + stride * out_h : stride, j : j + stride * out_w : stride] += (
                grad_windows[..., i, j]
            )
    return grad[:, :, padding : padding + h, padding : padding + w]


class Conv2D(Layer):
    """2-D convolution, weight (out_channels, in_channels, kernel, kernel) as in PyTorch."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        rng: np.random.Generator | None = None,
        init: str = "he",
        dtype: Any = np.float32,
    ) -> None:
        if min(in_channels, out_channels, kernel_size, stride) < 1 or padding < 0:
            raise ValueError(
                f"Conv2D needs positive channels, kernel and stride and padding >= 0, got "
                f"{in_channels}, {out_channels}, {kernel_size}, {stride}, {padding}"
            )
        rng = rng if rng is not None else np.random.default_rng(0)
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.stride, self.padding, self.init = stride, padding, init
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        fan_in, fan_out = in_channels * kernel_size**2, out_channels * kernel_size**2
        self.weight = Parameter(init_weight(init, fan_in, fan_out, shape, rng).astype(dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype), decay=False) if bias else None
        self._cols: Array | None = None

    def params(self) -> dict[str, Parameter]:
        return {"weight": self.weight} | ({"bias": self.bias} if self.bias else {})

    @classmethod
    def param_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        o, i, k = (
            int(config["out_channels"]),
            int(config["in_channels"]),
            int(config["kernel_size"]),
        )
        return {"weight": (o, i, k, k)} | ({"bias": (o,)} if config.get("bias", True) else {})

    def forward(self, x: Array, *, training: bool = False) -> Array:
        n, c = x.shape[:2]
        if c != self.in_channels:
            raise ValueError(f"Conv2D expects {self.in_channels} input channels, got {c}")
        k = self.kernel_size
        windows = _windows(x, k, self.stride, self.padding)  # (N, C, oh, ow, k, k)
        oh, ow = windows.shape[2:4]
        cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)
        out = cols @ self.weight.data.reshape(self.out_channels, -1).T  # (N*oh*ow, out_channels)
        if self.bias is not None:
            out += self.bias.data
        if training:
            self._cols, self._x_shape = cols, x.shape
        return out.reshape(n, oh, ow, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dW = g^T cols, db = sum g, dcols = g W, then dx = col2im(dcols)."""
        cols = _cached(self._cols, self)
        n, o, oh, ow = grad_out.shape
        g = grad_out.transpose(0, 2, 3, 1).reshape(n * oh * ow, o)
        self.weight.grad[...] = (g.T @ cols).reshape(self.weight.data.shape)
        if self.bias is not None:
            g.sum(axis=0, out=self.bias.grad)
        if not input_grad:
            return None
        k, c = self.kernel_size, self.in_channels
        dcols = (g @ self.weight.data.reshape(o, -1)).reshape(n, oh, ow, c, k, k)
        return _scatter(
            dcols.transpose(0, 3, 1, 2, 4, 5), self._x_shape, k, self.stride, self.padding
        )

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "bias": self.bias is not None,
            "init": self.init,
        }


class _Pool2D(Layer):
    def __init__(
        self, kernel_size: int = 2, *, stride: int | None = None, padding: int = 0
    ) -> None:
        stride = kernel_size if stride is None else stride
        if kernel_size < 1 or stride < 1 or not 0 <= padding <= kernel_size // 2:
            raise ValueError(
                f"{type(self).__name__} needs kernel, stride >= 1 and 0 <= padding <= kernel/2, "
                f"got {kernel_size}, {stride}, {padding}"
            )
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def config(self) -> dict[str, Any]:
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}


class MaxPool2D(_Pool2D):
    """Maximum over each window (padding counts as -inf, as in PyTorch)."""

    _argmax: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        k, p = self.kernel_size, self.padding
        if p:  # pad with the most negative value, so padding never wins
            n, c, h, w = x.shape
            padded = np.full((n, c, h + 2 * p, w + 2 * p), np.finfo(x.dtype).min, x.dtype)
            padded[:, :, p : p + h, p : p + w] = x
            windows = _windows(padded, k, self.stride, 0)
        else:
            windows = _windows(x, k, self.stride, 0)
        flat = windows.reshape(*windows.shape[:4], k * k)
        argmax = flat.argmax(axis=-1)  # (N, C, oh, ow): which window position won
        if training:
            self._argmax, self._x_shape = argmax, x.shape
        return np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """The gradient goes to the maximum of each window (the first one on ties)."""
        argmax = _cached(self._argmax, self)
        k = self.kernel_size
        winners = argmax[..., None] == np.arange(k * k)  # (N, C, oh, ow, k*k)
        grad_windows = (winners * grad_out[..., None]).reshape(*grad_out.shape, k, k)
        return _scatter(grad_windows, self._x_shape, k, self.stride, self.padding)


class AvgPool2D(_Pool2D):
    """Mean over each window (zero padding included in the count, PyTorch's default)."""

    _x_shape: tuple[int, ...] | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._x_shape = x.shape
        return _windows(x, self.kernel_size, self.stride, self.padding).mean(axis=(-2, -1))

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        k = self.kernel_size
        share = grad_out[..., None, None] / (k * k)
        grad_windows = np.broadcast_to(share, (*grad_out.shape, k, k))
        assert self._x_shape is not None
        return _scatter(grad_windows, self._x_shape, k, self.stride, self.padding)


class GlobalAvgPool2D(Layer):
    """(N, C, H, W) -> (N, C): the mean of each feature map."""

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        h, w = self._x_shape[2:]
        return np.broadcast_to(grad_out[:, :, None, None] / (h * w), self._x_shape).copy()


class Reshape(Layer):
    """(batch, ...) -> (batch, *shape): flat pixels to (1, 28, 28) images before a Conv2D."""

    def __init__(self, shape: list[int] | tuple[int, ...]) -> None:
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._in_shape = x.shape
        return x.reshape(len(x), *self.shape)

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        return grad_out.reshape(self._in_shape)

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}
