"""A convolution and its 2x2 max-pool as one step (layers/convpool.py) give exactly what the two
layers give one after the other."""

import numpy as np
import pytest

from fashionnet import threads
from fashionnet.layers import AvgPool2D, Conv2D, Layer, MaxPool2D, ReLU
from fashionnet.layers.conv import quads
from fashionnet.layers.convpool import ConvPool
from fashionnet.model import Sequential
from fashionnet.model import stretch as stretch_module


def test_quads_puts_each_two_by_two_window_in_four_blocks_of_the_same_memory():
    v = np.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)
    q = quads(v)
    assert q.shape == (2, 2, 2, 2, 3, 3) and np.shares_memory(q, v)
    for dy, dx, n, a, b in np.ndindex(2, 2, 2, 2, 3):
        np.testing.assert_array_equal(q[dy, dx, n, a, b], v[n, 2 * a + dy, 2 * b + dx])
    strided = np.zeros((2, 9, 9, 3))[:, 1:5, 2:8]  # a window of a larger array, as col2im's
    quads(strided)[1, 0] += 1
    assert strided[:, 1::2, ::2].min() == 1 and strided.sum() == 2 * 2 * 3 * 3


# (in, out, kernel, stride, padding, input size): even outputs run fused (one channel: im2col's
# rows per position; a 1x1 convolution; a strided one), odd ones as the two layers
SHAPES = [
    (2, 3, 3, 1, 1, 8),
    (1, 4, 3, 1, 1, 6),
    (5, 4, 1, 1, 0, 4),
    (3, 2, 3, 2, 1, 8),
    (2, 3, 3, 1, 1, 7),
    (2, 3, 3, 1, 0, 8),
]


@pytest.mark.parametrize(("c_in", "c_out", "k", "s", "p", "size"), SHAPES)
@pytest.mark.parametrize("input_grad", [True, False])
def test_conv_pool_equals_the_two_layers_on_values_full_of_ties(
    c_in, c_out, k, s, p, size, input_grad
):
    """Small integers: every sum exact, so any difference in which value a window takes or where
    a gradient goes shows; ties in most windows (the first in row-major order wins)."""
    rng = np.random.default_rng(size + k + c_in)
    conv = Conv2D(c_in, c_out, k, stride=s, padding=p, rng=rng, dtype=np.float64)
    conv.weight.data[...] = rng.integers(-2, 3, conv.weight.data.shape)
    conv.bias.data[...] = rng.integers(-2, 3, c_out)
    pool = MaxPool2D(2)
    x = rng.integers(-2, 3, (3, c_in, size, size)).astype(np.float64)

    expected = pool.forward(conv.forward(x, training=True), training=True)
    g = rng.integers(-3, 4, expected.shape).astype(np.float64)
    back = conv.backward(pool.backward(g), input_grad=input_grad)
    grads = [conv.weight.grad.copy(), conv.bias.grad.copy()]

    fused = ConvPool.of(conv, pool)
    assert fused is not None
    np.testing.assert_array_equal(fused.forward(x, training=True), expected)
    conv.weight.grad[...] = conv.bias.grad[...] = np.nan
    result = fused.backward(g, input_grad=input_grad)
    if input_grad:
        np.testing.assert_array_equal(result, back)
    else:
        assert result is None
    np.testing.assert_array_equal(conv.weight.grad, grads[0])
    np.testing.assert_array_equal(conv.bias.grad, grads[1])
    np.testing.assert_array_equal(fused.forward(x), expected)  # inference: no masks kept


def test_conv_pool_in_float32_agrees_with_the_two_layers_to_rounding():
    rng = np.random.default_rng(1)
    conv, pool = Conv2D(4, 8, 3, padding=1, rng=rng), MaxPool2D(2)
    x = rng.normal(size=(5, 4, 10, 10)).astype(np.float32)
    expected = pool.forward(conv.forward(x, training=True), training=True)
    g = rng.normal(size=expected.shape).astype(np.float32)
    back = conv.backward(pool.backward(g))
    weight_grad = conv.weight.grad.copy()
    fused = ConvPool(conv, pool)
    # the same dot products, by a matrix product of other rows (its blocking may differ)
    np.testing.assert_allclose(fused.forward(x, training=True), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused.backward(g), back, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conv.weight.grad, weight_grad, rtol=1e-5, atol=1e-5)


def test_a_conv_pool_is_only_made_of_a_convolution_and_a_two_by_two_max_pool():
    conv = Conv2D(1, 2, 3)
    assert ConvPool.of(conv, MaxPool2D(2)) is not None
    assert ConvPool.of(conv, MaxPool2D(3)) is None
    assert ConvPool.of(conv, MaxPool2D(2, stride=1)) is None
    assert ConvPool.of(conv, MaxPool2D(2, padding=1)) is None
    assert ConvPool.of(conv, AvgPool2D(2)) is None
    assert ConvPool.of(MaxPool2D(2), conv) is None
    assert ConvPool.of(conv) is None


def test_a_stretch_runs_each_convolution_and_the_pool_after_its_relu_as_one_step(monkeypatch):
    """conv, ReLU, pool runs as conv + pool fused, then the ReLU, on two threads."""
    monkeypatch.setattr(stretch_module, "CHUNK_BYTES", 1)
    monkeypatch.setattr(threads, "MIN_PART", 1)
    calls: list[int] = []
    forward = ConvPool.forward

    def counted(self: ConvPool, x: np.ndarray, *, training: bool = False) -> np.ndarray:
        calls.append(len(x))
        return forward(self, x, training=training)

    monkeypatch.setattr(ConvPool, "forward", counted)
    rng = np.random.default_rng(2)
    layers: list[Layer] = [
        Conv2D(1, 3, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
        Conv2D(3, 4, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
    ]  # fmt: skip
    x = rng.normal(size=(4, 1, 8, 8)).astype(np.float32)
    h = x
    for layer in layers:
        h = layer.forward(h)
    model = Sequential(layers)
    with threads.region(2):
        np.testing.assert_allclose(model.forward(x), h, rtol=1e-6)
    assert calls == [1] * 8  # two fused steps for each of four one-image chunks
