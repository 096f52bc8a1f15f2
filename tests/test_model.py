import numpy as np
import pytest

from conftest import numerical_grad
from fashionnet.layers import Dropout, Linear, ReLU
from fashionnet.losses import softmax_cross_entropy
from fashionnet.model import Sequential, mlp


def assert_model_gradients(model: Sequential, x: np.ndarray, labels: np.ndarray) -> None:
    """Whole-network check: dLoss/dparam from backward equals central differences."""

    def loss() -> float:
        return softmax_cross_entropy(model.forward(x, training=True), labels)[0]

    _, grad_logits = softmax_cross_entropy(model.forward(x, training=True), labels)
    model.backward(grad_logits)
    for name, p in model.named_parameters().items():
        analytic = p.grad.copy()
        np.testing.assert_allclose(
            analytic, numerical_grad(loss, p.data), rtol=1e-5, atol=1e-8, err_msg=name
        )


def test_the_notebooks_784_10_10_network_has_correct_gradients(rng):
    # the notebook computed dW1 from dZ2; a 10-10 net hides shape errors, 784 inputs do not
    model = mlp(784, [10], 10, rng=rng, init="uniform", dtype=np.float64)
    x = rng.uniform(0, 1, size=(3, 784))
    assert_model_gradients(model, x, np.array([1, 7, 3]))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_hidden_width_different_from_class_count(activation, rng):
    model = mlp(6, [7, 5], 4, rng=rng, activation=activation, dtype=np.float64)
    assert_model_gradients(model, rng.normal(size=(3, 6)), np.array([0, 3, 2]))


def test_model_with_dropout_has_correct_gradients_for_a_fixed_mask(rng):
    model = mlp(6, [8], 3, rng=rng, dropout=0.3, dtype=np.float64)
    dropout = model.layers[2]
    assert isinstance(dropout, Dropout)

    def loss() -> float:
        dropout.rng = np.random.default_rng(5)
        return softmax_cross_entropy(model.forward(x, training=True), labels)[0]

    x, labels = rng.normal(size=(3, 6)), np.array([0, 2, 1])
    dropout.rng = np.random.default_rng(5)
    _, g = softmax_cross_entropy(model.forward(x, training=True), labels)
    model.backward(g)
    for name, p in model.named_parameters().items():
        np.testing.assert_allclose(
            p.grad.copy(), numerical_grad(loss, p.data), rtol=1e-5, atol=1e-8, err_msg=name
        )


def test_predict_and_predict_proba_agree_across_batches(rng):
    model = mlp(5, [8], 3, rng=rng)
    x = rng.normal(size=(50, 5)).astype(np.float32)
    probs = model.predict_proba(x, batch_size=7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(x, batch_size=7), probs.argmax(axis=1))
    np.testing.assert_allclose(model.predict_proba(x), probs, rtol=1e-6)


def test_predict_on_nothing_is_an_error(rng):
    with pytest.raises(ValueError, match="at least one sample"):
        mlp(5, [8], 3, rng=rng).predict(np.zeros((0, 5), dtype=np.float32))


def test_config_rebuilds_the_same_architecture(rng):
    model = mlp(784, [32, 16], 10, rng=rng, activation="leaky_relu", dropout=0.1, init="glorot")
    rebuilt = Sequential.from_config(model.config(), rng=rng)
    assert rebuilt.config() == model.config()
    assert Sequential.param_shapes(model.config()) == {
        k: p.data.shape for k, p in model.named_parameters().items()
    }
    assert model.n_parameters() == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10


def test_unknown_layer_in_a_config_is_named():
    with pytest.raises(ValueError, match="'Conv9D'"):
        Sequential.from_config({"layers": [{"type": "Conv9D"}]})


def test_named_parameters_follow_layer_order(rng):
    model = Sequential([Linear(3, 4, rng=rng), ReLU(), Linear(4, 2, rng=rng)])
    assert list(model.named_parameters()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_same_seed_gives_identical_weights():
    a = mlp(20, [16], 4, rng=np.random.default_rng(3))
    b = mlp(20, [16], 4, rng=np.random.default_rng(3))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_bad_activation_is_named(rng):
    with pytest.raises(ValueError, match="'swish'"):
        mlp(4, [4], 2, rng=rng, activation="swish")


def test_flip_averaging_predicts_the_mean_of_both_views(rng, tmp_path):
    from fashionnet.checkpoint import load_model, save_checkpoint
    from fashionnet.losses import softmax
    from fashionnet.model import FlipAveraged, mirror, model_from_config
    from fashionnet.train import evaluate

    net = mlp(16, [8], 3, rng=rng)
    model = FlipAveraged(net)
    x = rng.normal(size=(5, 16)).astype(np.float32)
    np.testing.assert_array_equal(mirror(x)[0].reshape(4, 4), x[0].reshape(4, 4)[:, ::-1])
    expected = (softmax(net.forward(x)) + softmax(net.forward(mirror(x)))) / 2
    np.testing.assert_allclose(model.predict_proba(x), expected, rtol=1e-6)
    # each image beside its mirror image in one pass, batch by batch: any batch size, any split
    for batch_size in (1, 2, 4, 9):
        np.testing.assert_allclose(model.predict_proba(x, batch_size=batch_size), expected,
                                   rtol=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match="at least one sample"):  # as the wrapped model
        model.predict_proba(x[:0])
    np.testing.assert_array_equal(model.predict(x), expected.argmax(axis=1))
    y = np.array([0, 1, 2, 0, 1])
    loss, accuracy = evaluate(model, x, y)
    assert accuracy == (expected.argmax(axis=1) == y).mean()
    np.testing.assert_allclose(loss, -np.log(expected[np.arange(5), y]).mean(), rtol=1e-5)
    save_checkpoint(tmp_path / "m.npz", model)
    loaded = load_model(tmp_path / "m.npz")
    assert isinstance(loaded, FlipAveraged) and loaded.config() == model.config()
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert isinstance(load_model_from(net, tmp_path), Sequential)  # the wrapped model alone
    with pytest.raises(ValueError, match="tta must be one of flip"):
        model_from_config({**net.config(), "tta": "rotate"})
    with pytest.raises(ValueError, match="square images"):
        mirror(np.zeros((2, 12), np.float32))


def test_flip_shift_averages_ten_views_moved_one_pixel(rng, tmp_path):
    from fashionnet.checkpoint import load_model, save_checkpoint
    from fashionnet.losses import softmax
    from fashionnet.model import FlipAveraged, mirror
    from fashionnet.model.sequential import shifted

    square = np.arange(1, 10, dtype=np.float32).reshape(1, 9)  # 3x3: 1 2 3 / 4 5 6 / 7 8 9
    moved = {(dy, dx): shifted(square, dy, dx).reshape(3, 3) for dy, dx in
             ((-1, 0), (1, 0), (0, -1), (0, 1))}  # fmt: skip
    np.testing.assert_array_equal(moved[-1, 0], [[4, 5, 6], [7, 8, 9], [0, 0, 0]])  # up
    np.testing.assert_array_equal(moved[1, 0], [[0, 0, 0], [1, 2, 3], [4, 5, 6]])  # down
    np.testing.assert_array_equal(moved[0, -1], [[2, 3, 0], [5, 6, 0], [8, 9, 0]])  # left
    np.testing.assert_array_equal(moved[0, 1], [[0, 1, 2], [0, 4, 5], [0, 7, 8]])  # right
    with pytest.raises(ValueError, match="square images"):
        shifted(np.zeros((2, 12), np.float32), 1, 0)

    net = mlp(16, [8], 3, rng=rng)
    model = FlipAveraged(net, "flip-shift")
    x = rng.normal(size=(5, 16)).astype(np.float32)
    views = model.views(x)
    assert len(views) == 10 and views[0] is x
    np.testing.assert_array_equal(views[1], mirror(x))
    np.testing.assert_array_equal(views[3], shifted(mirror(x), -1, 0))  # the mirror moved up
    assert len({v.tobytes() for v in views}) == 10  # ten different views
    expected = sum(softmax(net.forward(v)) for v in views) / 10
    for batch_size in (1, 7, 10, 23, 2048):  # any split into batches: the same means
        np.testing.assert_allclose(model.predict_proba(x, batch_size=batch_size), expected,
                                   rtol=1e-5)  # fmt: skip
    assert not np.allclose(expected, FlipAveraged(net).predict_proba(x))  # more than the flip
    save_checkpoint(tmp_path / "m.npz", model)
    loaded = load_model(tmp_path / "m.npz")
    assert isinstance(loaded, FlipAveraged) and loaded.mode == "flip-shift"
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert "flip-shift" in repr(model) and "mode" not in repr(FlipAveraged(net))
    with pytest.raises(ValueError, match="tta must be one of flip, flip-shift"):
        FlipAveraged(net, "rotate")


def load_model_from(model, folder):
    from fashionnet.checkpoint import load_model, save_checkpoint

    save_checkpoint(folder / "plain.npz", model)
    return load_model(folder / "plain.npz")


def test_mult_adds_count_every_product_of_an_image(rng, tmp_path, capsys):
    """What `summary` reports as a model's cost: each convolution's weights once per output
    place, each dense layer's once, residual blocks' body and shortcut, nothing else."""
    from fashionnet.checkpoint import save_checkpoint
    from fashionnet.cli import main
    from fashionnet.model import FlipAveraged, cnn, resnet

    net = cnn(28, [[32], [64], [128]], [256], 10, rng=rng)
    convs = 1 * 32 * 9 * 28 * 28 + 32 * 64 * 9 * 14 * 14 + 64 * 128 * 9 * 7 * 7
    assert net.mult_adds(784) == convs + 128 * 3 * 3 * 256 + 256 * 10
    assert mlp(784, [16], 10, rng=rng).mult_adds(784) == 784 * 16 + 16 * 10
    res = resnet(28, [[8], [16]], [], 10, rng=rng)  # stem 28x28, blocks at 14x14 then 7x7
    stem, block1 = 1 * 8 * 9 * 28 * 28, 2 * 8 * 8 * 9 * 14 * 14
    block2 = 8 * 16 * 9 * 7 * 7 + 16 * 16 * 9 * 7 * 7 + 8 * 16 * 7 * 7  # stride 2, 1x1 shortcut
    assert res.mult_adds(784) == stem + block1 + block2 + 16 * 10
    save_checkpoint(tmp_path / "m.npz", FlipAveraged(net, "flip-shift"))
    assert main(["summary", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert f"Mult-adds per image (M): {net.mult_adds(784) / 1e6:.2f}" in out
    assert (f"Predictions average 10 views of each image (tta flip-shift): "
            f"{10 * net.mult_adds(784) / 1e6:.2f} M mult-adds an image") in out  # fmt: skip
