"""Shared fixtures and the finite-difference gradient check every layer goes through."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from fashionnet.data import SYSTEM_DATA_DIR
from fashionnet.layers import Layer

# CI replays the same examples every run (a failure there is then reproducible, not a flake);
# local runs draw new ones and so keep exploring.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder: nothing lands in ~/.cache, nothing leaks between."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def split_threads(request, monkeypatch):
    """Every layer splits its batch into this many parts (fashionnet/threads.py), down to one
    image a part and whatever the work, so the tiny batches of the gradient checks and PyTorch
    comparisons take the path a CNN step takes on two threads."""
    from fashionnet import threads

    monkeypatch.setattr(threads, "MIN_PART", 1)
    monkeypatch.setattr(threads, "MIN_WORK", 0)
    with threads.region(request.param):
        yield request.param


def real_data_dir() -> Path | None:
    return SYSTEM_DATA_DIR if (SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").is_file() else None


@pytest.fixture
def real_data() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip(
            "the real Fashion-MNIST files are not installed (apt-get install dataset-fashion-mnist)"
        )
    return path


def numerical_grad(f: Callable[[], float], a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every element of a (in place)."""
    grad = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        plus = f()
        a[idx] = old - eps
        minus = f()
        a[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def assert_layer_gradients(
    layer: Layer,
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    before_forward: Callable[[], None] = lambda: None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
) -> None:
    """Backward of L = sum(forward(x) * G), G a fixed random upstream gradient (not all-ones,
    which hides transpose bugs), matches central differences for x and every parameter."""
    before_forward()
    out = layer.forward(x, training=True)
    upstream = rng.normal(size=out.shape)

    def loss() -> float:
        before_forward()
        return float((layer.forward(x, training=True) * upstream).sum())

    before_forward()
    layer.forward(x, training=True)
    grad_x = layer.backward(upstream)
    analytic = {name: p.grad.copy() for name, p in layer.params().items()}
    np.testing.assert_allclose(grad_x, numerical_grad(loss, x), rtol=rtol, atol=atol)
    for name, p in layer.params().items():
        np.testing.assert_allclose(
            analytic[name], numerical_grad(loss, p.data), rtol=rtol, atol=atol, err_msg=name
        )


def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx_folder(folder, rng, n_train=30, n_test=10, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, array in files.items():
        raw = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return files


def fit_stopping_at(step):
    """fashionnet.runs.fit, except that the run stops (as after a Ctrl-C) once the optimizer has
    taken `step` steps: monkeypatch it in to get a resumable run folder, placed by an event."""
    from fashionnet import train

    def fit(model, optimizer, *args, **kwargs):
        def stop(state):
            if optimizer.steps == step:
                state.stop_requested = "SIGINT"

        kwargs["step_callbacks"] = [*kwargs.get("step_callbacks", []), stop]
        return train.fit(model, optimizer, *args, **kwargs)

    return fit


def learnable(rng, n):
    """(uint8 images (n, 28, 28), labels): noise with a bright band whose row gives the class,
    so a few epochs learn it (a run on pure noise ends near chance, and says so on stderr)."""
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c + 3 : 2 * c + 5] = 250
    return images, labels


def write_learnable(folder, n_train, n_test):
    """train.npz and test.npz of `learnable` images in `folder` (made if needed), seed 0: .npz,
    not IDX files under the official names, which would (rightly) warn of a checksum mismatch
    on every load and so add a line to every stderr a test checks."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        images, labels = learnable(rng, n)
        np.savez(folder / f"{name}.npz", x=images, y=labels)
    return folder
