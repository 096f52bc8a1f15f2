import numpy as np
import pytest

from conftest import assert_layer_gradients
from fashionnet.checkpoint import load_model, save_checkpoint
from fashionnet.layers import (
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Flatten,
    GlobalAvgPool2D,
    Linear,
    MaxPool2D,
    ReLU,
    Reshape,
    Residual,
)
from fashionnet.model import Sequential

CONVS = {
    "3x3": dict(kernel_size=3),
    "3x3_pad1": dict(kernel_size=3, padding=1),
    "3x3_stride2_pad1": dict(kernel_size=3, stride=2, padding=1),
    "5x5_stride2": dict(kernel_size=5, stride=2, padding=2, bias=False),
    "1x1": dict(kernel_size=1),
}


@pytest.mark.parametrize("kwargs", CONVS.values(), ids=CONVS.keys())
def test_conv2d_gradients_match_finite_differences(kwargs, rng):
    layer = Conv2D(2, 3, rng=rng, dtype=np.float64, **kwargs)
    if layer.bias is not None:
        layer.bias.data[...] = rng.normal(size=3)
    assert_layer_gradients(layer, x=rng.normal(size=(2, 2, 7, 6)), rng=rng)


def distinct(rng, shape):
    """Inputs whose values are all far apart, so no pooling window has a near-tie."""
    return rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64) * 0.1


POOLS = {
    "max2": lambda: MaxPool2D(2),
    "max3_stride2_pad1": lambda: MaxPool2D(3, stride=2, padding=1),
    "avg2": lambda: AvgPool2D(2),
    "avg3_stride1_pad1": lambda: AvgPool2D(3, stride=1, padding=1),
    "global_avg": GlobalAvgPool2D,
}


@pytest.mark.parametrize("make", POOLS.values(), ids=POOLS.keys())
def test_pooling_gradients_match_finite_differences(make, rng):
    assert_layer_gradients(make(), x=distinct(rng, (2, 3, 6, 6)), rng=rng)


def test_reshape_gradient(rng):
    assert_layer_gradients(Reshape((2, 3, 2)), x=rng.normal(size=(3, 12)), rng=rng)


def test_conv_output_shapes(rng):
    x = rng.normal(size=(4, 1, 28, 28)).astype(np.float32)
    assert Conv2D(1, 8, 3, padding=1, rng=rng).forward(x).shape == (4, 8, 28, 28)
    assert Conv2D(1, 8, 3, stride=2, padding=1, rng=rng).forward(x).shape == (4, 8, 14, 14)
    assert Conv2D(1, 8, 5, rng=rng).forward(x).shape == (4, 8, 24, 24)
    assert MaxPool2D(2).forward(x).shape == (4, 1, 14, 14)
    assert Conv2D(1, 8, 3, rng=rng).forward(x).dtype == np.float32


def test_maxpool_picks_the_maximum_by_hand():
    x = np.array([[[[1, 5, 2, 0], [3, 4, 8, 1], [0, 0, 1, 1], [9, 0, 1, 2]]]], dtype=np.float64)
    pool = MaxPool2D(2)
    np.testing.assert_array_equal(pool.forward(x, training=True), [[[[5, 8], [9, 2]]]])
    grad = pool.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, 0, 1], expected[0, 0, 1, 2], expected[0, 0, 3, 0], expected[0, 0, 3, 3] = (
        1,
        2,
        3,
        4,
    )
    np.testing.assert_array_equal(grad, expected)


def test_bad_conv_arguments_are_named():
    with pytest.raises(ValueError, match="Conv2D"):
        Conv2D(1, 0, 3)
    with pytest.raises(ValueError, match="4 input channels"):
        Conv2D(4, 2, 3).forward(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="MaxPool2D"):
        MaxPool2D(2, padding=2)


def small_cnn(rng, dtype=np.float32):
    return Sequential([
        Reshape((1, 8, 8)), Conv2D(1, 4, 3, padding=1, rng=rng, dtype=dtype),
        BatchNorm(4, dtype=dtype), ReLU(), MaxPool2D(2),
        Residual.basic(4, 4, rng=rng, dtype=dtype), ReLU(),
        Residual.basic(4, 6, stride=2, rng=rng, dtype=dtype), ReLU(), Flatten(),
        Linear(24, 3, rng=rng, dtype=dtype),
    ])  # fmt: skip


def test_a_whole_cnn_has_correct_gradients(rng):
    from test_model import assert_model_gradients

    model = small_cnn(rng, np.float64)
    assert_model_gradients(model, rng.normal(size=(3, 64)), np.array([0, 2, 1]))


def test_a_cnn_round_trips_through_a_checkpoint(tmp_path, rng):
    model = small_cnn(rng)
    model.forward(rng.normal(size=(16, 64)).astype(np.float32), training=True)
    save_checkpoint(tmp_path / "cnn.npz", model)
    loaded = load_model(tmp_path / "cnn.npz")
    x = rng.normal(size=(5, 64)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.config() == model.config()


def naive_conv(x, weight, bias, stride, padding):
    """The definition, one output value at a time."""
    n, _, h, w = x.shape
    o, _, k, _ = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for y in range(oh):
        for z in range(ow):
            patch = xp[:, :, y * stride : y * stride + k, z * stride : z * stride + k]
            out[:, :, y, z] = np.einsum("nckl,ockl->no", patch, weight)
    return out + (0 if bias is None else bias.data[None, :, None, None])


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("kwargs", CONVS.values(), ids=CONVS.keys())
def test_conv2d_is_the_definition_in_any_memory_layout(kwargs, channels, rng):
    """NCHW, channels-last and reversed views; one channel (a size-1 axis has any stride)."""
    x = rng.normal(size=(3, channels, 9, 9))
    layer = Conv2D(channels, 4, rng=rng, dtype=np.float64, **kwargs)
    expected = naive_conv(x, layer.weight.data, layer.bias, layer.stride, layer.padding)
    channels_last = x.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2)
    for view in (x, channels_last, x[:, :, ::-1][:, :, ::-1]):
        np.testing.assert_allclose(layer.forward(view), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2], ids=["identity", "projection"])
def test_residual_block_gradients_match_finite_differences(stride, rng):
    block = Residual.basic(2, 2 * stride, stride=stride, rng=rng, dtype=np.float64)
    assert_layer_gradients(block, x=rng.normal(size=(3, 2, 6, 6)), rng=rng)
    names = set(block.params())
    assert "body.0.weight" in names and ("shortcut.0.weight" in names) == (stride == 2)


def test_residual_needs_a_body():
    with pytest.raises(ValueError, match="at least one layer"):
        Residual([])
