"""Fine-tuning: a run that starts from a trained model's weights (--from-model)."""

import json

import numpy as np
import pytest

from conftest import fit_stopping_at, learnable
from fashionnet import runs
from fashionnet.checkpoint import load_model_with_metadata, read_checkpoint, save_checkpoint
from fashionnet.cli import main
from fashionnet.config import PRESETS, ConfigError, replace
from fashionnet.data import CLASS_NAMES
from fashionnet.model import mlp, unwrap
from fashionnet.transfer import load_weights, read_source, settings_from


def write_data(folder, rng, n_train=300, n_test=60, classes=None, side=28):
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        images, labels = learnable(rng, n)
        if classes is not None:
            labels = labels % len(classes)
        if side != 28:
            images = images[:, :side, :side]
        np.savez(folder / f"{name}.npz", x=images, y=labels)
    if classes is not None:
        (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    return folder


@pytest.fixture
def source(tmp_path, rng):
    """A trained 10-class MLP's run folder (Fashion-MNIST's class names)."""
    data = write_data(tmp_path / "source-data", rng)
    folder = tmp_path / "source"
    argv = ["train", "--data", str(data), "--epochs", "2", "--hidden", "24,12", "--batch-size",
            "32", "--out", str(folder), "--quiet", "--no-report"]  # fmt: skip
    assert main(argv) == 0
    return folder


def test_every_weight_comes_from_the_model_and_classes_find_theirs_by_name(source, rng):
    # Bag is the model's class 8; "t-shirt top" is T-shirt/top as a folder would spell it; the
    # model has no Glove, whose column stays as the run drew it
    names = ("Bag", "t-shirt top", "Glove")
    config = settings_from(source)
    model = runs.build_model(config, 784, len(names), np.random.default_rng(5))
    drawn = unwrap(model).layers[-1].weight.data.copy()
    kept = load_weights(model, read_source(source), names, (28, 28))
    assert kept == ["Bag", "t-shirt top"]
    old = unwrap(read_source(source).model)
    new, before = unwrap(model).state_dict(), old.state_dict()
    head = f"{len(old.layers) - 1}."
    for name, array in before.items():  # the same layers: the same names and shapes
        if not name.startswith(head):
            assert np.array_equal(new[name], array), name
    w, b = new[head + "weight"], new[head + "bias"]
    assert np.array_equal(w[:, 0], before[head + "weight"][:, 8])
    assert np.array_equal(w[:, 1], before[head + "weight"][:, 0])
    assert np.array_equal(b[:2], before[head + "bias"][[8, 0]])
    assert np.array_equal(w[:, 2], drawn[:, 2])


def test_a_fine_tuned_run_starts_where_the_model_ends(source, tmp_path, rng):
    # a learning rate too small to move a weight: the run's model is the source's, for the
    # classes both have (its running statistics still follow the new data)
    data = write_data(tmp_path / "new", rng, classes=("Bag", "T-shirt/top", "Glove"))
    config = settings_from(source, data=str(data), epochs=1, lr=1e-9, weight_decay=0.0)
    result = runs.Run(config, tmp_path / "tuned").train(progress=False)
    old = unwrap(read_source(source).model)
    for (name, p), (_, q) in zip(unwrap(result.model).named_parameters().items(),
                                 old.named_parameters().items(), strict=True):  # fmt: skip
        last = name.startswith(f"{len(old.layers) - 1}.")
        a, b = (p.data[..., :2], q.data[..., [8, 0]]) if last else (p.data, q.data)
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=name)
    meta, _ = read_checkpoint(tmp_path / "tuned" / "model.npz")
    assert meta["from_model"]["classes_kept"] == ["Bag", "T-shirt/top"]
    assert meta["from_model"]["path"] == str(source / "model.npz")
    assert len(meta["from_model"]["sha256"]) == 64
    card = (tmp_path / "tuned" / "MODEL_CARD.md").read_text()
    assert f"started from the weights of `{source / 'model.npz'}`" in card


def test_train_from_model_on_the_command_line(source, tmp_path, rng, capsys):
    data = write_data(tmp_path / "new", rng, classes=("Bag", "Sneaker", "Glove"))
    out = tmp_path / "tuned"
    argv = ["train", "--from-model", str(source), "--data", str(data), "--epochs", "2",
            "--batch-size", "32", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert f"--preset mlp from {source}: data {data}" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["from_model"] == str(source) and config["hidden"] == [24, 12]
    assert config["preset"] == "mlp" and config["lr"] == PRESETS["mlp"].lr
    kept = json.loads((out / "metrics.json").read_text())
    assert kept["test_accuracy"] > 0.5  # three classes: chance is a third
    report = (out / "report" / "report.md").read_text()
    assert f"- fine-tuned from: {source / 'model.npz'} (SHA-256 " in report
    # the card's limits are those of the pictures it was trained on, not Fashion-MNIST's
    card = (out / "MODEL_CARD.md").read_text()
    assert f"Trained on {kept['train_size']} pictures of its own classes ({data})" in card
    assert "Zalando" not in card


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hidden", "64"], "--hidden 64: the model {model} has 24,12, and a run from it keeps "
                             "its layers"),
        (["--arch", "cnn", "--stages", "8"], "--arch cnn: the model {model} has mlp"),
        (["--from-model", "{tmp}/nothing"], "--from-model {tmp}/nothing: no such file"),
        (["--from-model", "{tmp}/broken.npz"], "--from-model {tmp}/broken.npz: not a fashionnet "
                                               "checkpoint"),
        (["--from-model", "{tmp}/bare.npz"], "--from-model {tmp}/bare.npz: holds no run settings"),
        (["--data", "{tmp}/small"], "--from-model {model}: made for 28x28 images, and this "
                                    "data's are 20x20"),
    ],
)  # fmt: skip
def test_a_model_that_cannot_start_the_run_is_one_line(source, tmp_path, rng, capsys, flags,
                                                       message):  # fmt: skip
    (tmp_path / "broken.npz").write_bytes((source / "model.npz").read_bytes()[:2000])
    save_checkpoint(tmp_path / "bare.npz", mlp(784, (8,), 10, rng=rng))  # no run settings
    write_data(tmp_path / "small", rng, side=20)
    given = [f.format(tmp=tmp_path) for f in flags]
    argv = ["train", "--from-model", str(source), "--epochs", "1", *given, "--out",
            str(tmp_path / "run"), "--quiet"]  # fmt: skip
    if "--data" not in given:
        argv += ["--data", str(source.parent / "source-data")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message.format(model=source / "model.npz", tmp=tmp_path) in err
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_the_layers_must_be_the_models(source, tmp_path, rng):
    # the Python API: settings whose layers differ from the model's are refused before training
    config = replace(settings_from(source), hidden=(24,), data=str(source.parent / "source-data"))
    with pytest.raises(ConfigError, match="its layers are not this run's"):
        runs.Run(config, tmp_path / "run").train(progress=False)
    assert not (tmp_path / "run").exists()


def test_a_stopped_fine_tuned_run_resumes_bit_exactly_without_the_model(
    source, tmp_path, rng, monkeypatch
):
    data = write_data(tmp_path / "new", rng, classes=("Bag", "Sandal", "Glove"))
    config = settings_from(source, data=str(data), epochs=3, batch_size=32)
    reference = runs.Run(config, tmp_path / "reference").train(progress=False)
    monkeypatch.setattr(runs, "fit", fit_stopping_at(11))
    stopped = runs.Run(config, tmp_path / "run").train(progress=False)
    monkeypatch.undo()
    assert stopped.interrupted == "SIGINT"
    (source / "model.npz").unlink()  # its weights are in last.npz now
    resumed = runs.Run.open(tmp_path / "run").train(progress=False)
    for name, array in unwrap(reference.model).state_dict().items():
        assert np.array_equal(unwrap(resumed.model).state_dict()[name], array), name
    assert resumed.metadata["from_model"] == reference.metadata["from_model"]


def test_a_calibrated_models_temperature_comes_out_of_its_last_layer(source, tmp_path):
    # a calibrated model's last layer holds its weights divided by T (calibrate.py): a run from
    # it starts from the weights as trained, and fits a temperature of its own when it ends
    model, meta = load_model_with_metadata(source / "model.npz")
    head = unwrap(model).layers[-1]
    trained = {name: p.data.copy() for name, p in head.params().items()}
    for p in head.params().values():
        p.data /= np.float32(0.5)
    kept = {k: meta[k] for k in ("class_names", "image_shape", "input_scale", "config")}
    calibration = {"temperature": 0.5, "images": 500}
    save_checkpoint(
        tmp_path / "calibrated.npz", model, metadata=kept | {"calibration": calibration}
    )
    source_read = read_source(tmp_path / "calibrated.npz")
    assert source_read.temperature == 0.5
    fresh = runs.build_model(settings_from(tmp_path / "calibrated.npz"), 784, 10,
                             np.random.default_rng(5))  # fmt: skip
    load_weights(fresh, source_read, CLASS_NAMES, (28, 28))
    for name, p in unwrap(fresh).layers[-1].params().items():
        np.testing.assert_array_equal(p.data, trained[name])
    # a record calibrate could not have written is no temperature
    for bad in ({"temperature": "hot"}, {"temperature": 1e-30}, [0.5], {"temperature": True}):
        save_checkpoint(tmp_path / "odd.npz", model, metadata=kept | {"calibration": bad})
        assert read_source(tmp_path / "odd.npz").temperature == 1.0
