"""Convolution and pooling over NCHW batches.

im2col: for each kernel position (i, j) one strided slice of the padded batch is copied into a
(N, C * k * k, out_h * out_w) column array, and the convolution is a matrix multiply per image
that lands directly in NCHW order. Pooling compares or adds the same k * k strided slices, and
every backward pass scatters with one vectorised add per kernel position: Python loops run over
the k * k positions of a kernel, never over pixels or images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core import Array, Layer, Parameter, _cached, array_namespace, init_weight


def _pad(x: Array, padding: int, value: float = 0.0) -> Array:
    if not padding:
        return x
    n, c, h, w = x.shape
    padded = array_namespace(x).full((n, c, h + 2 * padding, w + 2 * padding), value, x.dtype)
    padded[:, :, padding : padding + h, padding : padding + w] = x
    return padded


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _tap(padded: Array, i: int, j: int, stride: int, out_h: int, out_w: int) -> Array:
    """The input pixel that kernel position (i, j) sees for every output pixel: (N, C, oh, ow)."""
    return padded[:, :, i : i + stride * out_h : stride, j : j + stride * out_w : stride]


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
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"Conv2D expects {self.in_channels} input channels, got {c}")
        k, s = self.kernel_size, self.stride
        oh, ow = _out_size(h, k, s, self.padding), _out_size(w, k, s, self.padding)
        padded = _pad(x, self.padding)
        cols = array_namespace(x).empty((n, c, k, k, oh, ow), x.dtype)
        for i in range(k):  # k*k strided copies, each of a whole batch
            for j in range(k):
                cols[:, :, i, j] = _tap(padded, i, j, s, oh, ow)
        cols = cols.reshape(n, c * k * k, oh * ow)
        # (out, C*k*k) @ (N, C*k*k, oh*ow): one GEMM per image, already NCHW-contiguous
        out = self.weight.data.reshape(self.out_channels, -1) @ cols
        if self.bias is not None:
            out += self.bias.data[:, None]
        if training:
            self._cols, self._x_shape = cols, x.shape
        return out.reshape(n, self.out_channels, oh, ow)

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dW = sum_n g_n cols_n^T, db = sum g, dcols = W^T g, then dx = col2im(dcols)."""
        cols = _cached(self._cols, self)
        xp = array_namespace(cols)
        n, o, oh, ow = grad_out.shape
        g = grad_out.reshape(n, o, oh * ow)
        self.weight.grad[...] = xp.tensordot(g, cols, axes=([0, 2], [0, 2])).reshape(
            self.weight.data.shape
        )
        if self.bias is not None:
            g.sum(axis=(0, 2), out=self.bias.grad)
        if not input_grad:
            return None
        k, s, p = self.kernel_size, self.stride, self.padding
        _, c, h, w = self._x_shape
        dcols = (self.weight.data.reshape(o, -1).T @ g).reshape(n, c, k, k, oh, ow)
        grad = xp.zeros((n, c, h + 2 * p, w + 2 * p), grad_out.dtype)
        for i in range(k):
            for j in range(k):
                _tap(grad, i, j, s, oh, ow)[...] += dcols[:, :, i, j]
        return grad[:, :, p : p + h, p : p + w]

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
        k, s, p = self.kernel_size, self.stride, self.padding
        h, w = x.shape[2:]
        oh, ow = _out_size(h, k, s, p), _out_size(w, k, s, p)
        padded = _pad(x, p, np.finfo(x.dtype).min)  # padding never wins
        best = _tap(padded, 0, 0, s, oh, ow).copy()
        argmax = np.zeros(best.shape, np.int8 if k * k < 128 else np.int32)
        for pos in range(1, k * k):  # strictly greater: the first maximum wins ties
            tap = _tap(padded, pos // k, pos % k, s, oh, ow)
            better = tap > best
            np.copyto(best, tap, where=better)
            np.copyto(argmax, pos, where=better, casting="unsafe")
        if training:
            self._argmax, self._x_shape = argmax, x.shape
        return best

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """The gradient goes to the maximum of each window (the first one on ties)."""
        argmax = _cached(self._argmax, self)
        k, s, p = self.kernel_size, self.stride, self.padding
        n, c, h, w = self._x_shape
        oh, ow = grad_out.shape[2:]
        grad = np.zeros((n, c, h + 2 * p, w + 2 * p), grad_out.dtype)
        for pos in range(k * k):
            won = argmax == pos
            _tap(grad, pos // k, pos % k, s, oh, ow)[...] += np.multiply(
                grad_out, won, dtype=grad.dtype
            )
        return grad[:, :, p : p + h, p : p + w]


class AvgPool2D(_Pool2D):
    """Mean over each window (zero padding included in the count, PyTorch's default)."""

    _x_shape: tuple[int, ...] | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        k, s, p = self.kernel_size, self.stride, self.padding
        h, w = x.shape[2:]
        oh, ow = _out_size(h, k, s, p), _out_size(w, k, s, p)
        padded = _pad(x, p)
        total = _tap(padded, 0, 0, s, oh, ow).copy()
        for pos in range(1, k * k):
            total += _tap(padded, pos // k, pos % k, s, oh, ow)
        self._x_shape = x.shape
        return total * x.dtype.type(1 / (k * k))

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        k, s, p = self.kernel_size, self.stride, self.padding
        if self._x_shape is None:
            raise RuntimeError("AvgPool2D.backward needs forward first")
        n, c, h, w = self._x_shape
        oh, ow = grad_out.shape[2:]
        share = grad_out * grad_out.dtype.type(1 / (k * k))
        grad = np.zeros((n, c, h + 2 * p, w + 2 * p), grad_out.dtype)
        for pos in range(k * k):
            _tap(grad, pos // k, pos % k, s, oh, ow)[...] += share
        return grad[:, :, p : p + h, p : p + w]


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
