"""A convolution and the 2x2 max-pool after it, run as one step inside a Stretch (model/stretch.py).

Pooling the convolution's output as it lies, channels-last, compares pairs of C-value runs at
strides: short inner loops; the small CNN's first pooling took longer than the convolution before
it (1.4 ms forward and backward for 41 images of 28x28x32). Here the convolution's im2col rows come
in the order of `conv.quads`, so its matrix product writes each 2x2 window's four values into four
contiguous blocks, and the pooling is three `maximum`s over whole blocks (BENCHMARKS.md: what it
saves). Each im2col chunk is multiplied, pooled and dropped while in cache; the unpooled output is
never written whole.

Not a layer of its own: the two layers stay what the model lists, saves and exports, and keep
what backward needs in their own `_` attributes (STYLE.md), so a Stretch saves and restores them
chunk by chunk as for any layer. The results equal the two layers' one after the other: the same
maxima and ties; the weight and bias gradients sum the same terms in another order.
"""

from __future__ import annotations

from .conv import Conv2D, as_nchw, channels_last, quads
from .core import Array, Layer, _cached, array_namespace, column_sums
from .pool import MaxPool2D, max_of_quads, unpool_quads


class ConvPool:
    """conv then pool, with the forward and backward of one layer. Feature maps of odd height or
    width (whose last row or column no window covers) run as the two layers one after the other."""

    def __init__(self, conv: Conv2D, pool: MaxPool2D) -> None:
        self.conv, self.pool = conv, pool

    @classmethod
    def of(cls, *layers: Layer) -> ConvPool | None:
        """A ConvPool of a Conv2D and a 2x2, stride 2, unpadded MaxPool2D; None for others."""
        if len(layers) != 2:
            return None
        conv, pool = layers
        if type(conv) is not Conv2D or type(pool) is not MaxPool2D:  # not subclasses
            return None
        two_by_two = (pool.kernel_size, pool.stride, pool.padding) == (2, 2, 0)
        return cls(conv, pool) if two_by_two else None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        conv, pool = self.conv, self.pool
        oh, ow = conv._sizes(*x.shape[2:])
        pool._quads_won = None
        if oh % 2 or ow % 2:
            return pool.forward(conv.forward(x, training=training), training=training)
        x = conv._input(x)
        n = len(x)
        xp = array_namespace(x)
        o, area = conv.out_channels, (oh // 2) * (ow // 2) * conv.out_channels  # per image
        out = xp.empty((n, oh // 2, ow // 2, o), x.dtype)
        won = xp.empty((3, n * area), bool) if training else None
        matrix, flat = conv._matrix(), out.reshape(n * area)
        step = conv._images_per_chunk(oh * ow, x.itemsize)
        for n0 in range(0, n, step):  # built, multiplied, pooled, dropped in cache
            n1 = min(n0 + step, n)
            rows = conv._im2col(x[n0:n1], in_quads=True) @ matrix
            if conv.bias is not None:
                rows += conv.bias.data
            part = won[:, n0 * area : n1 * area] if won is not None else None
            max_of_quads(rows.reshape(2, 2, -1), flat[n0 * area : n1 * area], part)
        conv._x = x if training else None
        pool._quads_won, pool._won, pool._argmax = won, None, None
        return as_nchw(out)

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """The pooling's gradient into the convolution's backward: for an input gradient in the
        output's own order (col2im scatters it in order), for the weights alone in the quads
        order forward used, chunk by chunk."""
        conv, pool = self.conv, self.pool
        won = pool._quads_won
        if won is None:
            g = pool.backward(grad_out)
            assert g is not None
            return conv.backward(g, input_grad=input_grad)
        g = channels_last(grad_out)
        n, a, b, o = g.shape
        xp = array_namespace(g)
        won = won.reshape(3, n, a, b, o)
        if input_grad:
            full = xp.empty((n, 2 * a, 2 * b, o), g.dtype)
            unpool_quads(g, won, quads(full))
            return conv.backward(as_nchw(full), input_grad=True)
        x = _cached(conv._x, conv)
        k, c = conv.kernel_size, conv.in_channels
        d_matrix, d_bias = xp.zeros((k * k * c, o), g.dtype), xp.zeros(o, g.dtype)
        step = conv._images_per_chunk(4 * a * b, x.itemsize)
        for n0 in range(0, n, step):
            n1 = min(n0 + step, n)
            rows = xp.empty((2, 2, n1 - n0, a, b, o), g.dtype)
            unpool_quads(g[n0:n1], won[:, n0:n1], rows)
            rows = rows.reshape(-1, o)
            d_matrix += conv._im2col(x[n0:n1], in_quads=True).T @ rows
            d_bias += column_sums(rows)
        conv._set_grads(d_matrix, d_bias)
        return None
