import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_idx_folder, write_learnable
from fashionnet.checkpoint import read_checkpoint
from fashionnet.cli import main
from fashionnet.config import PRESETS
from fashionnet.data.formats import write_idx

RUN_FILES = {
    "model.npz", "metrics.json", "history.jsonl", "config.json", "last.npz", "best.npz", "report",
    "MODEL_CARD.md",
    ".fashionnet.lock",  # the lock a run holds while it trains (flock), left in place
}  # fmt: skip


@pytest.fixture
def tiny_data(tmp_path, rng):
    folder = tmp_path / "data"
    write_idx_folder(folder, rng, n_train=120, n_test=40)
    return folder


def test_train_writes_the_run_folder_and_evaluate_reproduces_it(tmp_path, tiny_data, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--preset",
            "seed",
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--val-size",
            "20",
            "--batch-size",
            "16",
        ]
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} == RUN_FILES
    printed = capsys.readouterr().out
    assert printed.count("epoch ") >= 3 and "test accuracy" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "test_loss",
        "val_accuracy",
        "best_epoch",
        "epochs",
        "train_seconds",
        "preset",
        "seed",
    ):
        assert key in metrics
    assert metrics["preset"] == "seed" and metrics["epochs"] == 3 and metrics["test_size"] == 40
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    config = json.loads((out / "config.json").read_text())
    assert config["hidden"] == [10] and config["init"] == "uniform" and config["epochs"] == 3

    assert main(["evaluate", str(out / "model.npz"), "--data", str(tiny_data), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == metrics["test_accuracy"]
    assert evaluated["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    assert np.sum(evaluated["confusion_matrix"]) == 40
    assert evaluated["class_names"][6] == "Shirt"

    assert main(["evaluate", str(out), "--data", str(tiny_data)]) == 0
    table = capsys.readouterr().out
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in table
    assert "Ankle boot" in table and "precision" in table


def test_evaluate_and_report_need_only_the_test_data(tmp_path, capsys):
    """The test files alone, or a test file itself, are enough: both were refused for want of
    training data. Labels the model has no class for are one line, not an IndexError."""
    data = write_learnable(tmp_path / "data", 60, 40)
    run = tmp_path / "run"
    assert main(["train", "--preset", "seed", "--data", str(data), "--epochs", "2",
                 "--val-size", "20", "--out", str(run), "--quiet", "--no-report"]) == 0  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    (data / "train.npz").unlink()
    capsys.readouterr()
    for where in (data, data / "test.npz"):
        assert main(["evaluate", str(run), "--data", str(where), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["test_accuracy"] == metrics["test_accuracy"]
    assert main(["report", str(run), "--data", str(data / "test.npz")]) == 0
    assert (run / "report" / "report.html").is_file()

    with np.load(data / "test.npz") as f:
        np.savez(tmp_path / "wider.npz", x=f["x"], y=f["y"] + 10)
    for command in ("evaluate", "report"):
        assert main([command, str(run), "--data", str(tmp_path / "wider.npz")]) == 2
        err = capsys.readouterr().err
        assert err.endswith("wider.npz: labels go up to 19, the model knows 10 classes\n")
        assert err.count("\n") == 1


def test_same_seed_same_model_file_weights(tmp_path, tiny_data):
    args = [
        "train",
        "--data",
        str(tiny_data),
        "--epochs",
        "2",
        "--val-size",
        "20",
        "--hidden",
        "16",
        "--quiet",
        "--no-report",
    ]
    main([*args, "--out", str(tmp_path / "a")])
    main([*args, "--out", str(tmp_path / "b")])
    _, a = read_checkpoint(tmp_path / "a" / "model.npz")
    _, b = read_checkpoint(tmp_path / "b" / "model.npz")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_train_in_process_gives_the_callers_signal_handlers_back(tmp_path, tiny_data):
    """A run stops on SIGINT / SIGTERM by its own handlers; a process that called main() gets its
    own back (left installed, they swallowed its next Ctrl-C and made forked children ignore
    SIGTERM). From a thread other than the main one, where no handler can be set, it still runs."""
    import signal
    import threading

    def mine(signum, frame):
        raise AssertionError("not expected to run")

    args = ["train", "--data", str(tiny_data), "--epochs", "1", "--val-size", "20", "--hidden",
            "8", "--quiet", "--no-report"]  # fmt: skip
    previous = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main([*args, "--out", str(tmp_path / "main")]) == 0
        assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    codes = []
    out = str(tmp_path / "thread")
    thread = threading.Thread(target=lambda: codes.append(main([*args, "--out", out])))
    thread.start()
    thread.join()
    assert codes == [0] and (tmp_path / "thread" / "model.npz").is_file()


def test_restarts_schedule_flags_are_recorded_and_used(tmp_path, tiny_data, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_data), "--epochs", "3", "--val-size", "20",
            "--batch-size", "20", "--quiet", "--no-report", "--out", str(out)]  # fmt: skip
    assert main([*args, "--schedule", "restarts", "--cycle-epochs", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["schedule"] == "restarts" and config["cycle_epochs"] == 1
    # a one-epoch cycle, then the last two-epoch cycle: the rate at the end of epoch 2 is back
    # up half-way, above the annealed ends of epochs 1 and 3
    lrs = [json.loads(line)["lr"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert lrs[1] > 5 * lrs[0] and lrs[1] > 5 * lrs[2]
    code = main([*args[:-1], str(tmp_path / "b"), "--schedule", "cosine", "--cycle-epochs", "2"])
    assert code == 2 and "--cycle-epochs needs schedule restarts" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "0"],
        ["train", "--cycle-epochs", "0"],
        ["train", "--schedule", "sgdr"],
        ["train", "--lr", "-1"],
        ["train", "--hidden", "256,x"],
        ["train", "--dropout", "1.5"],
        ["train", "--optimizer", "rmsprop"],
        ["train", "--preset", "huge"],
        ["train", "--bogus"],
        ["frobnicate"],
    ],
)
def test_bad_flags_exit_2_with_one_error_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


def test_missing_data_is_one_line_exit_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "r").exists()


def test_val_size_larger_than_data_is_refused(tmp_path, tiny_data, capsys):
    argv = ["train", "--data", str(tiny_data), "--val-size", "500", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "--val-size 500" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_evaluate_a_broken_model_file_is_one_line(tmp_path, tiny_data, capsys):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a zip")
    assert main(["evaluate", str(bad), "--data", str(tiny_data)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "fashionnet", "train", "--epochs", "-3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--epochs" in result.stderr


@pytest.mark.realdata
def test_train_on_a_slice_of_the_real_data(tmp_path, real_data, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--data",
        str(real_data),
        "--limit",
        "3000",
        "--val-size",
        "500",
        "--epochs",
        "3",
        "--hidden",
        "64",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_size"] == 2500 and metrics["test_size"] == 3000
    assert metrics["test_accuracy"] > 0.7  # chance is 0.1
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(real_data), "--limit", "3000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == metrics["test_accuracy"]


def test_version_and_bare_command(capsys):
    import fashionnet

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"fashionnet {fashionnet.__version__}\n"
    assert main([]) == 0  # `fashionnet` alone: the help, on stdout, exit 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fashionnet") and "train" in out and "predict" in out


def _run_without(module, out, tiny_data, capsys, monkeypatch):
    """A tiny run trained into `out`, then `module` (and its submodules) made unimportable."""
    argv = ["train", "--data", str(tiny_data), "--epochs", "1", "--hidden", "8", "--val-size",
            "20", "--out", str(out), "--quiet", "--no-report"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import MODULE now fails


def test_a_dependency_missing_after_install_is_one_line(tmp_path, tiny_data, capsys, monkeypatch):
    # matplotlib is a core dependency; if it is gone anyway (pip uninstall, --no-deps) the user
    # is told which package and how to get it back, not shown a traceback
    out = tmp_path / "run"
    _run_without("matplotlib", out, tiny_data, capsys, monkeypatch)
    assert main(["report", str(out), "--data", str(tiny_data)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "warning:" not in line]
    assert len(errors) == 1 and "matplotlib" in errors[0] and "reinstall fashionnet" in errors[0]


@pytest.mark.parametrize(("command", "module", "extra"), [
    (["export", "{run}", "{tmp}/m.onnx", "--format", "onnx"], "onnx", "onnx"),
    (["serve", "{run}", "--port", "0"], "uvicorn", "serve"),
    (["sweep", "--out", "{tmp}/sweep", "--trials", "1"], "optuna", "sweep"),
])  # fmt: skip
def test_an_optional_extra_not_installed_is_one_line_naming_it(
    tmp_path, tiny_data, capsys, monkeypatch, command, module, extra
):
    """A base install (no extras) runs these commands to one line saying what to install."""
    run = tmp_path / "run"
    _run_without(module, run, tiny_data, capsys, monkeypatch)
    before = set(tmp_path.iterdir())
    assert main([a.format(run=run, tmp=tmp_path) for a in command]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and f"pip install 'fashionnet[{extra}]'" in errors[0], errors
    assert set(tmp_path.iterdir()) == before  # nothing written


def _subparsers():
    from fashionnet.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    seen = {}
    todo = list(sub.choices.items())
    while todo:  # nested commands (data show, data info, ...) too
        name, p = todo.pop()
        seen[name] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += [(f"{name} {n}", q) for n, q in a.choices.items()]
    return seen


def test_every_flag_of_every_command_says_its_default():
    missing = []
    for name, p in _subparsers().items():
        for a in p._actions:
            if not a.option_strings:
                continue
            if isinstance(a, argparse._HelpAction | argparse._VersionAction):
                continue
            if "default" not in (a.help or "") and not (a.required and "(required)" in a.help):
                missing.append(f"{name} {a.option_strings[0]}")
    assert not missing, missing


def test_train_help_lists_each_preset_and_where_defaults_come_from(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "default: from --preset" in out and "(default: found)" not in out
    for name in PRESETS:
        assert f"{name}:" in out


def test_top_level_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "fashionnet predict" in out and "fashionnet train" in out


def test_every_example_in_the_help_parses():
    """The examples are commands a newcomer copies: each must be one the parser takes."""
    import shlex

    from fashionnet.cli import EXAMPLES, build_parser

    commands = [line.split("   ")[0].strip() for line in EXAMPLES.splitlines()
                if line.startswith("  fashionnet ")]  # fmt: skip
    assert len(commands) >= 10
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.command == command.split()[1], command


def test_a_run_says_when_it_stopped_early_and_when_it_learned_nothing(tmp_path, rng, capsys):
    folder = tmp_path / "noise"  # random images with random labels: nothing to learn
    write_idx_folder(folder, rng, n_train=300, n_test=200)
    args = ["train", "--data", str(folder), "--epochs", "40", "--patience", "2", "--val-size",
            "60", "--hidden", "32", "--no-report"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert re.search(r"stopped early at epoch \d+ of 40: no better validation loss for 2 epochs",
                     captured.err)  # fmt: skip
    assert "is near chance (0.1000 for 10 classes)" in captured.err
    lines = [x for x in captured.out.splitlines() if x.startswith("epoch")]
    assert lines[0].startswith("epoch  1/40  lr ") and "smoothed train loss" in lines[0]


def test_a_run_that_learns_gets_no_warning(tmp_path, rng, capsys):
    folder = tmp_path / "stripes"  # class c: a bright band at rows 2c..2c+2, easy to learn
    labels = rng.integers(0, 10, 400).astype(np.uint8)
    images = rng.integers(0, 40, (400, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c + 2 : 2 * c + 4] = 250
    folder.mkdir()
    for prefix, part in (("train", slice(0, 300)), ("t10k", slice(300, 400))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images[part])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels[part])
    args = ["train", "--data", str(folder), "--epochs", "5", "--val-size", "50",
            "--label-smoothing", "0", "--out", str(tmp_path / "r"), "--no-report"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "near chance" not in captured.err and "stopped early" not in captured.err
    assert "  train loss " in captured.out and "smoothed" not in captured.out


def test_fit_verbose_2_prints_a_line_per_epoch(rng, capsys):
    from fashionnet.model import mlp
    from fashionnet.optim import Adam
    from fashionnet.train import fit

    x = rng.random((64, 12), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    model = mlp(12, [8], 3, rng=rng)
    fit(model, Adam(model.parameters()), (x, y), val=(x, y), epochs=3, batch_size=16, rng=rng,
        verbose=2, progress=False)  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert [line[:9] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("val loss" in line for line in lines)
