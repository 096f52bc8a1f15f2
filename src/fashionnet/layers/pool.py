"""Pooling over (N, C, H, W) feature maps held channels-last (see conv.py for the layout)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import threads
from .conv import as_nchw, channels_last, out_size, pad, window
from .core import Array, Layer, OnnxGraph, _cached, array_namespace


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

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        k, s, p = self.kernel_size, self.stride, self.padding
        attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
        if isinstance(self, AvgPool2D):
            attrs["count_include_pad"] = 1
        op = "AveragePool" if isinstance(self, AvgPool2D) else "MaxPool"
        return graph.node(op, [x], f"{prefix}.pool", **attrs)

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        layer = cls(2) if cls is MaxPool2D else cls(3, stride=2, padding=1)
        return layer, rng.normal(size=(2, 3, 5, 5)).astype(dtype)


class MaxPool2D(_Pool2D):
    """Maximum over each window (padding counts as -inf, as in PyTorch); ties go to the first
    maximum in row-major order, as in PyTorch.

    2x2 windows with stride 2 (the common case) take two passes over whole rows rather than four
    over single channel vectors: the larger of each horizontal pair, then of each vertical pair
    of those, keeping which side won for backward (BENCHMARKS.md: what it saves).
    """

    per_image = True

    _argmax: Array | None = None
    _won: tuple[Array, Array] | None = None
    _quads_won: Array | None = None  # set when layers/convpool.py ran it with its convolution

    def forward(self, x: Array, *, training: bool = False) -> Array:
        x = channels_last(x)
        if (self.kernel_size, self.stride, self.padding) == (2, 2, 0):
            return as_nchw(self._forward_2x2(x, training))
        k, s, p = self.kernel_size, self.stride, self.padding
        xp = array_namespace(x)
        oh, ow = out_size(x.shape[1], k, s, p), out_size(x.shape[2], k, s, p)
        padded = pad(x, p, xp.finfo(x.dtype).min)  # padding never wins
        best = window(padded, 0, 0, s, oh, ow).copy()
        argmax = xp.zeros(best.shape, xp.int8 if k * k < 128 else xp.int32)
        for pos in range(1, k * k):  # strictly greater: the first maximum wins ties
            tap = window(padded, pos // k, pos % k, s, oh, ow)
            better = tap > best
            xp.copyto(best, tap, where=better)
            xp.copyto(argmax, pos, where=better, casting="unsafe")
        self._argmax, self._won, self._x_shape = (argmax if training else None), None, x.shape
        return as_nchw(best)

    def _forward_2x2(self, x: Array, training: bool) -> Array:
        xp = array_namespace(x)
        self._argmax, self._x_shape = None, x.shape
        n, h, w, c = x.shape
        if h % 2 or w % 2:  # an odd last row or column is in no window
            h, w = h - h % 2, w - w % 2
            x = xp.ascontiguousarray(x[:, :h, :w])
        best = xp.empty((n, h // 2, w // 2, c), x.dtype)
        # which of each horizontal pair won, then which of each vertical pair of those
        left_won = xp.empty((n, h * (w // 2), c), bool) if training else None
        top_won = xp.empty((n, h // 2, (w // 2) * c), bool) if training else None

        def part(images: slice) -> None:
            m = images.stop - images.start
            pairs = x[images].reshape(m * h * (w // 2), 2, c)
            left, right = pairs[:, 0], pairs[:, 1]
            wide = xp.maximum(left, right)  # (m * h * ow, C)
            rows = wide.reshape(m * (h // 2), 2, (w // 2) * c)
            top, bottom = rows[:, 0], rows[:, 1]
            xp.maximum(top, bottom, out=best[images].reshape(m * (h // 2), (w // 2) * c))
            # >=: the left, then the upper one wins a tie, the first in row-major order
            if left_won is not None and top_won is not None:
                xp.greater_equal(left, right, out=left_won[images].reshape(left.shape))
                xp.greater_equal(top, bottom, out=top_won[images].reshape(top.shape))

        threads.each(n, part)
        self._won = (left_won, top_won) if left_won is not None and top_won is not None else None
        return best

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """The gradient goes to the maximum of each window (the first one on ties)."""
        g = channels_last(grad_out)
        if self._won is not None:
            return as_nchw(self._backward_2x2(g, *self._won))
        argmax = _cached(self._argmax, self)
        xp = array_namespace(g)
        k, s, p = self.kernel_size, self.stride, self.padding
        n, h, w, c = self._x_shape
        oh, ow = g.shape[1:3]
        grad = xp.zeros((n, h + 2 * p, w + 2 * p, c), g.dtype)
        for pos in range(k * k):
            tap = window(grad, pos // k, pos % k, s, oh, ow)
            if s >= k:  # windows do not overlap: each input pixel is written once at most
                xp.multiply(g, argmax == pos, out=tap, dtype=g.dtype)
            else:
                tap += xp.multiply(g, argmax == pos, dtype=g.dtype)
        return as_nchw(grad[:, p : p + h, p : p + w])

    def _backward_2x2(self, g: Array, left_won: Array, top_won: Array) -> Array:
        xp = array_namespace(g)
        n, h_in, w_in, c = self._x_shape
        h, w = h_in - h_in % 2, w_in - w_in % 2  # the pooled part
        whole = (h, w) == (h_in, w_in)
        grad = xp.empty(self._x_shape, g.dtype) if whole else xp.zeros(self._x_shape, g.dtype)

        def part(images: slice) -> None:
            m = images.stop - images.start
            rows = xp.empty((m * (h // 2), 2, (w // 2) * c), g.dtype)
            gm = g[images].reshape(m * (h // 2), (w // 2) * c)
            won = top_won[images].reshape(gm.shape)
            xp.multiply(gm, won, out=rows[:, 0], dtype=g.dtype)
            xp.subtract(gm, rows[:, 0], out=rows[:, 1])
            wide = rows.reshape(m * h * (w // 2), c)
            shape = (len(wide), 2, c)
            pairs = grad[images].reshape(shape) if whole else xp.empty(shape, g.dtype)
            won = left_won[images].reshape(wide.shape)
            xp.multiply(wide, won, out=pairs[:, 0], dtype=g.dtype)
            xp.subtract(wide, pairs[:, 0], out=pairs[:, 1])
            if not whole:  # a dropped last row or column keeps its zeros
                grad[images, :h, :w] = pairs.reshape(m, h, w, c)

        threads.each(n, part)
        return grad


def max_of_quads(quads: Array, out: Array, won: Array | None) -> None:
    """2x2 max-pooling of windows whose values lie in four blocks (conv.quads): quads (2, 2, ...)
    [row, column in the window] -> out (...); won (3, ...): the left of the top pair, the left of
    the bottom pair, the top pair's larger, each won (ties as MaxPool2D: the first in row-major
    order)."""
    xp = array_namespace(quads)
    (q00, q01), (q10, q11) = quads
    top, bottom = xp.maximum(q00, q01), xp.maximum(q10, q11)
    xp.maximum(top, bottom, out=out)
    if won is not None:
        xp.greater_equal(q00, q01, out=won[0])
        xp.greater_equal(q10, q11, out=won[1])
        xp.greater_equal(top, bottom, out=won[2])


def unpool_quads(g: Array, won: Array, out: Array) -> None:
    """max_of_quads backward: g (...) to the winners in out (2, 2, ...), zeros elsewhere."""
    xp = array_namespace(g)
    top = xp.multiply(g, won[2], dtype=g.dtype)
    bottom = xp.subtract(g, top)
    for half, left_won, pair in ((top, won[0], out[0]), (bottom, won[1], out[1])):
        xp.multiply(half, left_won, out=pair[0], dtype=g.dtype)
        xp.subtract(half, pair[0], out=pair[1])


class AvgPool2D(_Pool2D):
    """Mean over each window (zero padding included in the count, PyTorch's default)."""

    per_image = True

    _x_shape: tuple[int, ...] | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        k, s, p = self.kernel_size, self.stride, self.padding
        x = channels_last(x)
        oh, ow = out_size(x.shape[1], k, s, p), out_size(x.shape[2], k, s, p)
        padded = pad(x, p)
        total = window(padded, 0, 0, s, oh, ow).copy()
        for pos in range(1, k * k):
            total += window(padded, pos // k, pos % k, s, oh, ow)
        self._x_shape = x.shape
        total *= x.dtype.type(1 / (k * k))
        return as_nchw(total)

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        k, s, p = self.kernel_size, self.stride, self.padding
        if self._x_shape is None:
            raise RuntimeError("AvgPool2D.backward needs forward first")
        n, h, w, c = self._x_shape
        share = channels_last(grad_out) * grad_out.dtype.type(1 / (k * k))
        oh, ow = share.shape[1:3]
        grad = np.zeros((n, h + 2 * p, w + 2 * p, c), grad_out.dtype)
        for pos in range(k * k):
            window(grad, pos // k, pos % k, s, oh, ow)[...] += share
        return as_nchw(grad[:, p : p + h, p : p + w])


class GlobalAvgPool2D(Layer):
    """(N, C, H, W) -> (N, C): the mean of each feature map."""

    per_image = True

    def forward(self, x: Array, *, training: bool = False) -> Array:
        x = channels_last(x)
        self._x_shape = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        h, w = self._x_shape[1:3]
        share = grad_out[:, None, None, :] / grad_out.dtype.type(h * w)
        return as_nchw(array_namespace(share).broadcast_to(share, self._x_shape).copy())

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        return cls(), rng.normal(size=(2, 3, 4, 4)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        pooled = graph.node("GlobalAveragePool", [x], f"{prefix}.gap")
        return graph.node("Flatten", [pooled], f"{prefix}.flat", axis=1)
