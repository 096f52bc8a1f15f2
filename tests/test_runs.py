"""Run: the run folder it owns, the result it returns, the data later commands find in it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import fit_stopping_at
from fashionnet import runs
from fashionnet.checkpoint import read_checkpoint
from fashionnet.cli import main
from fashionnet.config import PRESETS, replace
from fashionnet.data import to_float
from fashionnet.train import evaluate


def write_npz_data(folder: Path, rng, side=28, n_train=300, n_test=120) -> Path:
    """A train.npz / test.npz folder (no official file names, so no checksum warnings)."""
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, side, side), dtype=np.uint8)
        images[np.arange(n), labels, :] = 255  # a bright row per class: learnable
        np.savez(folder / f"{name}.npz", x=images, y=labels)
    return folder


@pytest.fixture
def data_dir(tmp_path, rng):
    return write_npz_data(tmp_path / "data", rng)


def small(data_dir, **changes):
    settings = {"hidden": (16,), "epochs": 2, "val_size": 50, "batch_size": 32, **changes}
    return replace(PRESETS["mlp"], data=str(data_dir), **settings)


def test_the_result_holds_the_model_and_the_exact_test_split(data_dir, tmp_path):
    result = runs.Run(small(data_dir, limit=100), tmp_path / "run").train(progress=False)
    assert len(result.test) == 100 and result.metrics["test_size"] == 100
    _, acc = evaluate(result.model, to_float(result.test.images), result.test.labels)
    assert acc == result.metrics["test_accuracy"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == result.metrics


def test_a_flip_shift_run_validates_epochs_on_two_views_and_reports_all_ten(
    data_dir, tmp_path, monkeypatch
):
    """Ten views each epoch would add a fifth to the cnn preset's training time: its epochs are
    validated on the image and its mirror, its final validation figures on every view."""
    from fashionnet import train as train_module

    seen = []

    def spy(model, x, y, **kw):
        figures = evaluate(model, x, y, **kw)
        if len(x) == 200:  # the validation images
            seen.append((getattr(model, "mode", None), figures))
        return figures

    monkeypatch.setattr(train_module, "evaluate", spy)  # each epoch's validation
    monkeypatch.setattr(runs, "evaluate", spy)  # the run's final figures
    config = small(data_dir, tta="flip-shift", epochs=3, val_size=200)  # enough to calibrate
    result = runs.Run(config, tmp_path / "run").train(progress=False)
    assert result.model.mode == "flip-shift"
    assert [mode for mode, _ in seen] == ["flip", "flip", "flip", "flip-shift"]
    assert (result.metrics["val_loss"], result.metrics["val_accuracy"]) == seen[-1][1]
    best = result.history.best()  # the epochs' records keep what was measured then
    assert (best["val_loss"], best["val_accuracy"]) == seen[result.history.best_epoch - 1][1]
    assert seen[-1][1] != seen[result.history.best_epoch - 1][1]
    # measured as trained, before the calibration changed the probabilities (not after)
    calibration = result.metadata["calibration"]
    assert calibration["val_loss_before"] == pytest.approx(result.metrics["val_loss"], rel=1e-4)
    assert calibration["val_loss_after"] < result.metrics["val_loss"]


def test_report_after_limit_shows_metrics_json_accuracy(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(data_dir), "--limit", "100", "--val-size", "20", "--epochs",
            "2", "--hidden", "8", "--out", str(run), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_size"] == 100
    report = (run / "report" / "report.md").read_text()
    assert f"- test accuracy: {metrics['test_accuracy']:.4f}" in report
    # report and evaluate without flags measure the same split again
    (run / "report" / "report.md").unlink()
    assert main(["report", str(run)]) == 0
    assert (
        f"- test accuracy: {metrics['test_accuracy']:.4f}" in (run / "report/report.md").read_text()
    )
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == metrics["test_accuracy"] and evaluated["test_size"] == 100


def test_evaluate_and_report_use_the_data_the_run_was_trained_on(
    tmp_path, rng, capsys, monkeypatch
):
    # 12x12 images: the default data (28x28, or none at all) would be refused
    data = write_npz_data(tmp_path / "small-images", rng, side=12)
    monkeypatch.delenv("FASHIONNET_DATA", raising=False)
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--epochs", "2", "--hidden", "8", "--val-size", "50",
            "--out", str(run), "--quiet", "--no-report"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == metrics["test_accuracy"]
    assert main(["report", str(run)]) == 0
    assert (run / "report" / "report.html").is_file()


def test_default_run_folders_never_collide(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-000000")  # one second
    folders = [runs.Run(small(data_dir, epochs=1)) for _ in range(3)]
    for run in folders:
        run.train(progress=False)
    names = [run.folder.name for run in folders]
    assert names == ["20260101-000000-mlp", "20260101-000000-mlp-2", "20260101-000000-mlp-3"]
    assert all((run.folder / "model.npz").is_file() for run in folders)


def test_eight_parallel_trainings_make_eight_folders(data_dir, tmp_path):
    env = {**os.environ, "FASHIONNET_DATA": str(data_dir), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
    argv = [sys.executable, "-m", "fashionnet", "train", "--epochs", "1", "--limit", "200",
            "--val-size", "50", "--hidden", "8", "--quiet", "--no-report"]  # fmt: skip
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(8):
            procs.append(subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE))  # fmt: skip
        errors = [proc.communicate()[1].decode() for proc in procs]
    finally:
        for proc in procs:  # killed if still running, pipe closed and reaped, whatever happened
            if proc.poll() is None:
                proc.kill()
            if proc.stderr is not None:
                proc.stderr.close()
            proc.wait()
    assert [proc.returncode for proc in procs] == [0] * 8, errors
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 8
    assert all((folder / "model.npz").is_file() for folder in folders)


def test_an_existing_run_is_not_overwritten(data_dir, tmp_path):
    runs.Run(small(data_dir, epochs=1), tmp_path / "run").train(progress=False)
    with pytest.raises(runs.ResumeError, match="holds a run already"):
        runs.Run(small(data_dir), tmp_path / "run")


def test_a_run_whose_config_json_predates_runconfig_resumes_identically(
    data_dir, tmp_path, monkeypatch
):
    config = small(data_dir, epochs=3, dropout=0.1, checkpoint_every=4)
    reference = runs.Run(config, tmp_path / "reference").train(progress=False)
    monkeypatch.setattr(runs, "fit", fit_stopping_at(9))
    folder = tmp_path / "run"
    stopped = runs.Run(config, folder).train(progress=False)
    monkeypatch.undo()
    assert stopped.interrupted == "SIGINT" and stopped.step == 9
    # rewrite config.json as the dict-based config wrote it: augment object, no new keys
    new = json.loads((folder / "config.json").read_text())
    old = {
        k: v
        for k, v in new.items()
        if k
        not in ("flip", "shift", "erase", "arch", "stages", "momentum", "nesterov", "tta", "data")
    }
    old["augment"] = {"flip": True}
    old["data"] = str(data_dir)
    (folder / "config.json").write_text(json.dumps(old))
    resumed = runs.Run.open(folder).train(progress=False)
    assert resumed.metrics["test_accuracy"] == reference.metrics["test_accuracy"]
    _, a = read_checkpoint(tmp_path / "reference" / "model.npz")
    _, b = read_checkpoint(folder / "model.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_summary_lists_every_layer_and_the_totals(data_dir, tmp_path, capsys):
    config = small(data_dir, epochs=1, dropout=0.0, input_dropout=0.0)
    runs.Run(config, tmp_path / "run").train(progress=False)
    assert main(["summary", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    # 784-16-10 with BatchNorm: Linear 784x16 (no bias), BatchNorm 16+16 (+32 running), Linear
    assert "0 (Linear)" in out and "(None, 16)" in out and "(None, 10)" in out
    trainable = 784 * 16 + 2 * 16 + 16 * 10 + 10
    assert f"Trainable params: {trainable:,}" in out
    assert f"Non-trainable params: {2 * 16:,}" in out
    assert f"Total params: {trainable + 32:,}" in out
    assert f"Mult-adds per image (M): {(784 * 16 + 16 * 10) / 1e6:.2f}" in out
    assert "views" not in out  # no test-time averaging: nothing said of it


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_the_convolutional_presets_networks_train_test_and_load(name, data_dir, tmp_path):
    """Each preset's network, narrowed: a run from data to a tested model file that loads again
    as the same layers. A bright row per class is learnable in five epochs by the cnn; the
    resnet's global average pooling keeps little of where a row is, so it only has to run."""
    stages = {"cnn": ((4,), (8,)), "resnet": ((4,), (8, 8))}[name]
    # a batch of 32, not the preset's: its learning rate scaled with it (an SGD step's size
    # grows with the rate, where Adam's does not)
    lr = PRESETS[name].lr * 32 / PRESETS[name].batch_size
    config = replace(PRESETS[name], data=str(data_dir), stages=stages, epochs=5, val_size=50,
                     batch_size=32, lr=lr, hidden=(), tta=None)  # fmt: skip
    result = runs.Run(config, tmp_path / name).train(progress=False)
    assert result.metrics["test_accuracy"] > (0.5 if name == "cnn" else 0.0)
    assert np.isfinite(result.metrics["test_loss"])
    _, arrays = read_checkpoint(tmp_path / name / "model.npz")
    kinds = json.loads((tmp_path / name / "config.json").read_text())["arch"]
    assert kinds == name and any(".body." in key for key in arrays) == (name == "resnet")
