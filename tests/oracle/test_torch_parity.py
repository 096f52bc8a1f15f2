"""A second opinion from PyTorch: same weights, same upstream gradient, same answers.

The only place torch is imported. `pip install torch==2.13.0` installs a CPU build.
"""

import numpy as np
import pytest

from fashionnet.layers import Dropout, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from fashionnet.losses import softmax_cross_entropy
from fashionnet.model import mlp
from fashionnet.optim import SGD, Adam, AdamW

torch = pytest.importorskip("torch")

# each check on one thread and with every batch split over two (fashionnet/threads.py)
pytestmark = pytest.mark.usefixtures("split_threads")


def t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)


def test_linear_matches_torch(rng):
    layer = Linear(4, 5, rng=rng, dtype=np.float64)
    x, g = rng.normal(size=(3, 4)), rng.normal(size=(3, 5))
    ref = torch.nn.Linear(4, 5, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.weight.data.T))  # torch stores (out, in)
        ref.bias.copy_(torch.tensor(layer.bias.data))
    tx = t(x)
    out = ref(tx)
    out.backward(torch.tensor(g))
    np.testing.assert_allclose(layer.forward(x, training=True), out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy().T, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, ref.bias.grad.numpy(), rtol=1e-12)


ACTIVATIONS = {
    "relu": (ReLU(), torch.nn.ReLU()),
    "leaky_relu": (LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    "tanh": (Tanh(), torch.nn.Tanh()),
    "sigmoid": (Sigmoid(), torch.nn.Sigmoid()),
}


@pytest.mark.parametrize("pair", ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
def test_activations_match_torch(pair, rng):
    ours, ref = pair
    x, g = rng.normal(size=(3, 7)) * 3, rng.normal(size=(3, 7))
    tx = t(x)
    out = ref(tx)
    out.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.forward(x, training=True), out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.backward(g), tx.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_dropout_in_evaluation_is_identity_like_torch(rng):
    x = rng.normal(size=(3, 7))
    ref = torch.nn.Dropout(0.5).eval()
    np.testing.assert_array_equal(Dropout(0.5).forward(x), ref(torch.tensor(x)).numpy())


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch(smoothing, rng):
    logits, labels = rng.normal(size=(6, 10)) * 4, rng.integers(0, 10, 6)
    tl = t(logits)
    ref = torch.nn.functional.cross_entropy(tl, torch.tensor(labels), label_smoothing=smoothing)
    ref.backward()
    loss, grad = softmax_cross_entropy(logits, labels, label_smoothing=smoothing)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, tl.grad.numpy(), rtol=1e-10, atol=1e-15)


def run_both(make_ours, make_ref, rng, steps=10):
    """Train the same 6-8-3 net with ours and torch's optimiser for `steps`; return both weights."""
    model = mlp(6, [8], 3, rng=rng, dtype=np.float64)
    ref = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    ).double()
    with torch.no_grad():
        for i in (0, 2):
            ref[i].weight.copy_(torch.tensor(model.layers[i].weight.data.T))
            ref[i].bias.copy_(torch.tensor(model.layers[i].bias.data))
    opt, ref_opt = make_ours(model.parameters()), make_ref(ref.parameters())
    for _ in range(steps):
        x, y = rng.normal(size=(5, 6)), rng.integers(0, 3, 5)
        _, g = softmax_cross_entropy(model.forward(x, training=True), y)
        model.backward(g)
        opt.step()
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(torch.tensor(x)), torch.tensor(y)).backward()
        ref_opt.step()
    for i in (0, 2):
        np.testing.assert_allclose(
            model.layers[i].weight.data, ref[i].weight.detach().numpy().T, rtol=1e-9, atol=1e-12
        )
        np.testing.assert_allclose(
            model.layers[i].bias.data, ref[i].bias.detach().numpy(), rtol=1e-9, atol=1e-12
        )


# torch applies weight decay to biases too; give ours the same by marking biases decayed
def decay_all(params):
    for p in params:
        p.decay = True
    return params


OPTIMIZERS = {
    "sgd": (lambda p: SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum_wd": (
        lambda p: SGD(decay_all(p), lr=0.1, momentum=0.9, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    ),
    "sgd_nesterov": (
        lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    ),
    "adam": (lambda p: Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    "adam_wd": (
        lambda p: Adam(decay_all(p), lr=0.01, weight_decay=0.01),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
    ),
    "adamw": (
        lambda p: AdamW(decay_all(p), lr=0.01, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("pair", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_optimisers_match_torch_over_10_steps(pair, rng):
    run_both(*pair, rng)


@pytest.mark.parametrize("shape", [(6, 4), (5, 4, 3, 3)], ids=["BatchNorm1d", "BatchNorm2d"])
def test_batchnorm_matches_torch_including_running_statistics(shape, rng):
    from fashionnet.layers import BatchNorm

    ours = BatchNorm(4, momentum=0.1, dtype=np.float64)
    ours.weight.data[...] = rng.normal(size=4)
    ours.bias.data[...] = rng.normal(size=4)
    ref = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(4).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(ours.weight.data))
        ref.bias.copy_(torch.tensor(ours.bias.data))
    for _ in range(3):  # running statistics over several batches
        x, g = rng.normal(size=shape) * 3 + 1, rng.normal(size=shape)
        tx = t(x)
        ref.zero_grad()
        out = ref.train()(tx)
        out.backward(torch.tensor(g))
        np.testing.assert_allclose(ours.forward(x, training=True), out.detach().numpy(), rtol=1e-10)
        np.testing.assert_allclose(ours.backward(g), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours.weight.grad, ref.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(ours.bias.grad, ref.bias.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.running_mean, ref.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), rtol=1e-12)
    x = rng.normal(size=shape)
    np.testing.assert_allclose(ours.forward(x), ref.eval()(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10)  # fmt: skip


@pytest.mark.parametrize(("stride", "padding", "bias"), [(1, 0, True), (2, 1, True), (1, 2, False)])
def test_conv2d_matches_torch(stride, padding, bias, rng):
    from fashionnet.layers import Conv2D

    ours = Conv2D(3, 4, 3, stride=stride, padding=padding, bias=bias, rng=rng, dtype=np.float64)
    ref = torch.nn.Conv2d(3, 4, 3, stride=stride, padding=padding, bias=bias).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(ours.weight.data))  # same (out, in, k, k) layout
        if bias:
            ours.bias.data[...] = rng.normal(size=4)
            ref.bias.copy_(torch.tensor(ours.bias.data))
    x = rng.normal(size=(2, 3, 9, 8))
    tx = t(x)
    out = ref(tx)
    g = rng.normal(size=tuple(out.shape))
    out.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.forward(x, training=True), out.detach().numpy(), rtol=1e-10,
                               atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(ours.backward(g), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, ref.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(ours.bias.grad, ref.bias.grad.numpy(), rtol=1e-10)


POOLS = {
    "max2": ("MaxPool2D", dict(kernel_size=2), lambda: torch.nn.MaxPool2d(2)),
    "max3s2p1": ("MaxPool2D", dict(kernel_size=3, stride=2, padding=1),
                 lambda: torch.nn.MaxPool2d(3, stride=2, padding=1)),
    "avg2": ("AvgPool2D", dict(kernel_size=2), lambda: torch.nn.AvgPool2d(2)),
    "avg3s1p1": ("AvgPool2D", dict(kernel_size=3, stride=1, padding=1),
                 lambda: torch.nn.AvgPool2d(3, stride=1, padding=1)),
}  # fmt: skip


@pytest.mark.parametrize("spec", POOLS.values(), ids=POOLS.keys())
def test_pooling_matches_torch(spec, rng):
    import fashionnet.layers as fl

    name, kwargs, make_ref = spec
    ours = getattr(fl, name)(**kwargs)
    x = rng.permutation(2 * 3 * 8 * 8).reshape(2, 3, 8, 8) * 0.1  # no ties
    tx = t(x)
    out = make_ref()(tx)
    g = rng.normal(size=tuple(out.shape))
    out.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.forward(x, training=True), out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.backward(g), tx.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("size", [8, 7], ids=["even", "odd"])
@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)])
def test_max_pooling_breaks_ties_like_torch(kwargs, size, rng):
    """Windows full of equal values (as after a ReLU): the first maximum gets the gradient."""
    from fashionnet.layers import MaxPool2D
    from fashionnet.layers.conv import as_nchw

    # channels-last memory, as the layers hand it on, with values in {0, 1, 2}
    x = as_nchw(rng.integers(0, 3, size=(2, size, size, 3)).astype(np.float64))
    tx = t(np.ascontiguousarray(x))
    out = torch.nn.MaxPool2d(**kwargs)(tx)
    g = rng.normal(size=tuple(out.shape))
    out.backward(torch.tensor(g))
    ours = MaxPool2D(**kwargs)
    np.testing.assert_array_equal(ours.forward(x, training=True), out.detach().numpy())
    grad = ours.backward(g)
    np.testing.assert_array_equal(grad != 0, tx.grad.numpy() != 0)  # the same pixels won
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-12)  # overlaps add in any order


@pytest.mark.parametrize("stride", [1, 2], ids=["identity", "projection"])
def test_residual_block_matches_torch(stride, rng):
    """ResNet's basic block in training mode: output, input and parameter gradients, statistics."""
    from fashionnet.layers import Residual

    ours = Residual.basic(3, 3 * stride, stride=stride, rng=rng, dtype=np.float64)
    nn = torch.nn

    def twin(layers):
        out = []
        for layer in layers:
            kind = type(layer).__name__
            if kind == "Conv2D":
                conv = nn.Conv2d(
                    layer.in_channels,
                    layer.out_channels,
                    layer.kernel_size,
                    stride=layer.stride,
                    padding=layer.padding,
                    bias=False,
                ).double()
                with torch.no_grad():
                    conv.weight.copy_(torch.tensor(layer.weight.data))
                out.append(conv)
            elif kind == "BatchNorm":
                out.append(nn.BatchNorm2d(layer.num_features).double())
            else:
                out.append(nn.ReLU())
        return nn.Sequential(*out)

    body, shortcut = twin(ours.body), twin(ours.shortcut or [])
    x = rng.normal(size=(4, 3, 6, 6))
    tx = t(x)
    out = body(tx) + shortcut(tx)
    g = rng.normal(size=tuple(out.shape))
    out.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.forward(x, training=True), out.detach().numpy(), rtol=1e-9,
                               atol=1e-10)  # fmt: skip
    np.testing.assert_allclose(ours.backward(g), tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    refs = dict(body.named_parameters()) | {f"s{k}": v for k, v in shortcut.named_parameters()}
    for name, p in ours.params().items():
        part, i, what = name.split(".")
        key = f"{i}.{what}" if part == "body" else f"s{i}.{what}"
        np.testing.assert_allclose(p.grad, refs[key].grad.numpy(), rtol=1e-8, atol=1e-10,
                                   err_msg=name)  # fmt: skip
    for name, b in ours.buffers().items():
        part, i, what = name.split(".")
        module = (body if part == "body" else shortcut)[int(i)]
        np.testing.assert_allclose(b, getattr(module, what).numpy(), rtol=1e-10, err_msg=name)
