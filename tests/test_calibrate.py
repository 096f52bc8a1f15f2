"""Temperature scaling (fashionnet.calibrate) and what a run records of it."""

import json

import numpy as np
import pytest

from conftest import write_learnable
from fashionnet.calibrate import (
    MIN_IMAGES,
    calibrate,
    cross_entropy,
    fit_temperature,
    view_logits,
)
from fashionnet.checkpoint import read_checkpoint
from fashionnet.config import RunConfig, preset
from fashionnet.losses import softmax
from fashionnet.metrics import expected_calibration_error
from fashionnet.model import FlipAveraged, mlp
from fashionnet.runs import Run


def _labels_drawn_from(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row, drawn from softmax(logits): these logits are calibrated by design."""
    p = softmax(logits)
    drawn = (rng.random((len(p), 1)) > p.cumsum(axis=1)).sum(axis=1)
    return np.minimum(drawn, p.shape[1] - 1)  # a cumulative sum that rounds below 1


@pytest.mark.parametrize("scale", [0.4, 1.0, 3.0])
def test_the_fitted_temperature_undoes_a_known_scaling(scale, rng):
    # logits `scale` times the calibrated ones: over-confident for 3, under-confident for 0.4
    # (as label smoothing leaves a model); the fit finds T = scale
    true = rng.normal(0, 2.5, (20_000, 10))
    labels = _labels_drawn_from(true, rng)
    t = fit_temperature([true * scale], labels)
    assert t == pytest.approx(scale, rel=0.05)
    ours = cross_entropy([true * scale], labels, t)
    for other in (t * 0.8, t * 1.25):
        assert ours < cross_entropy([true * scale], labels, other)


def _model_and_images(rng: np.random.Generator, n: int):
    model = mlp(784, [32], 10, rng=rng)
    x = rng.random((n, 784), dtype=np.float32)
    for layer in model.layers:  # a confident, mostly wrong model: plenty to calibrate
        for p in layer.params().values():
            p.data *= 4
    labels = model.predict(x)
    wrong = rng.random(n) < 0.4
    labels[wrong] = rng.integers(0, 10, wrong.sum())
    return model, x, labels


@pytest.mark.parametrize("wrap", [None, "flip", "flip-shift"])
def test_calibrate_folds_the_temperature_into_the_last_layer(wrap, rng):
    model, x, labels = _model_and_images(rng, 2000)
    model = FlipAveraged(model, wrap) if wrap else model
    before = model.predict_proba(x)
    views = view_logits(model, x)
    record = calibrate(model, x, labels)
    assert record is not None and record["images"] == 2000
    t = record["temperature"]
    assert t > 1.5  # over-confident: the logits are spread
    after = model.predict_proba(x)
    # the model file now answers what the fit computed, from its own weights
    assert len(views) == {None: 1, "flip": 2, "flip-shift": 10}[wrap]
    expected = sum(softmax(v / t) for v in views) / len(views)
    np.testing.assert_allclose(after, expected, atol=1e-5)
    if not wrap:  # one view: every image's ranking of the classes is kept
        np.testing.assert_array_equal(np.argsort(after, axis=1), np.argsort(before, axis=1))
    assert record["val_loss_after"] < record["val_loss_before"]
    assert record["val_ece_after"] < record["val_ece_before"]
    assert record["val_ece_after"] == pytest.approx(expected_calibration_error(labels, after),
                                                    abs=1e-3)  # fmt: skip


def test_too_few_images_leave_the_model_as_it_was(rng):
    model, x, labels = _model_and_images(rng, MIN_IMAGES - 1)
    weights = {k: v.copy() for k, v in model.state_dict().items()}
    assert calibrate(model, x, labels) is None
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, weights[k])


def test_a_run_calibrates_and_records_it(tmp_path):
    data = write_learnable(tmp_path / "data", 1200, 300)
    config = preset("mlp", data=str(data), hidden=(32,), epochs=2, val_size=400)
    assert config.calibrate  # every preset does
    result = Run(config, tmp_path / "run").train(progress=False)
    record = result.metadata["calibration"]
    assert record["images"] == 400 and record["temperature"] > 0
    assert record["val_loss_after"] <= record["val_loss_before"]
    saved, _ = read_checkpoint(tmp_path / "run" / "model.npz")
    assert saved["calibration"] == pytest.approx(record)
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text()
    assert f"calibrated on the 400 validation images: the logits divided by a temperature of " \
           f"{record['temperature']:.3f}" in card  # fmt: skip


def test_a_run_without_calibration_or_with_too_few_images_says_so(tmp_path):
    data = write_learnable(tmp_path / "data", 600, 100)
    small = Run(preset("mlp", data=str(data), hidden=(16,), epochs=1, val_size=50),
                tmp_path / "small").train(progress=False)  # fmt: skip
    assert small.metadata["calibration"] is None
    assert "Probabilities as trained: 50 validation images, fewer than the 200" in (
        tmp_path / "small" / "MODEL_CARD.md").read_text()  # fmt: skip
    off = Run(preset("mlp", data=str(data), hidden=(16,), epochs=1, calibrate=False),
              tmp_path / "off").train(progress=False)  # fmt: skip
    assert "calibration" not in off.metadata
    assert (
        "no temperature fitted (calibrate false)"
        in (tmp_path / "off" / "MODEL_CARD.md").read_text()
    )


def test_config_files_from_before_calibration_mean_none():
    # a run written before the setting did not calibrate: resuming it must not start to
    obj = json.loads(json.dumps(preset("mlp").to_json()))
    del obj["calibrate"]
    assert RunConfig.from_json(obj).calibrate is False
    assert RunConfig().calibrate is False
