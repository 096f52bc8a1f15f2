"""ONNX export, checked by the other side: onnx's full checker and onnxruntime's answers."""

import json

import numpy as np
import pytest

from fashionnet.checkpoint import save_checkpoint
from fashionnet.cli import main
from fashionnet.data import CLASS_NAMES, load_fashion_mnist
from fashionnet.layers import (
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    Linear,
    MaxPool2D,
    ReLU,
    Reshape,
    Residual,
    Sigmoid,
    Tanh,
)
from fashionnet.model import FlipAveraged, Sequential, mlp

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def with_statistics(model: Sequential, rng) -> Sequential:
    """Give BatchNorm layers non-trivial running statistics, as after training."""
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            layer.running_mean[...] = rng.normal(size=layer.num_features) * 0.1
            layer.running_var[...] = rng.uniform(0.5, 2.0, size=layer.num_features)
            layer.weight.data[...] = rng.uniform(0.5, 1.5, size=layer.num_features)
    return model


def make_mlp(rng):
    return with_statistics(mlp(784, [64, 32], 10, rng=rng, batch_norm=True, dropout=0.2), rng)


def make_cnn(rng):
    return with_statistics(Sequential([
        Reshape((1, 28, 28)),
        Conv2D(1, 8, 3, padding=1, rng=rng), BatchNorm(8), ReLU(), MaxPool2D(2),
        Residual.basic(8, 8, rng=rng), ReLU(), Residual.basic(8, 12, stride=2, rng=rng),
        LeakyReLU(0.1), AvgPool2D(3, stride=1, padding=1),
        Dropout(0.3, rng=rng), Conv2D(12, 16, 3, rng=rng), Tanh(), GlobalAvgPool2D(),
        Linear(16, 32, rng=rng), Sigmoid(), Flatten(), Linear(32, 10, rng=rng),
    ]), rng)  # fmt: skip


def run_both(model, tmp_path, pixels):
    path = tmp_path / "m.npz"
    meta = {"image_shape": [28, 28], "input_scale": 1 / 255, "class_names": list(CLASS_NAMES)}
    save_checkpoint(path, model, metadata=meta)
    assert main(["export", str(path), "--format", "onnx", str(tmp_path / "m.onnx")]) == 0
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17
    props = {p.key: json.loads(p.value) if p.key in ("class_names", "image_shape") else p.value
             for p in proto.metadata_props}  # fmt: skip
    assert props["input_range"] == "0..255" and props["image_shape"] == [28, 28]
    assert props["class_names"] == list(CLASS_NAMES)  # the facts a runtime's user needs
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    theirs = session.run(["probabilities"], {"pixels": pixels.astype(np.float32)})[0]
    ours = model.predict_proba((pixels / 255).astype(np.float32))
    return ours, theirs


def make_flip_averaging_cnn(rng):
    return FlipAveraged(make_cnn(rng))


def make_flip_shift_cnn(rng):
    return FlipAveraged(make_cnn(rng), "flip-shift")


@pytest.mark.parametrize(
    "make",
    [make_mlp, make_cnn, make_flip_averaging_cnn, make_flip_shift_cnn],
    ids=["mlp", "cnn", "cnn-flip-averaging", "cnn-flip-shift"],
)
def test_onnxruntime_agrees_on_random_images(make, tmp_path, rng):
    pixels = rng.integers(0, 256, (64, 784)).astype(np.float32)
    ours, theirs = run_both(make(rng), tmp_path, pixels)
    np.testing.assert_array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_tta_exports_a_graph_through_other_views(tmp_path, rng, capsys):
    net = make_cnn(rng)
    save_checkpoint(tmp_path / "m.npz", FlipAveraged(net, "flip-shift"))
    pixels = rng.integers(0, 256, (16, 784)).astype(np.float32)
    for tta, model in (("none", net), ("flip", FlipAveraged(net))):
        out = tmp_path / f"{tta}.onnx"
        assert main(["export", str(tmp_path / "m.npz"), "--format", "onnx", str(out),
                     "--tta", tta]) == 0  # fmt: skip
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        theirs = session.run(["probabilities"], {"pixels": pixels})[0]
        np.testing.assert_allclose(theirs, model.predict_proba(pixels / 255), atol=1e-5)
    capsys.readouterr()
    assert main(["export", str(tmp_path / "m.npz"), "--format", "safetensors",
                 str(tmp_path / "m.safetensors"), "--tta", "flip"]) == 2  # fmt: skip
    assert "--tta: safetensors holds the weights alone" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
    # 32x24 images have no mirror view the graph could take: one line, no file
    save_checkpoint(tmp_path / "wide.npz", mlp(32 * 24, [8], 10, rng=rng),
                    metadata={"image_shape": [32, 24]})  # fmt: skip
    assert main(["export", str(tmp_path / "wide.npz"), "--format", "onnx",
                 str(tmp_path / "wide.onnx"), "--tta", "flip"]) == 2  # fmt: skip
    assert capsys.readouterr().err.endswith("needs square images; the model's are 32x24\n")
    assert not (tmp_path / "wide.onnx").exists()
    from fashionnet.export import to_onnx  # the same refusal in Python

    with pytest.raises(ValueError, match="needs square images; got 768 pixels per image"):
        to_onnx(FlipAveraged(mlp(32 * 24, [8], 10, rng=rng)), n_features=768)


@pytest.mark.realdata
@pytest.mark.parametrize("make", [make_mlp, make_cnn], ids=["mlp", "cnn"])
def test_onnxruntime_agrees_on_the_10000_test_images(make, tmp_path, rng, real_data):
    pixels = load_fashion_mnist(real_data).test.images.reshape(10000, 784).astype(np.float32)
    ours, theirs = run_both(make(rng), tmp_path, pixels)
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).sum() == 10000
    assert np.abs(theirs - ours).max() <= 1e-5
