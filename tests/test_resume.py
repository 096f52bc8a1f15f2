"""Runs that never lose work: killed or signalled at chosen steps, resumed, bit-identical results.

Every signal is placed by an event (an optimizer step, a checkpoint write reaching a stage) through
tests/signal_driver.py, never by a sleep: the same kills land at the same points on any machine.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_learnable
from fashionnet._fsutil import atomic_write
from fashionnet.checkpoint import read_checkpoint
from fashionnet.cli import main

TIMING_KEYS = {"seconds", "train_seconds", "test_seconds"}
DRIVER = Path(__file__).with_name("signal_driver.py")
# the reference and every killed or resumed run use the same thread count: bit-identical results
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_learnable(tmp_path_factory.mktemp("data"), 1100, 200)


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


def run_cli(*args: str, env: dict[str, str] = ONE_THREAD) -> tuple[int, str]:
    """`fashionnet ARGS` in a fresh process, waited for (subprocess.run always reaps it)."""
    result = subprocess.run(
        [sys.executable, "-m", "fashionnet", *args], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
    )  # fmt: skip
    return result.returncode, result.stderr.decode()


def run_signalled(
    signame: str, step: int, phase: str, *args: str, env: dict[str, str] = ONE_THREAD
) -> tuple[int, str]:
    """`fashionnet ARGS` in a fresh process that sends itself `signame` at `step` / `phase`."""
    result = subprocess.run(
        [sys.executable, str(DRIVER), signame, str(step), phase, "--", *args], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
    )  # fmt: skip
    return result.returncode, result.stderr.decode()


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run per optimizer, and its total number of steps."""
    runs = {}
    for optimizer in ("sgd", "adam"):
        run = tmp_path_factory.mktemp(f"reference-{optimizer}")
        assert run_cli(*train_argv(data_dir, run, optimizer)) == (0, "")
        meta, _ = read_checkpoint(run / "last.npz")
        runs[optimizer] = run, meta["optimizer"]["steps"]
    return runs


# one kill before the first step, then kills after a step and at each stage of a checkpoint write
KILL_PHASES = ["start", "step", "write", "fsync", "replace", "step", "write", "fsync", "replace",
               "step"]  # fmt: skip


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sigkill_at_random_steps_then_resume_is_bit_identical(
    optimizer, data_dir, reference, tmp_path, capsys
):
    reference_run, total_steps = reference[optimizer]
    rng = np.random.default_rng(99 if optimizer == "sgd" else 7)
    mid_training = in_a_write = 0
    for trial, phase in enumerate(KILL_PHASES):
        run = tmp_path / f"killed{trial}"
        step = int(rng.integers(1, total_steps + 1))  # any step, the last one included
        code, _ = run_signalled("SIGKILL", step, phase, *train_argv(data_dir, run, optimizer))
        assert code == -signal.SIGKILL, f"trial {trial}: the kill at {phase} {step} never came"
        assert not (run / "model.npz").exists()
        mid_training += phase != "start"
        stale = list(run.glob(".*.tmp"))  # a write killed before its rename leaves its temp file
        assert bool(stale) == (phase in ("write", "fsync")), (phase, stale)
        in_a_write += bool(stale)
        assert (run / "config.json").exists()
        assert (run / "last.npz").exists() == (phase != "start" and step >= 3)
        assert run_cli("train", "--resume", str(run), "--quiet", "--no-report") == (0, "")
        assert not list(run.glob(".*.tmp"))
        assert_same_run(reference_run, run)
    with capsys.disabled():
        print(f"\n{optimizer}: {mid_training} of {len(KILL_PHASES)} kills landed mid-training, "
              f"{in_a_write} of them inside a checkpoint write")  # fmt: skip
    assert mid_training == len(KILL_PHASES) - 1 and in_a_write == 4


def test_a_cnn_on_two_threads_killed_and_resumed_is_bit_identical(data_dir, tmp_path):
    """Batches split over two threads (fashionnet/threads.py): partial sums are added in part
    order, so a resumed run on the same thread count ends exactly as the uninterrupted one."""
    two = {**ONE_THREAD, "FASHIONNET_THREADS": "2"}
    argv = [*train_argv(data_dir, tmp_path / "reference", "adam"), "--arch", "cnn", "--stages",
            "4/8", "--hidden", "16", "--epochs", "2"]  # fmt: skip
    assert run_cli(*argv, env=two) == (0, "")
    for step in (5, 47):  # within the first epoch, then within the second
        run = tmp_path / f"killed-at-{step}"
        argv[argv.index("--out") + 1] = str(run)
        code, _ = run_signalled("SIGKILL", step, "step", *argv, env=two)
        assert code == -signal.SIGKILL
        assert run_cli("train", "--resume", str(run), "--quiet", "--no-report", env=two) == (0, "")
        assert_same_run(tmp_path / "reference", run)


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


@pytest.mark.parametrize(
    ("signame", "code", "phase"),
    [("SIGTERM", 143, "step"), ("SIGTERM", 143, "fsync"), ("SIGINT", 130, "step"),
     ("SIGINT", 130, "replace")],
)  # fmt: skip
def test_sigterm_or_sigint_saves_exits_then_resumes_identically(
    signame, code, phase, data_dir, reference, tmp_path
):
    reference_run, total_steps = reference["adam"]
    run = tmp_path / "run"
    step = total_steps // 3  # mid-way through epoch 2
    returned, message = run_signalled(signame, step, phase, *train_argv(data_dir, run, "adam"))
    assert returned == code, message
    assert signame in message and f"fashionnet train --resume {run}" in message
    assert message.count("\n") == 1
    meta, _ = read_checkpoint(run / "last.npz")
    # the step in flight (and the checkpoint write in flight) finish, then it saves and stops
    assert step <= meta["optimizer"]["steps"] <= step + 3
    assert not (run / "model.npz").exists() and not list(run.glob(".*.tmp"))
    assert run_cli("train", "--resume", str(run), "--quiet", "--no-report") == (0, "")
    assert_same_run(reference_run, run)


def test_sigint_in_process_exits_130(data_dir, tmp_path, monkeypatch, capsys):
    from fashionnet import runs

    real_fit = runs.fit

    def fit_interrupted_at_step_10(*args, **kwargs):
        def press_ctrl_c(state):
            if kwargs["optimizer"].steps == 10 if "optimizer" in kwargs else args[1].steps == 10:
                os.kill(os.getpid(), signal.SIGINT)

        kwargs["step_callbacks"] = [*kwargs.get("step_callbacks", []), press_ctrl_c]
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runs, "fit", fit_interrupted_at_step_10)
    run = tmp_path / "run"
    assert main(train_argv(data_dir, run, "sgd")) == 130
    meta, _ = read_checkpoint(run / "last.npz")
    assert meta["optimizer"]["steps"] == 10  # the step in flight finished, nothing after it
    assert not (run / "model.npz").exists()
    assert "Resume with: fashionnet train --resume" in capsys.readouterr().err


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
