"""Runs that never lose work: kill -9 at random points, resume, and get bit-identical results."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fashionnet.checkpoint import atomic_write, read_checkpoint
from fashionnet.cli import main

TIMING_KEYS = {"seconds", "train_seconds", "test_seconds"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # .npz, not IDX files under the official names, which would (rightly) warn of a checksum
    # mismatch on every load and so add a line to every stderr checked here
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name, n in (("train", 1100), ("test", 200)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        np.savez(folder / f"{name}.npz", x=images, y=rng.integers(0, 10, n))
    return folder


def train_argv(data_dir, out, optimizer):
    return [
        "train", "--data", str(data_dir), "--out", str(out), "--hidden", "32",
        "--dropout", "0.1", "--epochs", "5", "--batch-size", "25", "--val-size", "100",
        "--optimizer", optimizer, "--lr", "0.01", "--checkpoint-every", "3", "--quiet",
        "--no-report", "--cycle-epochs", "1",  # a restart after epoch 1: resumes mid-cycle too
    ]  # fmt: skip


def final_state(run: Path) -> tuple[dict, dict, list]:
    """Everything a run ends with, minus wall-clock timings."""
    _, model = read_checkpoint(run / "model.npz")
    _, last = read_checkpoint(run / "last.npz")
    metrics = {k: v for k, v in json.loads((run / "metrics.json").read_text()).items()
               if k not in TIMING_KEYS}  # fmt: skip
    history = [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
               for line in (run / "history.jsonl").read_text().splitlines()]  # fmt: skip
    arrays = {f"model.{k}": v for k, v in model.items()} | {f"last.{k}": v for k, v in last.items()}
    return arrays, metrics, history


def assert_same_run(a: Path, b: Path) -> None:
    arrays_a, metrics_a, history_a = final_state(a)
    arrays_b, metrics_b, history_b = final_state(b)
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)
    assert metrics_a == metrics_b
    assert history_a == history_b


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate()
    return proc.returncode, err.decode()


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fashionnet", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sigkill_at_random_points_then_resume_is_bit_identical(optimizer, data_dir, tmp_path):
    reference = tmp_path / "reference"
    t0 = time.perf_counter()
    proc = cli(*train_argv(data_dir, reference, optimizer))
    while not (reference / "last.npz").exists() and proc.poll() is None:
        time.sleep(0.005)
    first_save = time.perf_counter() - t0
    assert finish(proc) == (0, "")
    duration = time.perf_counter() - t0
    rng = np.random.default_rng(99 if optimizer == "sgd" else 7)
    killed_mid_run = 0
    for trial in range(10):
        run = tmp_path / f"killed{trial}"
        proc = cli(*train_argv(data_dir, run, optimizer))
        # two kills during start-up (before any save), eight while training and saving
        time.sleep(rng.uniform(0.2, first_save) if trial < 2 else rng.uniform(first_save, duration))
        proc.send_signal(signal.SIGKILL)
        finish(proc)
        killed_mid_run += (run / "last.npz").exists() and not (run / "model.npz").exists()
        if (run / "config.json").exists():
            resumed = cli("train", "--resume", str(run), "--quiet", "--no-report")
        else:  # killed before the run folder was written: nothing to resume, start again
            resumed = cli(*train_argv(data_dir, run, optimizer))
        code, err = finish(resumed)
        assert code == 0, err
        assert not list(run.glob(".*.tmp"))
        assert_same_run(reference, run)
    print(f"{optimizer}: {killed_mid_run} of 10 kills landed mid-run")
    assert killed_mid_run >= 4  # most kills must land while training, or the test proves little


@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_a_save_interrupted_at_any_stage_leaves_old_or_new_file(stage, tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    with atomic_write(path) as f:
        f.write(b"old complete file")

    class Interrupted(Exception):
        pass

    def fail(*args, **kwargs):
        raise Interrupted

    if stage == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
    if stage == "replace":
        monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(Interrupted), atomic_write(path) as f:
        f.write(b"new ")
        if stage == "write":
            raise Interrupted
        f.write(b"complete file")
    assert path.read_bytes() == b"old complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]


def test_sigterm_saves_and_exits_143_then_resumes_identically(data_dir, tmp_path):
    reference = tmp_path / "reference"  # same thread count as the resumed run: a subprocess
    assert finish(cli(*train_argv(data_dir, reference, "adam"))) == (0, "")
    run = tmp_path / "run"
    proc = cli(*train_argv(data_dir, run, "adam"))
    while not (run / "last.npz").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    code, message = finish(proc)
    if code == 0:
        pytest.skip("the run finished before the signal arrived")
    assert code == 143
    assert "SIGTERM" in message and f"fashionnet train --resume {run}" in message
    assert message.count("\n") == 1
    assert finish(cli("train", "--resume", str(run), "--quiet", "--no-report")) == (0, "")
    assert_same_run(reference, run)


def test_sigint_in_process_exits_130(data_dir, tmp_path, monkeypatch, capsys):
    from fashionnet import recipes

    real_fit = recipes.fit

    def fit_interrupted_at_step_10(*args, **kwargs):
        def press_ctrl_c(state):
            if kwargs["optimizer"].steps == 10 if "optimizer" in kwargs else args[1].steps == 10:
                os.kill(os.getpid(), signal.SIGINT)

        kwargs["step_callbacks"] = [*kwargs.get("step_callbacks", []), press_ctrl_c]
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(recipes, "fit", fit_interrupted_at_step_10)
    run = tmp_path / "run"
    assert main(train_argv(data_dir, run, "sgd")) == 130
    meta, _ = read_checkpoint(run / "last.npz")
    assert meta["optimizer"]["steps"] == 10  # the step in flight finished, nothing after it
    assert not (run / "model.npz").exists()
    assert "Resume with: fashionnet train --resume" in capsys.readouterr().err
    monkeypatch.undo()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_injected_nan_stops_at_the_same_step_with_exit_3(data_dir, tmp_path, monkeypatch, capsys):
    from fashionnet import train

    real_loss = train.softmax_cross_entropy
    calls = {"n": 0}

    def loss_with_nan_at_call_23(logits, labels, **kwargs):
        calls["n"] += 1
        loss, grad = real_loss(logits, labels, **kwargs)
        return (float("nan"), grad) if calls["n"] == 23 else (loss, grad)

    monkeypatch.setattr(train, "softmax_cross_entropy", loss_with_nan_at_call_23)
    messages = []
    for attempt in range(2):
        calls["n"] = 0
        run = tmp_path / f"run{attempt}"
        assert main(train_argv(data_dir, run, "adam")) == 3
        messages.append(capsys.readouterr().err)
        meta, arrays = read_checkpoint(run / "last.npz")
        assert meta["optimizer"]["steps"] == 21  # checkpoint every 3 steps: the last good one
        assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")
        assert not (run / "model.npz").exists()
    assert messages[0] == messages[1].replace("run1", "run0")
    assert "epoch 1, step 23" in messages[0] and messages[0].count("\n") == 1
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_resume_refuses_flags_and_foreign_folders(data_dir, tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--epochs", "3"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_out_folder_with_a_run_is_not_overwritten(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*train_argv(data_dir, run, "sgd"), "--epochs", "1"]) == 0
    before = (run / "model.npz").read_bytes()
    assert main([*train_argv(data_dir, run, "sgd"), "--epochs", "1"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run / "model.npz").read_bytes() == before
