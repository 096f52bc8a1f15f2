"""The contract every registered layer passes (Keras' run_layer_test), on the instance and input
its `example` gives: gradients against finite differences, float32 and float64, a backward that
needs a training forward, spec and config round trips, state_dict, a saved and loaded file, and
ONNX export. A new layer registers itself by subclassing Layer, so it cannot skip a check: Swish
below is defined in this file only, with nothing written for it outside its class.
"""

import json

import numpy as np
import pytest

from conftest import assert_layer_gradients
from fashionnet.checkpoint import load_model, save_checkpoint
from fashionnet.layers import Array, Flatten, Layer, OnnxGraph, Reshape, build_layer
from fashionnet.model import Sequential

# each check on one thread and with every batch split over two (fashionnet/threads.py)
pytestmark = pytest.mark.usefixtures("split_threads")


class Swish(Layer):
    """x * sigmoid(x) (Ramachandran et al. 2017)."""

    _x: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        s = 1 / (1 + np.exp(-x))
        self._x, self._s = (x, s) if training else (None, None)
        return x * s

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * (s + x * s * (1 - s))."""
        if self._x is None:
            raise RuntimeError("Swish.backward needs forward(x, training=True) first")
        s = self._s
        return grad_out * (s + self._x * s * (1 - s))

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        s = graph.node("Sigmoid", [x], f"{prefix}.sigmoid")
        return graph.node("Mul", [x, s], f"{prefix}.swish")


LAYERS = sorted(Layer.registry)


def example(name: str, dtype, seed: int = 0) -> tuple[Layer, np.ndarray]:
    return Layer.registry[name].example(np.random.default_rng(seed), dtype)


def same_randomness(layer: Layer) -> None:
    """Dropout draws its mask from layer.rng: the same mask on every forward of the check."""
    if hasattr(layer, "rng"):
        layer.rng = np.random.default_rng(7)


def around(layer: Layer, x: np.ndarray) -> tuple[Sequential, np.ndarray]:
    """A model of flat inputs (as every fashionnet model takes) with the layer inside."""
    out = layer.forward(x)
    layers = ([Reshape(x.shape[1:])] if x.ndim > 2 else []) + [layer]
    layers += [Flatten()] if out.ndim > 2 else []
    return Sequential(layers), x.reshape(len(x), -1)


def test_every_layer_is_registered_including_one_defined_in_a_test():
    assert {"Linear", "Conv2D", "BatchNorm", "Residual", "MaxPool2D", "Swish"} <= set(LAYERS)


@pytest.mark.parametrize("name", LAYERS)
def test_gradients_match_finite_differences(name):
    layer, x = example(name, np.float64)
    assert_layer_gradients(
        layer, x, np.random.default_rng(1), before_forward=lambda: same_randomness(layer)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", LAYERS)
def test_float32_and_float64_stay_what_they_are(name, dtype):
    layer, x = example(name, dtype)
    out = layer.forward(x, training=True)
    assert out.dtype == dtype
    grad = layer.backward(np.ones_like(out))
    assert grad is not None and grad.dtype == dtype and grad.shape == x.shape
    for p in layer.params().values():
        assert p.data.dtype == p.grad.dtype == dtype
    assert layer.forward(x).dtype == dtype


@pytest.mark.parametrize("name", [n for n in LAYERS if example(n, np.float64)[0].params()])
def test_backward_after_an_evaluation_forward_raises(name):
    # it would otherwise return the gradient of the last training batch
    layer, x = example(name, np.float64)
    out = layer.forward(x, training=True)
    layer.forward(x)
    with pytest.raises(RuntimeError, match="needs forward"):
        layer.backward(np.ones_like(out))


@pytest.mark.parametrize("name", LAYERS)
def test_spec_and_config_round_trip(name):
    layer, _ = example(name, np.float32)
    spec = json.loads(json.dumps(layer.spec()))  # JSON-safe
    rebuilt = build_layer(spec, np.random.default_rng(5), np.float32)
    assert type(rebuilt) is type(layer) and rebuilt.spec() == layer.spec()
    shapes = {n: p.data.shape for n, p in layer.params().items()}
    shapes |= {n: b.shape for n, b in layer.buffers().items()}
    assert type(layer).param_shapes(layer.config()) == shapes


@pytest.mark.parametrize("name", LAYERS)
def test_state_dict_and_saved_file_rebuild_the_same_outputs(name, tmp_path):
    layer, x = example(name, np.float32)
    model, flat_x = around(layer, x)
    same_randomness(layer)
    model.forward(flat_x, training=True)  # running statistics move away from their start
    expected = model.forward(flat_x)
    twin = Sequential.from_config(model.config(), rng=np.random.default_rng(99))
    twin.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(twin.forward(flat_x), expected)
    save_checkpoint(tmp_path / "model.npz", model)
    np.testing.assert_array_equal(load_model(tmp_path / "model.npz").forward(flat_x), expected)


@pytest.mark.parametrize("name", LAYERS)
def test_onnx_export_computes_the_same_probabilities(name):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from fashionnet.export import to_onnx

    layer, x = example(name, np.float32)
    model, flat_x = around(layer, x)
    proto = to_onnx(model, n_features=flat_x.shape[1], input_scale=1.0)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    probs = session.run(["probabilities"], {"pixels": flat_x})[0]
    np.testing.assert_allclose(probs, model.predict_proba(flat_x), rtol=1e-5, atol=1e-6)
