"""Convolution and Reshape: PyTorch's (N, C, H, W) shapes over channels-last memory.

Every 4-D array here has the logical shape (N, C, H, W), but these layers write their outputs
channels-last: the memory is (N, H, W, C) and what they return is a transposed view of it (what
PyTorch calls the channels_last memory format). In that order each of a k x k kernel's positions
is one copy of whole channel vectors into (N * H * W, k * k * C) im2col columns, the convolution is
one large matrix multiply whose result is already the next layer's layout, and pooling (pool.py)
and BatchNorm work on contiguous channel vectors. Plain NCHW inputs work too (after one copy).

Backward passes scatter-add the same shifted windows with one vectorised add per kernel position:
Python loops run over the k * k positions of a kernel, never over pixels or images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import threads
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

# im2col columns are built for as many images at a time as fit in this many bytes, so they are
# written, multiplied and discarded while still in cache (chunk sizes compared in BENCHMARKS.md)
CHUNK_BYTES = 1 << 21


def channels_last(x: Array) -> Array:
    """(N, C, H, W) -> contiguous (N, H, W, C): free when x's memory is already channels-last."""
    return array_namespace(x).ascontiguousarray(x.transpose(0, 2, 3, 1))


def as_nchw(x: Array) -> Array:
    """(N, H, W, C) -> the (N, C, H, W) view of the same memory."""
    return x.transpose(0, 3, 1, 2)


def pad(x: Array, padding: int, value: float = 0.0) -> Array:
    """Pad the H and W axes of an (N, H, W, C) array, writing every element once."""
    if not padding:
        return x
    n, h, w, c = x.shape
    p = padding
    padded = array_namespace(x).empty((n, h + 2 * p, w + 2 * p, c), x.dtype)
    padded[:, :p] = padded[:, p + h :] = value
    padded[:, p : p + h, :p] = padded[:, p : p + h, p + w :] = value
    padded[:, p : p + h, p : p + w] = x
    return padded


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def window(padded: Array, i: int, j: int, stride: int, out_h: int, out_w: int) -> Array:
    """The input pixels kernel position (i, j) sees for every output pixel: (N, oh, ow, C)."""
    return padded[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride]


def quads(v: Array) -> Array:
    """(N, H, W, ...) -> the (2, 2, N, H/2, W/2, ...) view of the same memory: [dy, dx, n, a, b]
    is pixel (2a + dy, 2b + dx) of image n, so each 2x2 window's four pixels sit in four blocks.
    H and W must be even. (Splitting an axis in two never copies, whatever the strides.)"""
    n, h, w, *rest = v.shape
    split = v.reshape(n, h // 2, 2, w // 2, 2, *rest)
    return split.transpose(2, 4, 0, 1, 3, *range(5, split.ndim))


class Conv2D(Layer):
    """2-D convolution, weight (out_channels, in_channels, kernel, kernel) as in PyTorch.

    Each thread (threads.py) takes a part of the batch and runs its chunks start to end: columns,
    multiply, bias, and in backward the column gradients; only the weight gradient is a sum of
    the parts' partial sums.
    """

    per_image = True
    splits_batch = True

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
        self._x: Array | None = None

    def params(self) -> dict[str, Parameter]:
        return {"weight": self.weight} | ({"bias": self.bias} if self.bias else {})

    def mult_adds(self, x: Array, out: Array) -> int:
        return int(self.weight.data.size * out.shape[-2] * out.shape[-1])  # each output place

    @classmethod
    def param_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        o, i, k = (
            int(config["out_channels"]),
            int(config["in_channels"]),
            int(config["kernel_size"]),
        )
        return {"weight": (o, i, k, k)} | ({"bias": (o,)} if config.get("bias", True) else {})

    def _matrix(self) -> Array:
        """The weight as a (k * k * C, out) matrix, rows in the im2col columns' order."""
        k, c, o = self.kernel_size, self.in_channels, self.out_channels
        return self.weight.data.transpose(2, 3, 1, 0).reshape(k * k * c, o)

    def _sizes(self, h: int, w: int) -> tuple[int, int]:
        k, s, p = self.kernel_size, self.stride, self.padding
        return out_size(h, k, s, p), out_size(w, k, s, p)

    def _images_per_chunk(self, out_pixels: int, itemsize: int) -> int:
        """How many images' im2col columns fit in CHUNK_BYTES."""
        per_image = out_pixels * self.kernel_size**2 * self.in_channels * itemsize
        return max(1, CHUNK_BYTES // per_image)

    def _im2col(self, x: Array, *, in_quads: bool = False) -> Array:
        """(n, h, w, C) -> (n * oh * ow, k * k * C), columns ordered (kernel row, column, C);
        rows ordered as the output pixels (n, oh, ow), or as their `quads` when in_quads."""
        k, s, p = self.kernel_size, self.stride, self.padding
        n, h, w, c = x.shape
        if k == 1 and s == 1 and p == 0 and not in_quads:
            return x.reshape(n * h * w, c)  # a 1x1 convolution is a dense layer per pixel
        oh, ow = self._sizes(h, w)
        padded = pad(x, p)
        xp = array_namespace(x)
        order, lead = self._row_order(n, oh, ow, in_quads)
        if k * c < 16:  # few channels: one row of columns per (position, channel), as in NCHW
            rows = xp.empty((k, k, c, *lead), x.dtype)
            for i in range(k):
                for j in range(k):
                    tap = order(window(padded, i, j, s, oh, ow))
                    rows[i, j] = tap.transpose(-1, *range(tap.ndim - 1))  # channels first
            return rows.reshape(k * k * c, n * oh * ow).T
        cols = xp.empty((*lead, k, k * c), x.dtype)
        # the strides of contiguous memory (a size-1 axis may report any stride)
        _, hp, wp, _ = padded.shape
        sc = padded.itemsize
        sn, sh, sw = hp * wp * c * sc, wp * c * sc, c * sc
        for i in range(k):
            # in kernel row i, the k pixels under the kernel are k * C consecutive values
            row = xp.lib.stride_tricks.as_strided(
                padded[:, i:], shape=(n, oh, ow, k * c), strides=(sn, s * sh, s * sw, sc)
            )
            cols[..., i, :] = order(row)
        return cols.reshape(n * oh * ow, k * k * c)

    def _input(self, x: Array) -> Array:
        """x (N, C, H, W) channels-last, with the channels this layer takes."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2D expects {self.in_channels} input channels, got {x.shape[1]}")
        return channels_last(x)

    def forward(self, x: Array, *, training: bool = False) -> Array:
        x = self._input(x)
        n, h, w, _ = x.shape
        oh, ow = self._sizes(h, w)
        pixels, o = oh * ow, self.out_channels
        xp = array_namespace(x)
        out = xp.empty((n * pixels, o), x.dtype)
        matrix = self._matrix()
        step = self._images_per_chunk(pixels, x.itemsize)

        def part(images: slice) -> None:
            for n0 in range(images.start, images.stop, step):  # built, multiplied, dropped in cache
                n1 = min(n0 + step, images.stop)
                rows = out[n0 * pixels : n1 * pixels]
                xp.matmul(self._im2col(x[n0:n1]), matrix, out=rows)
                if self.bias is not None:
                    rows += self.bias.data

        threads.each(n, part)
        self._x = x if training else None
        return as_nchw(out.reshape(n, oh, ow, o))

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dW = cols^T g, db = sum g, dcols = g W^T, dx = col2im(dcols); chunk by chunk.

        The columns are rebuilt from the saved input rather than kept from forward: refilling
        a cache-sized chunk is cheaper than reading the whole batch's columns back from memory.
        """
        x = _cached(self._x, self)
        xp = array_namespace(x)
        k, c, o = self.kernel_size, self.in_channels, self.out_channels
        n, h, w, _ = x.shape
        g = channels_last(grad_out)
        pixels = g.shape[1] * g.shape[2]
        g = g.reshape(n * pixels, o)
        grad = xp.empty(x.shape, g.dtype) if input_grad else None
        # (k * k, out, C): dcols come out as one contiguous (rows, C) block per kernel position
        taps = self._matrix().reshape(k * k, c, o).transpose(0, 2, 1)
        step = self._images_per_chunk(pixels, x.itemsize)

        def part(images: slice) -> tuple[Array, Array]:
            d_matrix = xp.zeros((k * k * c, o), g.dtype)
            for n0 in range(images.start, images.stop, step):
                n1 = min(n0 + step, images.stop)
                rows = g[n0 * pixels : n1 * pixels]
                d_matrix += self._im2col(x[n0:n1]).T @ rows
                if grad is not None:
                    grad[n0:n1] = self._col2im(rows @ taps, n1 - n0, h, w)
            return d_matrix, column_sums(g[images.start * pixels : images.stop * pixels])

        self._set_grads(*threads.summed(n, part))
        return None if grad is None else as_nchw(grad)

    def _set_grads(self, d_matrix: Array, d_bias: Array) -> None:
        """The gradients from dL/d(_matrix()) and dL/d(bias)."""
        k, c, o = self.kernel_size, self.in_channels, self.out_channels
        self.weight.grad[...] = d_matrix.reshape(k, k, c, o).transpose(3, 2, 0, 1)
        if self.bias is not None:
            self.bias.grad[...] = d_bias

    def _row_order(self, n: int, oh: int, ow: int, in_quads: bool) -> tuple[Any, tuple[int, ...]]:
        """(view, shape): how _im2col and _col2im see the output pixels, (n, oh, ow) or quads."""
        if in_quads:
            return quads, (2, 2, n, oh // 2, ow // 2)
        return (lambda v: v), (n, oh, ow)

    def _col2im(self, dcols: Array, n: int, h: int, w: int, *, in_quads: bool = False) -> Array:
        """(k * k, n * oh * ow, C) -> (n, h, w, C): each position's block added where it read
        (its rows ordered as _im2col's)."""
        k, s, p, c = self.kernel_size, self.stride, self.padding, self.in_channels
        oh, ow = self._sizes(h, w)
        grad = array_namespace(dcols).zeros((n, h + 2 * p, w + 2 * p, c), dcols.dtype)
        order, lead = self._row_order(n, oh, ow, in_quads)
        for pos in range(k * k):
            order(window(grad, pos // k, pos % k, s, oh, ow))[...] += dcols[pos].reshape(*lead, c)
        return grad[:, p : p + h, p : p + w]

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

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        layer = cls(2, 3, 3, stride=2, padding=1, rng=rng, dtype=dtype)
        return layer, rng.normal(size=(2, 2, 5, 5)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        inputs = [x, graph.const(self.weight.data, f"{prefix}.weight")]
        if self.bias is not None:
            inputs.append(graph.const(self.bias.data, f"{prefix}.bias"))
        k, s, p = self.kernel_size, self.stride, self.padding
        return graph.node("Conv", inputs, f"{prefix}.conv", kernel_shape=[k, k], strides=[s, s],
                          pads=[p, p, p, p])  # fmt: skip


class Reshape(Layer):
    """(batch, ...) -> (batch, *shape): flat pixels to (1, 28, 28) images before a Conv2D."""

    per_image = True

    def __init__(self, shape: list[int] | tuple[int, ...]) -> None:
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._in_shape = x.shape
        return x.reshape(len(x), *self.shape)

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        return grad_out.reshape(self._in_shape)

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        return cls((2, 3, 2)), rng.normal(size=(3, 12)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        shape = graph.const(np.array([0, *self.shape], np.int64), f"{prefix}.shape")
        return graph.node("Reshape", [x, shape], f"{prefix}.reshape")
