"""threads.py: batches split into parts, one per thread, with the BLAS held at one thread; the
same thread count gives bit-identical training, a dense network is left to the BLAS."""

import itertools

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from fashionnet import threads
from fashionnet.layers import BatchNorm, Conv2D, Flatten, Layer, Linear, MaxPool2D, ReLU, Reshape
from fashionnet.losses import softmax_cross_entropy
from fashionnet.model import Sequential, mlp
from fashionnet.optim import Adam


def blas_threads() -> int:
    return min(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


@pytest.mark.parametrize(("n", "parts", "sizes"), [
    (128, 2, [64, 64]), (129, 2, [64, 65]), (13, 3, [4, 4, 5]), (10, 3, [5, 5]), (7, 2, [7]),
    (3, 4, [3]),
    (0, 2, [0]),
])  # fmt: skip
def test_split_gives_contiguous_parts_of_at_least_min_part(n, parts, sizes):
    slices = threads.split(n, parts)
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == n
    assert all(a.stop == b.start for a, b in itertools.pairwise(slices))


def test_count_follows_fashionnet_threads_else_the_blas(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.count() == blas_threads()
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.count() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(ValueError, match="FASHIONNET_THREADS must be a whole number"):
            threads.count()


def test_a_region_holds_the_blas_at_one_thread_and_gives_it_back(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    before = blas_threads()
    with threads.region(2):
        assert blas_threads() == 1
        assert threads.parts() == 2 and threads.count() == 2
        with threads.region(2):  # nested: still held, released by the outer one only
            assert blas_threads() == 1
        assert blas_threads() == 1
    assert blas_threads() == before and threads.parts() == 1


def test_each_runs_every_part_once_in_order_and_the_first_on_the_caller():
    import threading

    seen: list[tuple[slice, str]] = []

    def part(s: slice) -> int:
        seen.append((s, threading.current_thread().name))
        return s.stop - s.start

    with threads.region(3):
        sizes = threads.each(30, part)
    assert sizes == [10, 10, 10]
    assert sorted((s.start, s.stop) for s, _ in seen) == [(0, 10), (10, 20), (20, 30)]
    assert dict((s.start, name) for s, name in seen)[0] == threading.current_thread().name
    assert threads.each(30, part) == [30]  # outside a region: the whole batch at once


def test_calls_with_too_little_work_to_pay_for_a_hand_over_run_unsplit(monkeypatch):
    """A ReLU or a small Linear on 128 rows takes less than handing a part to a pool thread."""
    handed: list[int] = []
    executor = threads._executor

    def counted(workers: int):
        handed.append(workers)
        return executor(workers)

    monkeypatch.setattr(threads, "_executor", counted)
    rng = np.random.default_rng(0)
    with threads.region(2):
        assert len(threads.plan(128, threads.MIN_WORK - 1)) == 1
        assert len(threads.plan(128, threads.MIN_WORK)) == len(threads.plan(128)) == 2
        ReLU().forward(rng.random((128, 128), dtype=np.float32))
        Linear(128, 10, rng=rng).forward(rng.random((128, 128), dtype=np.float32))
        assert handed == []
        ReLU().forward(rng.random((128, 4096), dtype=np.float32))
        Linear(3136, 128, rng=rng).forward(rng.random((128, 3136), dtype=np.float32))
        assert handed == [1, 1]


def test_batches_of_fewer_parts_reuse_the_pool_instead_of_replacing_it():
    """A server's batches come in every size: 8 images split into 2 parts, 64 into 4. The pool
    grows to the most parts asked for and is kept; it used to be replaced at every change."""
    with threads.region(4):
        assert threads.each(64, lambda s: s.start) == [0, 16, 32, 48]
        pool = threads._executor(3)
        assert threads.each(8, lambda s: s.start) == [0, 4]
        assert threads.each(64, lambda s: s.start) == [0, 16, 32, 48]
        assert threads._executor(1) is pool and threads._executor(3) is pool


class _Probe(Layer):  # private: not registered, so the layer contract test skips it
    """Records how many parts a batch is split into while the model runs."""

    def forward(self, x, *, training=False):
        self.parts = threads.parts()
        return x

    def backward(self, grad_out, *, input_grad=True):
        return grad_out


def small_cnn(rng: np.random.Generator) -> Sequential:
    """Both im2col paths (one input channel, then 4), pooling, BatchNorm, ReLU, dense layers."""
    return Sequential([
        Reshape((1, 12, 12)),
        Conv2D(1, 4, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
        Conv2D(4, 8, 3, padding=1, bias=False, rng=rng), BatchNorm(8), ReLU(), MaxPool2D(2),
        Flatten(), Linear(72, 16, rng=rng), ReLU(), Linear(16, 3, rng=rng),
    ])  # fmt: skip


def train(parts: int, monkeypatch, steps: int = 6) -> np.ndarray:
    monkeypatch.setenv(threads.ENV, str(parts))
    rng = np.random.default_rng(5)
    model = small_cnn(rng)
    opt = Adam(model.parameters(), lr=1e-2)
    x = rng.random((64, 144), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    for _ in range(steps):
        _, g = softmax_cross_entropy(model.forward(x, training=True), y)
        model.backward(g)
        opt.step()
    assert model.flat is not None
    return model.flat.copy()


def test_the_same_thread_count_trains_bit_identical_weights(monkeypatch):
    two = train(2, monkeypatch)
    np.testing.assert_array_equal(two, train(2, monkeypatch))
    one = train(1, monkeypatch)
    np.testing.assert_array_equal(one, train(1, monkeypatch))
    # another count adds partial sums in another order: the last bits only
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-5)


def test_a_cnn_splits_its_batch_and_a_dense_network_leaves_it_to_the_blas(monkeypatch):
    monkeypatch.setenv(threads.ENV, "2")
    rng = np.random.default_rng(0)
    probe = _Probe()
    cnn = Sequential([*small_cnn(rng).layers[:-1], probe, Linear(16, 3, rng=rng)])
    cnn.forward(rng.random((16, 144), dtype=np.float32))
    assert probe.parts == 2
    dense = Sequential([*mlp(144, [16], 3, rng=rng).layers, probe])
    dense.forward(rng.random((16, 144), dtype=np.float32))
    assert probe.parts == 1


def test_a_stretch_runs_chunks_of_images_as_the_layers_run_one_by_one(monkeypatch):
    """Sequential runs per-image layers around a convolution a chunk of images at a time, part
    by part (model/stretch.py): here one image a chunk, over two threads, in float64."""
    from fashionnet.model import stretch

    monkeypatch.setattr(stretch, "CHUNK_BYTES", 1)  # one image a chunk
    monkeypatch.setattr(threads, "MIN_PART", 1)
    rng = np.random.default_rng(3)
    model = Sequential([
        Reshape((1, 6, 6)), Conv2D(1, 3, 3, padding=1, rng=rng, dtype=np.float64), ReLU(),
        MaxPool2D(2), Conv2D(3, 4, 3, padding=1, rng=rng, dtype=np.float64),
        BatchNorm(4, dtype=np.float64), ReLU(), Flatten(), Linear(36, 3, rng=rng, dtype=np.float64),
    ])  # fmt: skip
    assert stretch.stretches(model.layers) == [(0, 5)]  # ReLU, Flatten: no convolution
    x, g = rng.random((5, 36)), rng.normal(size=(5, 3))
    h = x
    for layer in model.layers:
        h = layer.forward(h, training=True)
    expected, back = h, g
    for i in range(len(model.layers) - 1, 0, -1):
        back = model.layers[i].backward(back, input_grad=i > 1)
    grads = [p.grad.copy() for p in model.parameters()]
    with threads.region(2):
        np.testing.assert_allclose(model.forward(x, training=True), expected, rtol=1e-12)
        model.backward(g)
    for p, grad in zip(model.parameters(), grads, strict=True):
        np.testing.assert_allclose(p.grad, grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pool", [{}, {"stride": 2, "padding": 1}, {"stride": 1, "padding": 1}])
def test_a_stretch_runs_a_relu_after_the_max_pool_it_feeds_with_equal_results(monkeypatch, pool):
    """ReLU then max-pool runs as max-pool then ReLU (a quarter of the values for 2x2 pooling):
    outputs, weight and input gradients exactly as layer by layer, on integer values full of
    ties and of windows with nothing positive, where the two orders could send a gradient
    elsewhere; also for padded and overlapping 3x3 windows."""
    from fashionnet.model import stretch

    monkeypatch.setattr(stretch, "CHUNK_BYTES", 1)
    monkeypatch.setattr(threads, "MIN_PART", 1)
    rng = np.random.default_rng(5)
    size = 2 if not pool else 3
    layers: list[Layer] = [
        Conv2D(2, 3, 3, padding=1, rng=rng, dtype=np.float64), ReLU(), MaxPool2D(size, **pool),
        Conv2D(3, 2, 3, padding=1, rng=rng, dtype=np.float64), ReLU(), MaxPool2D(size, **pool),
    ]  # fmt: skip
    for p in (p for layer in layers for p in layer.params().values()):
        p.data[...] = rng.integers(-2, 3, p.data.shape)  # small integers: sums exact, many ties
    order = [type(layer).__name__ for layer in stretch.run_order(layers)]
    assert order == ["Conv2D", "MaxPool2D", "ReLU"] * 2
    x = rng.integers(-2, 3, (6, 2, 8, 8)).astype(np.float64)

    h, inputs = x, []
    for layer in layers:
        inputs.append(h)
        h = layer.forward(h, training=True)
    g = rng.integers(-3, 4, h.shape).astype(np.float64)
    expected, back = h, g
    for layer in reversed(layers):
        back = layer.backward(back)
    params = [p for layer in layers for p in layer.params().values()]
    grads = [p.grad.copy() for p in params]
    top = MaxPool2D(size, **pool).forward(inputs[1])  # of what the first ReLU was given
    assert (top <= 0).sum() > 10  # windows with nothing positive
    if not pool:  # 2x2 windows of 4 values
        n, c, hh, ww = inputs[1].shape
        windows = inputs[1].reshape(n, c, hh // 2, 2, ww // 2, 2).transpose(0, 1, 2, 4, 3, 5)
        windows = windows.reshape(n, c, hh // 2, ww // 2, 4)
        assert (((windows == top[..., None]).sum(axis=-1) > 1) & (top > 0)).sum() > 10  # ties

    run = stretch.Stretch(layers)
    with threads.region(2):
        np.testing.assert_array_equal(run.forward(x, training=True), expected)
        np.testing.assert_array_equal(run.backward(g, first=-1), back)
    for p, grad in zip(params, grads, strict=True):
        np.testing.assert_array_equal(p.grad, grad)


def test_a_forked_child_gets_a_pool_of_its_own():
    """The parent's pool threads do not exist in a child made by fork (multiprocessing's
    default on Linux): the child's first split starts new ones rather than waiting forever."""
    import multiprocessing

    with threads.region(2):
        assert threads.each(8, lambda s: s.start) == [0, 4]  # the parent's pool is running
    pool = multiprocessing.get_context("fork").Pool(1)
    try:
        assert pool.apply_async(_split_in_a_region).get(timeout=60) == [0, 4]
    except BaseException:
        pool.terminate()  # a child stuck in the split: SIGTERM it
        raise
    pool.close()  # the worker ends on the pool's own sentinel, not on a signal
    pool.join()


def _split_in_a_region() -> list[int]:
    with threads.region(2):
        return threads.each(8, lambda s: s.start)


@pytest.mark.parametrize("value", ["two", "0", "-3", "1.5"])
def test_a_malformed_fashionnet_threads_is_one_line_before_anything_runs(
    value, monkeypatch, tmp_path, capsys
):
    from fashionnet.cli import main

    monkeypatch.setenv(threads.ENV, value)
    out = tmp_path / "run"
    assert main(["train", "--arch", "cnn", "--stages", "4", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"fashionnet: error: FASHIONNET_THREADS must be a whole number >= 1, got {value!r}"
    ]
    assert not out.exists()
