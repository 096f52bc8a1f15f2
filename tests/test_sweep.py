"""fashionnet sweep: the search space parser, bad specs refused before any trial, local workers,
continuing a study, a kill -9 in the middle of a trial, and a real Dask cluster on 127.0.0.1 that
loses a worker during a trial. Small learnable data keeps every trial under a second or two."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_learnable

optuna = pytest.importorskip("optuna", reason="the sweep extra is not installed")

from fashionnet.cli import main  # noqa: E402
from fashionnet.sweep.space import SpecError, load_spec, parse_param  # noqa: E402

TRIAL_FILES = {"config.json", "metrics.json", "model.npz", "history.jsonl"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_learnable(tmp_path_factory.mktemp("data"), 2000, 400)


def fixed(data, epochs=2):
    return ["--set", f"data={data}", "--set", f"epochs={epochs}", "--set", "val_size=400",
            "--set", "hidden=16", "--param", "lr=logfloat:1e-4:1e-2",
            "--param", "label_smoothing=float:0:0.2"]  # fmt: skip


def study_of(folder: Path):
    return optuna.load_study(study_name="fashionnet", storage=f"sqlite:///{folder / 'study.db'}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lr=logfloat:1e-4:1e-2", ("lr", "logfloat", 1e-4, 1e-2, ())),
        ("dropout=float:0:0.5", ("dropout", "float", 0.0, 0.5, ())),
        ("epochs=int:5:40", ("epochs", "int", 5, 40, ())),
        ("optimizer=choice:adam,sgd", ("optimizer", "choice", 0, 0, ("adam", "sgd"))),
        ("hidden=choice:256,128|512", ("hidden", "choice", 0, 0, ((256, 128), (512,)))),
        ("batch-size=choice:64,128", ("batch_size", "choice", 0, 0, (64, 128))),
        ("flip=choice:true,false", ("flip", "choice", 0, 0, (True, False))),
    ],
)
def test_the_search_space_is_parsed_as_train_flags_are(text, expected):
    p = parse_param(text)
    assert (p.name, p.kind, p.low, p.high, p.choices) == expected
    assert parse_param(p.text()) == p  # and written back the same way


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("speed=float:0:1", "'speed' is not a setting"),
        ("data=choice:a,b", "is not a setting a sweep can vary"),
        ("lr=float:0.1:0.01", "LOW 0.1 is above HIGH 0.01"),
        ("lr=logfloat:0:0.1", "a log range must stay above 0"),
        ("weight_decay=logfloat:-1:0.1", "a log range must stay above 0"),
        ("optimizer=choice:adam,3", "must be one of"),
        ("epochs=choice:5,many", "expected an integer"),
        ("epochs=float:1:5", "not a number setting; use int"),
        ("lr=int:1:5", "not an integer setting"),
        ("lr=float:0.1", "expected float:LOW:HIGH"),
        ("lr=gauss:0:1", "expected NAME=KIND:LOW:HIGH"),
        ("dropout=float:0:1.5", "dropout must be in"),
    ],
)
def test_bad_params_name_the_problem(text, words):
    with pytest.raises(SpecError, match=words):
        parse_param(text)


def test_a_toml_spec(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text('preset = "mlp"\ntrials = 7\n[params]\nlr = "logfloat:1e-4:1e-2"\n'
                    'hidden = "choice:256,128|512"\n[set]\nepochs = 3\n')  # fmt: skip
    loaded = load_spec(spec)
    assert loaded["trials"] == 7 and [p.name for p in loaded["params"]] == ["lr", "hidden"]
    assert loaded["set"] == {"epochs": 3}
    spec.write_text('[params]\nlr = "logfloat:1e-4:1e-2"\nspeed = 3\n')
    with pytest.raises(SpecError, match="speed"):
        load_spec(spec)
    spec.write_text("trials = [")
    with pytest.raises(SpecError, match="not TOML"):
        load_spec(spec)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('trials = "many"', "trials must be a positive integer, got 'many'"),
        ("trials = 1e9", "trials must be a positive integer, got 1000000000.0"),
        ("trials = true", "trials must be a positive integer, got True"),
        ("workers = 0", "workers must be a positive integer, got 0"),
        ("timeout = -3", "timeout must be a positive number of minutes, got -3"),
        ('seed = "x"', "seed must be an integer, 0 or more, got 'x'"),
        ('metric = "accuracy"', "metric must be one of val_accuracy, val_loss, got 'accuracy'"),
        ('prune = "always"', "prune must be one of median, halving, none, got 'always'"),
        ("preset = [1]", "preset must be one of mlp, "),
    ],
)
def test_a_spec_s_own_keys_are_held_to_what_the_flags_accept(line, message, tmp_path, capsys):
    """Each of these ran a sweep that crashed in every worker, never stopped, or ignored it."""
    spec = tmp_path / "sweep.toml"
    spec.write_text(line + "\n")
    assert main(["sweep", "--out", str(tmp_path / "sweep"), "--spec", str(spec)]) == 2
    assert capsys.readouterr().err.startswith(f"fashionnet: error: {spec}: {message}")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--param", "lr=float:1:0.1"],
        ["--param", "nope=int:1:2"],
        ["--set", "epochs=0"],
        ["--set", "lr=0.1", "--param", "lr=float:0.01:0.1"],
        ["--dask", "tcp://127.0.0.1:9"],  # nothing listens there
    ],
)
def test_bad_specs_exit_2_in_one_line_before_any_trial(tmp_path, argv, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
    assert not (out / "trials").exists() or not any((out / "trials").iterdir())


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("data={tmp}/missing", "{tmp}/missing: no such file or folder"),
        ("val_size=2000", "val_size 2000: must be smaller than the 2000 training images"),
    ],
)
def test_data_a_trial_could_not_use_is_one_line_before_anything_is_made(
    setting, message, tmp_path, data, capfd
):
    """Every worker would otherwise fail on it, each with a traceback of its own."""
    setting, message = (v.replace("{tmp}", str(tmp_path)) for v in (setting, message))
    out = tmp_path / "sweep"
    argv = ["sweep", "--out", str(out), "--trials", "2", "--workers", "1", *fixed(data)]
    assert main([*argv, "--set", setting]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fashionnet: error: {message}")
    assert not out.exists()


def diverging(data):
    """Settings whose every trial diverges within its first epochs."""
    return ["--set", f"data={data}", "--set", "epochs=3", "--set", "val_size=400",
            "--set", "optimizer=sgd", "--set", "momentum=0.99", "--set", "batch_norm=false",
            "--set", "hidden=512,512", "--set", "label_smoothing=0",
            "--param", "lr=float:9:10"]  # fmt: skip


def test_diverging_trials_are_recorded_and_the_sweep_goes_on(tmp_path, data, capfd):
    """A search space reaching learning rates that diverge is a normal search: each such
    trial is marked diverged, with the reason, and counts as tried; no worker stops."""
    out = tmp_path / "sweep"
    argv = ["sweep", "--out", str(out), "--trials", "3", "--workers", "1", *diverging(data)]
    assert main(argv) == 2  # nothing completed: nothing to choose
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err
    assert printed.err == f"fashionnet: error: {out}: no trial completed; see the messages above\n"
    assert [line.split()[1] for line in printed.out.splitlines()[1:]] == ["diverged"] * 3
    trials = study_of(out).trials
    assert [t.state.name for t in trials] == ["FAIL"] * 3
    assert all("became non-finite at epoch" in t.user_attrs["diverged"] for t in trials)
    rows = (out / "leaderboard.csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == ["diverged"] * 3
    assert main(argv) == 2  # counted: a second run has nothing left to try
    assert len(study_of(out).trials) == 3
    assert main(["sweep", str(out), "--status"]) == 0
    assert "3 trials (3 diverged)" in capfd.readouterr().out


def test_a_worker_that_cannot_go_on_says_why_in_one_line(tmp_path, data, capfd):
    out = tmp_path / "sweep"
    (out / "trials").mkdir(parents=True)
    (out / "trials" / "0000").write_text("a file where the first trial's folder goes\n")
    argv = ["sweep", "--out", str(out), "--trials", "2", "--workers", "1", *fixed(data)]
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert err.splitlines() == [
        f"fashionnet sweep: worker 0 stopped: {out}/trials/0000: exists and is not a folder",
        f"fashionnet: error: {out}: no trial completed; see the messages above",
    ]


@pytest.mark.parametrize("flag", ["--timeout", "--seed"])
def test_a_negative_timeout_or_seed_is_refused(flag, tmp_path, capsys):
    """A timeout of -1 ran a sweep that stopped before its first trial; a seed of -1 crashed
    every worker's sampler."""
    with pytest.raises(SystemExit) as stopped:
        main(["sweep", "--out", str(tmp_path / "sweep"), flag, "-1"])
    assert stopped.value.code == 2
    assert f"argument {flag}: expected" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("not a url", "not a url: Could not parse SQLAlchemy URL"),
        ("postgresql://bob:secret@db.example/optuna",  # no driver here, and no password shown
         "postgresql://bob:***@db.example/optuna: its database driver is not installed"),
        ("sqlite:///{tmp}/text.db", "sqlite:///{tmp}/text.db: file is not a database"),
        ("sqlite:///{tmp}/no/such/folder.db", "unable to open database file"),
    ],
)  # fmt: skip
def test_a_storage_that_does_not_open_is_one_line_and_leaves_nothing(storage, message, tmp_path,
                                                                     capsys):  # fmt: skip
    if storage.startswith("postgresql") and importlib.util.find_spec("psycopg2"):
        pytest.skip("a PostgreSQL driver is installed: the URL would be tried")
    (tmp_path / "text.db").write_text("not a database\n")
    storage, message = (v.replace("{tmp}", str(tmp_path)) for v in (storage, message))
    for argv in (["--out", str(tmp_path / "sweep")], ["--status", str(tmp_path)]):
        assert main(["sweep", *argv, "--storage", storage]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "secret" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.db"]


def test_a_damaged_or_foreign_study_db_is_one_line(tmp_path, capsys):
    damaged, foreign = tmp_path / "damaged", tmp_path / "foreign"
    damaged.mkdir()
    (damaged / "study.db").write_text("not a database\n")
    foreign.mkdir()
    optuna.storages.RDBStorage(f"sqlite:///{foreign / 'study.db'}")  # a database, no study
    for argv in (["--out", str(damaged), "--trials", "1"], [str(damaged), "--status"]):
        assert main(["sweep", *argv]) == 2
        assert capsys.readouterr().err.endswith("study.db: file is not a database\n")
    assert sorted(p.name for p in damaged.iterdir()) == ["study.db"]
    assert main(["sweep", str(foreign), "--status"]) == 2
    assert (
        capsys.readouterr().err
        == f"fashionnet: error: {foreign}: its storage holds no fashionnet sweep\n"
    )


def test_status_does_not_wait_on_a_summary_that_is_a_fifo(tmp_path, capsys):
    optuna.create_study(study_name="fashionnet", storage=f"sqlite:///{tmp_path / 'study.db'}")
    os.mkfifo(tmp_path / "summary.json")  # no writer: reading it would wait forever
    assert main(["sweep", str(tmp_path), "--status"]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path}: 0 trials")


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_a_spec_that_is_not_a_file_is_refused_without_reading(kind, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    if kind == "fifo":
        os.mkfifo(spec)  # no writer: reading it would wait forever
    else:
        spec.symlink_to("/dev/zero")  # reading it would never end
    assert main(["sweep", "--out", str(tmp_path / "sweep"), "--spec", str(spec)]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_two_local_workers_then_the_same_command_continues(tmp_path, data, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--out", str(out), "--trials", "4", "--workers", "2", *fixed(data)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "best: trial" in printed and "fashionnet train --preset mlp" in printed
    study = study_of(out)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 4
    for t in finished:
        assert {p.name for p in Path(t.user_attrs["folder"]).iterdir()} >= TRIAL_FILES
        assert "test_accuracy" not in json.loads(
            (Path(t.user_attrs["folder"]) / "metrics.json").read_text()
        )  # never tested
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "best").resolve() == Path(summary["folder"]).resolve()
    assert 0 <= summary["test_accuracy"] <= 1 and (out / "best" / "MODEL_CARD.md").exists()
    rows = (out / "leaderboard.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,val_accuracy") and len(rows) == len(study.trials) + 1
    assert "Optimisation history" in (out / "report.html").read_text()
    n = len(study.trials)
    assert main(argv) == 0  # N trials in total: nothing more to run
    assert len(study_of(out).trials) == n
    assert main(["sweep", str(out), "--status"]) == 0
    assert "complete" in capsys.readouterr().out
    for command in (["evaluate"], ["summary"], ["report"], ["predict", "--", "-"]):
        # given the sweep's folder where a run's is expected, the line says where it is
        assert main([command[0], str(out), *command[1:]]) == 2
        err = capsys.readouterr().err
        assert err == f"fashionnet: error: {out}: a sweep's folder, not a run's; its chosen " \
                      f"trial is {out / 'best'}\n"  # fmt: skip


def test_a_sweep_killed_mid_trial_continues_and_counts_nothing_twice(tmp_path, data):
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "fashionnet", "sweep", "--out", str(out), "--trials", "3",
            "--workers", "1", "--prune", "none", *fixed(data, epochs=150)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the event: trial 1 has written its first epoch, so it is in flight
        for line in proc.stdout:  # trial 0's line comes first
            if line.strip().startswith("0 "):
                break
        history = out / "trials" / "0001" / "history.jsonl"
        while not history.exists() and proc.poll() is None:
            os.sched_yield()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    running = [t for t in study_of(out).trials if t.state.name == "RUNNING"]
    assert [t.number for t in running] == [1]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "trials [1] were running when the sweep stopped" in done.stderr
    trials = study_of(out).trials
    states = {t.number: t.state.name for t in trials}
    assert states[1] == "FAIL"
    assert sum(s == "COMPLETE" for s in states.values()) == 3
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert len(retry) == 1 and retry[0].params == trials[1].params


def _as_from_a_terminal():
    """SIGINT as a terminal's job has it: a job started in the background (CI's, for one)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_a_sweep_in_one_line(tmp_path, data):
    """Ctrl-C during a sweep: its workers stop with it, and stderr says so in one line (a
    disabled progress bar's multiprocessing lock, left by each stopped worker, used to add
    the resource tracker's two-line warning about leaked semaphores)."""
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "fashionnet", "sweep", "--out", str(out), "--trials", "200",
            "--workers", "2", "--prune", "none", *fixed(data)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_from_a_terminal)  # fmt: skip
    for line in proc.stdout:  # the event: a trial has finished, so the workers are running
        if line.strip().startswith(("0 ", "1 ")):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    assert (proc.returncode, err) == (130, "fashionnet: interrupted\n")


def _start(cmd, ready):
    """A process, returned once a line containing `ready` appears in its log."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if ready in line:
            return proc
    raise AssertionError(f"{cmd[2:4]} did not start")


def test_a_dask_cluster_that_loses_a_worker_finishes_the_sweep(tmp_path, data):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    scheduler_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    procs = [_start([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                    "Scheduler at")]  # fmt: skip
    try:
        for name in ("w1", "w2"):
            procs.append(_start([*dask, "worker", "--scheduler-file", str(scheduler_file),
                                 "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
                                 "--no-nanny", "--name", name], "Registered to"))  # fmt: skip
        address = json.loads(scheduler_file.read_text())["address"]
        out = tmp_path / "sweep"
        argv = [sys.executable, "-m", "fashionnet", "sweep", "--out", str(out), "--trials", "4",
                "--dask", address, "--prune", "none", *fixed(data, epochs=60)]  # fmt: skip
        sweep = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the event: both workers are inside a trial (trials 0 and 1 have written an epoch)
        first = [out / "trials" / f"{i:04d}" / "history.jsonl" for i in (0, 1)]
        while not all(f.exists() for f in first) and sweep.poll() is None:
            os.sched_yield()
        procs[1].kill()  # worker w1 dies mid-trial
        stdout, stderr = sweep.communicate()
        assert sweep.returncode == 0, stderr
        trials = study_of(out).trials
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        assert len(complete) >= 4 and sum(t.state.name == "FAIL" for t in trials) >= 1
        for t in complete:  # every other trial intact
            assert {p.name for p in Path(t.user_attrs["folder"]).iterdir()} >= TRIAL_FILES
        assert "best: trial" in stdout
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stderr.close()


def test_a_sweep_fine_tunes_a_model_and_keeps_its_layers(tmp_path, data, capsys):
    source = tmp_path / "source"
    assert main(["train", "--data", str(data), "--epochs", "1", "--hidden", "16", "--out",
                 str(source), "--quiet", "--no-report"]) == 0  # fmt: skip
    out = tmp_path / "sweep"
    argv = ["sweep", "--out", str(out), "--trials", "2", "--workers", "1", *fixed(data, epochs=1),
            "--set", f"from_model={source}"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"--from-model {source}" in printed  # the chosen recipe, as a train command
    for t in study_of(out).trials:
        config = json.loads((Path(t.user_attrs["folder"]) / "config.json").read_text())
        assert config["from_model"] == str(source) and config["hidden"] == [16]
    assert json.loads((out / "summary.json").read_text())["test_accuracy"] > 0.5
    assert "Fine-tuned: training started from" in (out / "best" / "MODEL_CARD.md").read_text()
    # a search over the layers the model fixes is refused before any trial
    again = ["sweep", "--out", str(tmp_path / "other"), "--trials", "2", "--workers", "1",
             *fixed(data), "--set", f"from_model={source}",
             "--param", "activation=choice:relu,tanh"]  # fmt: skip
    assert main(again) == 2
    assert capsys.readouterr().err == (f"fashionnet: error: activation is the model's own: a sweep "
                                       f"from {source} keeps its layers\n")  # fmt: skip
    assert not (tmp_path / "other").exists()
