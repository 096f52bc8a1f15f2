import math

import numpy as np
import pytest

from fashionnet.layers import Linear, Parameter
from fashionnet.optim import SGD, Adam, AdamW, flatten_parameters, make_optimizer


def make_params(rng, dtype=np.float64):
    """Three parameters in one flat buffer, laid out as a Sequential lays them: decayed first."""
    w = Parameter(rng.normal(size=(3, 4)).astype(dtype))
    b = Parameter(rng.normal(size=(4,)).astype(dtype), decay=False)
    w2 = Parameter(rng.normal(size=(4, 2)).astype(dtype))
    flatten_parameters([w, w2, b])
    return [w, b, w2]


def set_grads(params, rng):
    for p in params:
        p.grad[...] = rng.normal(size=p.data.shape)


def test_an_optimiser_works_on_the_flat_buffer_as_it_is(rng):
    params = make_params(rng)
    arrays = [(p.data, p.grad) for p in params]
    opt = SGD(params, lr=0.1)
    assert opt.data.size == 12 + 4 + 8
    for p, (data, grad) in zip(params, arrays, strict=True):
        assert p.data is data and p.grad is grad  # never moved
        assert p.data.base is opt.data and p.grad.base is opt.grad
    # decayed parameters first, so weight decay is one slice
    assert opt.n_decay == 20
    assert opt.params[-1] is params[1]


def test_loose_parameters_and_decay_after_the_layout_are_refused(rng):
    loose = [Parameter(rng.normal(size=(3, 4))), Parameter(rng.normal(size=4), decay=False)]
    with pytest.raises(ValueError, match="views of one flat buffer"):
        SGD(loose, lr=0.1)
    flatten_parameters(loose[::-1])  # the bias first: decay would be no single slice
    with pytest.raises(ValueError, match="weight decay must come first"):
        SGD(loose, lr=0.1)


def test_a_second_optimiser_reuses_the_flat_buffer(rng):
    params = make_params(rng)
    first = SGD(params, lr=0.1)
    second = Adam(params, lr=0.1)
    assert second.data is first.data


def test_flatten_keeps_values_and_rejects_empty(rng):
    params = make_params(rng)
    data, grad = flatten_parameters(params)
    assert data.shape == grad.shape == (24,)
    with pytest.raises(ValueError, match="at least one parameter"):
        flatten_parameters([])


def reference_sgd(ws, gs, vs, step, lr, momentum, nesterov, wd, decays):
    for w, g, v, d in zip(ws, gs, vs, decays, strict=True):
        g = g + wd * w if d else g.copy()
        if momentum:
            v[...] = g if step == 0 else momentum * v + g
            g = g + momentum * v if nesterov else v
        w -= lr * g


@pytest.mark.parametrize(
    ("momentum", "nesterov", "wd"), [(0.0, False, 0.0), (0.9, False, 0.01), (0.9, True, 0.1)]
)
def test_sgd_matches_its_formula(momentum, nesterov, wd, rng):
    params = make_params(rng)
    ref = [p.data.copy() for p in params]
    vel = [np.zeros_like(w) for w in ref]
    opt = SGD(params, lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    for step in range(5):
        set_grads(params, rng)
        reference_sgd(
            ref,
            [p.grad for p in params],
            vel,
            step,
            0.05,
            momentum,
            nesterov,
            wd,
            [p.decay for p in params],
        )
        opt.step()
    for p, w in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.data, w, rtol=1e-12)


@pytest.mark.parametrize(("cls", "wd"), [(Adam, 0.0), (Adam, 0.01), (AdamW, 0.1)])
def test_adam_matches_its_formula(cls, wd, rng):
    params = make_params(rng)
    ref = [p.data.copy() for p in params]
    m = [np.zeros_like(w) for w in ref]
    v = [np.zeros_like(w) for w in ref]
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    opt = cls(params, lr=lr, weight_decay=wd)
    for t in range(1, 6):
        set_grads(params, rng)
        for i, p in enumerate(params):
            g = p.grad.copy()
            if p.decay and cls is Adam:
                g += wd * ref[i]
            if p.decay and cls is AdamW:
                ref[i] *= 1 - lr * wd
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            ref[i] -= lr * m_hat / (np.sqrt(v_hat) + eps)
        opt.step()
    for p, w in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.data, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("sgd", {"lr": 0.1, "momentum": 0.9}), ("adam", {"lr": 1e-3}), ("adamw", {"lr": 3e-3})],
)
def test_moments_of_gradients_that_stopped_lose_their_subnormals(name, kwargs, monkeypatch):
    """Units that die stop getting gradients: their moments decay by beta each step into
    float32's subnormal range, where they stay, and every pass over them runs many times slower.
    They are flushed to 0 every FLUSH_EVERY steps, which moves no weight by a bit."""
    from fashionnet import optim

    def train(flush_every: int) -> tuple[np.ndarray, list[np.ndarray]]:
        monkeypatch.setattr(optim, "FLUSH_EVERY", flush_every)
        params = make_params(np.random.default_rng(0), np.float32)
        opt = make_optimizer(name, params, **kwargs)
        grads = np.random.default_rng(1)
        for step in range(1300):  # gradients for 20 steps, then none, then some again
            stopped = 20 <= step < 1280
            for p in params:
                p.grad[...] = 0 if stopped else grads.normal(size=p.data.shape)
            opt.step()
            if step == 1279:
                states = [a.copy() for a in opt.state_arrays().values()]
        return opt.data.copy(), states

    tiny, every = np.finfo(np.float32).tiny, optim.FLUSH_EVERY
    unflushed_weights, unflushed = train(1 << 30)
    assert any(((a != 0) & (np.abs(a) < tiny)).any() for a in unflushed)  # what happens
    weights, states = train(every)
    assert not any(((a != 0) & (np.abs(a) < tiny)).any() for a in states)
    assert np.array_equal(weights, unflushed_weights)


def test_weight_decay_never_touches_biases(rng):
    params = make_params(rng)
    weight_before, bias_before = params[0].data.copy(), params[1].data.copy()
    opt = SGD(params, lr=0.1, weight_decay=0.5)
    for p in params:
        p.grad[...] = 0
    opt.step()
    np.testing.assert_array_equal(params[1].data, bias_before)
    # the L2 gradient is wd * W (not a scalar): w <- w - lr * wd * w
    np.testing.assert_allclose(params[0].data, weight_before * (1 - 0.1 * 0.5))


def test_first_adam_step_moves_each_weight_by_lr(rng):
    # with bias correction, step 1 is lr * g / (|g| + eps): every weight moves by ~lr
    params = make_params(rng)
    before = [p.data.copy() for p in params]
    set_grads(params, rng)
    Adam(params, lr=0.001).step()
    for p, old in zip(params, before, strict=True):
        np.testing.assert_allclose(np.abs(p.data - old), 0.001, rtol=1e-5)


def test_float32_stays_float32(rng):
    params = make_params(rng, np.float32)
    opt = Adam(params, lr=1e-3, weight_decay=1e-4)
    set_grads(params, rng)
    opt.step()
    assert opt.data.dtype == opt.m.dtype == opt.v.dtype == np.float32


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_state_dict_round_trip_continues_identically(name, rng):
    kwargs = {"momentum": 0.9} if name == "sgd" else {}
    a_params, b_params = (
        make_params(np.random.default_rng(1)),
        make_params(np.random.default_rng(1)),
    )
    a = make_optimizer(name, a_params, lr=0.01, **kwargs)
    grads = [np.random.default_rng(s).normal(size=a.grad.size) for s in range(6)]
    for g in grads[:3]:
        a.grad[...] = g
        a.step()
    state = a.state_dict()
    b = make_optimizer(name, b_params, lr=0.5, **kwargs)
    b.data[...] = a.data
    b.load_state_dict(state)
    assert b.lr == 0.01 and b.steps == 3
    for g in grads[3:]:
        a.grad[...] = g
        b.grad[...] = g
        a.step()
        b.step()
    np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_refuses_another_optimiser(rng):
    state = SGD(make_params(rng), lr=0.1).state_dict()
    with pytest.raises(ValueError, match="SGD"):
        Adam(make_params(rng), lr=0.1).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr must be positive"),
        ({"lr": 0.1, "weight_decay": -1.0}, "weight_decay"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum"),
        ({"lr": 0.1, "nesterov": True}, "Nesterov"),
    ],
)
def test_bad_sgd_hyperparameters_are_named(kwargs, message, rng):
    with pytest.raises(ValueError, match=message):
        SGD(make_params(rng), **kwargs)


def test_unknown_optimizer_is_named(rng):
    with pytest.raises(ValueError, match="'rmsprop'"):
        make_optimizer("rmsprop", make_params(rng), lr=0.1)


def test_layer_keeps_working_after_flattening(rng):
    layer = Linear(4, 5, rng=rng, dtype=np.float64)
    flatten_parameters(list(layer.params().values()))
    opt = SGD(list(layer.params().values()), lr=1.0)
    x = rng.normal(size=(3, 4))
    layer.forward(x, training=True)
    layer.backward(np.ones((3, 5)))
    expected = layer.weight.data - x.T @ np.ones((3, 5))
    opt.step()
    np.testing.assert_allclose(layer.weight.data, expected)
    assert math.isclose(float(opt.data[0]), float(layer.weight.data[0, 0]))
