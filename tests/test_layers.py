import numpy as np
import pytest

from conftest import assert_layer_gradients
from fashionnet.layers import (
    BatchNorm,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    Parameter,
    ReLU,
    Sigmoid,
    Tanh,
    init_weight,
)


def off_kinks(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Inputs at least 0.1 away from 0, where ReLU-like layers have no derivative."""
    x = rng.uniform(0.1, 2.0, size=shape)
    return x * rng.choice([-1.0, 1.0], size=shape)


ALL_LAYERS = {
    "linear": lambda rng: Linear(4, 5, rng=rng, dtype=np.float64),
    "linear_no_bias": lambda rng: Linear(4, 5, rng=rng, bias=False, dtype=np.float64),
    "linear_uniform_init": lambda rng: Linear(4, 5, rng=rng, init="uniform", dtype=np.float64),
    "relu": lambda rng: ReLU(),
    "leaky_relu": lambda rng: LeakyReLU(0.1),
    "tanh": lambda rng: Tanh(),
    "sigmoid": lambda rng: Sigmoid(),
    "flatten": lambda rng: Flatten(),
}


@pytest.mark.parametrize("make_layer", ALL_LAYERS.values(), ids=ALL_LAYERS.keys())
def test_layer_gradients_match_finite_differences(make_layer, rng):
    assert_layer_gradients(make_layer(rng), x=off_kinks(rng, (3, 4)), rng=rng)


def test_flatten_gradient_on_image_batch(rng):
    assert_layer_gradients(Flatten(), x=rng.normal(size=(3, 2, 4, 4)), rng=rng)


@pytest.mark.parametrize("channels_last", [True, False])
def test_flatten_gives_the_gradient_back_in_its_inputs_memory_order(rng, channels_last):
    nchw = rng.normal(size=(3, 2, 4, 5))
    x = (
        np.ascontiguousarray(nchw.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        if channels_last
        else nchw
    )
    layer = Flatten()
    out = layer.forward(x, training=True)
    np.testing.assert_array_equal(out, nchw.reshape(3, -1))  # (C, H, W) order, as PyTorch's
    g = rng.normal(size=out.shape)
    grad = layer.backward(g)
    np.testing.assert_array_equal(grad, g.reshape(x.shape))
    assert grad.strides == x.strides


def test_dropout_gradient_with_a_fixed_mask(rng):
    layer = Dropout(0.3)

    def same_mask() -> None:
        layer.rng = np.random.default_rng(7)

    assert_layer_gradients(layer, x=rng.normal(size=(3, 40)), rng=rng, before_forward=same_mask)


def test_dropout_is_identity_in_evaluation_and_scales_in_training(rng):
    x = np.ones((200, 500), dtype=np.float32)
    layer = Dropout(0.25, rng=rng)
    assert layer.forward(x) is x
    y = layer.forward(x, training=True)
    kept = y != 0
    assert np.allclose(y[kept], 1 / 0.75)
    assert abs(kept.mean() - 0.75) < 0.01
    assert y.dtype == np.float32


def test_dropout_rejects_bad_p():
    with pytest.raises(ValueError, match="Dropout p must be in"):
        Dropout(1.0)


def test_dropout_needs_an_rng_to_train():
    with pytest.raises(RuntimeError, match="rng"):
        Dropout(0.5).forward(np.ones((2, 2)), training=True)


def test_backward_assigns_gradients_rather_than_adding(rng):
    layer = Linear(4, 5, rng=rng, dtype=np.float64)
    x, g = rng.normal(size=(3, 4)), rng.normal(size=(3, 5))
    layer.forward(x, training=True)
    layer.backward(g)
    first = layer.weight.grad.copy()
    layer.backward(g)
    np.testing.assert_array_equal(layer.weight.grad, first)


def test_linear_bias_gradient_is_per_unit_not_a_scalar(rng):
    # the notebook updated each layer's biases with one scalar: the sum over units and samples
    layer = Linear(4, 5, rng=rng, dtype=np.float64)
    layer.forward(rng.normal(size=(3, 4)), training=True)
    g = rng.normal(size=(3, 5))
    layer.backward(g)
    np.testing.assert_allclose(layer.bias.grad, g.sum(axis=0))
    assert len(set(np.round(layer.bias.grad, 12))) == 5


def test_backward_without_training_forward_is_a_clear_error(rng):
    layer = Linear(4, 5, rng=rng)
    layer.forward(np.ones((2, 4), dtype=np.float32))  # inference: nothing cached
    with pytest.raises(RuntimeError, match=r"forward\(x, training=True\)"):
        layer.backward(np.ones((2, 5), dtype=np.float32))


def test_linear_skips_the_input_gradient_when_not_needed(rng):
    layer = Linear(4, 5, rng=rng, dtype=np.float64)
    layer.forward(rng.normal(size=(3, 4)), training=True)
    assert layer.backward(rng.normal(size=(3, 5)), input_grad=False) is None
    assert np.abs(layer.weight.grad).sum() > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_keep_their_dtype(dtype, rng):
    x = rng.normal(size=(3, 4)).astype(dtype)
    for layer in (Linear(4, 5, rng=rng, dtype=dtype), ReLU(), LeakyReLU(), Tanh(), Sigmoid()):
        out = layer.forward(x, training=True)
        assert out.dtype == dtype
        assert layer.backward(np.ones_like(out)).dtype == dtype


def test_sigmoid_does_not_overflow():
    out = Sigmoid().forward(np.array([[-1000.0, 0.0, 1000.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0]])


@pytest.mark.parametrize(
    ("init", "expected_std"),
    [("he", np.sqrt(2 / 400)), ("glorot", np.sqrt(2 / 600)), ("uniform", np.sqrt(1 / 12))],
)
def test_initialisers_have_their_published_scale(init, expected_std, rng):
    w = init_weight(init, 400, 200, (400, 200), rng)
    assert abs(w.std() - expected_std) / expected_std < 0.02


def test_uniform_init_is_the_notebooks_range(rng):
    w = init_weight("uniform", 784, 10, (784, 10), rng)
    assert w.min() >= -0.5 and w.max() < 0.5 and w.min() < -0.49 and w.max() > 0.49


def test_unknown_init_is_named():
    with pytest.raises(ValueError, match="'xavier'"):
        init_weight("xavier", 2, 2, (2, 2), np.random.default_rng(0))


def test_parameter_grad_matches_shape_and_dtype():
    p = Parameter(np.ones((2, 3), dtype=np.float32))
    assert p.grad.shape == (2, 3) and p.grad.dtype == np.float32 and not p.grad.any()


@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 2, 3)], ids=["dense", "conv"])
def test_batchnorm_gradients_in_training_mode(shape, rng):
    layer = BatchNorm(4, dtype=np.float64)
    layer.weight.data[...] = rng.normal(size=4)
    layer.bias.data[...] = rng.normal(size=4)
    assert_layer_gradients(layer, x=rng.normal(size=shape) * 2 + 1, rng=rng)


def test_batchnorm_gradients_in_evaluation_mode_are_an_affine_map(rng):
    layer = BatchNorm(4, dtype=np.float64)
    layer.running_mean[...] = rng.normal(size=4)
    layer.running_var[...] = rng.uniform(0.5, 2, size=4)
    x = rng.normal(size=(3, 4))
    expected = (x - layer.running_mean) / np.sqrt(layer.running_var + layer.eps)
    np.testing.assert_allclose(layer.forward(x), expected)


def test_batchnorm_normalises_and_tracks_running_statistics(rng):
    layer = BatchNorm(3)
    x = (rng.normal(size=(500, 3)) * [1, 2, 3] + [5, -1, 0]).astype(np.float32)
    out = layer.forward(x, training=True)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-3)
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1), rtol=1e-5)
    assert set(layer.buffers()) == {"running_mean", "running_var"}
