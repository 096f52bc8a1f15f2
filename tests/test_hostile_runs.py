"""What an unlucky user or an attacker brings to a run: special files, full disks, missing
folders, a second writer, names with terminal escapes, a diverging run. One line, the right exit
code, nothing left behind."""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import fit_stopping_at, write_learnable
from fashionnet import _fsutil
from fashionnet._fsutil import FolderLocked, NotARegularFile, lock_folder, open_regular
from fashionnet.checkpoint import save_checkpoint
from fashionnet.cli import main
from fashionnet.model import mlp


def write_dataset(folder):
    """A small random train.npz / test.npz dataset in `folder` (made here)."""
    return write_learnable(folder, 300, 60)


@pytest.fixture
def data_dir(tmp_path):
    return write_dataset(tmp_path / "data")


def train_args(data_dir, out):
    return ["train", "--data", str(data_dir), "--out", str(out), "--epochs", "1", "--hidden", "8",
            "--val-size", "50", "--quiet", "--no-report"]  # fmt: skip


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_open_regular_refuses_what_is_not_a_file_without_reading(kind, tmp_path):
    path = tmp_path / "model.npz"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a plain open() would wait forever
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")  # a plain read() would never end
    else:
        path.mkdir()
    with pytest.raises(NotARegularFile) as info:
        open_regular(path)
    assert info.value.filename == str(path) and "not a regular file" in info.value.strerror
    (tmp_path / "ok").write_bytes(b"x")
    with open_regular(tmp_path / "ok") as f:
        assert f.read() == b"x"


def test_out_under_a_file_or_a_missing_folder_is_one_line(tmp_path, data_dir, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(train_args(data_dir, tmp_path / "afile" / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "afile" in err and "Not a directory" in err
    assert main(["data", "show", str(data_dir), "--out", str(tmp_path / "nodir" / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err == f"fashionnet: error: {tmp_path / 'nodir' / 'g.png'}: No such file or directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "data"]


@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_before_training_starts_leaves_nothing(existing, tmp_path, data_dir,
                                                            monkeypatch, capsys):  # fmt: skip
    out = tmp_path / "run"
    if existing:  # a folder of the user's: it stays, with what was in it, and nothing of ours
        out.mkdir()
        (out / "notes.txt").write_text("mine")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_fsutil.os, "fsync", disk_full)  # config.json is the first write
    assert main(train_args(data_dir, out)) == 2
    err = capsys.readouterr().err  # the line says which file did not fit
    assert err == f"fashionnet: error: {out / 'config.json'}: No space left on device\n"
    if existing:
        assert sorted(p.name for p in out.iterdir()) == [".fashionnet.lock", "notes.txt"]
    else:
        assert not out.exists()


def test_a_run_folder_in_use_is_refused(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert main([*train_args(data_dir, run), "--epochs", "2"]) == 0
    capsys.readouterr()  # two steps on 250 images: its near-chance warning is not this test's
    (run / "model.npz").unlink()  # as if still training: resumable
    fd = lock_folder(run)  # another process training in it (flock is per open file)
    try:
        with pytest.raises(FolderLocked):
            lock_folder(run)
        assert main(["train", "--resume", str(run), "--quiet", "--no-report"]) == 2
        err = capsys.readouterr().err
        assert err == f"fashionnet: error: {run}: in use by another fashionnet run\n"
    finally:
        os.close(fd)
    assert main(["train", "--resume", str(run), "--quiet", "--no-report"]) == 0  # free again


def test_a_second_run_into_a_folder_being_started_takes_nothing_of_the_first(tmp_path, data_dir,
                                                                          capsys):  # fmt: skip
    # the race: run 1 has made the folder and taken its lock but not yet written config.json
    # when run 2 arrives (so run 2 sees no run there); run 1 writes config.json; run 2 must
    # then fail on the lock and leave run 1's files alone
    run = tmp_path / "run"
    run.mkdir()
    fd = lock_folder(run)
    try:
        from fashionnet import runs
        from fashionnet.config import RunConfig

        second = runs.Run(RunConfig.from_json(small_config(data_dir)), run)
        (run / "config.json").write_text("run 1's")
        with pytest.raises(FolderLocked):
            second.train(progress=False)
        assert (run / "config.json").read_text() == "run 1's"
    finally:
        os.close(fd)


def test_stale_temp_files_are_only_fashionnets_own(tmp_path, data_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".notes.tmp").write_text("a user's file")
    (run / ".last.npz.fashionnet-abc123.tmp").write_bytes(b"left by a killed save")
    assert main(train_args(data_dir, run)) == 0
    assert (run / ".notes.tmp").read_text() == "a user's file"
    assert not (run / ".last.npz.fashionnet-abc123.tmp").exists()


def test_class_names_with_terminal_escapes_are_printed_escaped(tmp_path, capsys):
    names = [f"class{i}" for i in range(9)] + ["\x1b]0;pwned\x07\x1b[2J"]
    model = mlp(784, [8], 10, rng=np.random.default_rng(0))
    save_checkpoint(tmp_path / "m.npz", model, metadata={"class_names": names})
    images = np.zeros((3, 28, 28), np.uint8)
    np.savez(tmp_path / "x.npz", x=images, y=np.zeros(3, np.int64))
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "x.npz"), "--top-k", "10"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and r"\x1b]0;pwned\x07\x1b[2J" in out


def test_a_file_named_with_terminal_escapes_is_named_escaped_in_an_error(tmp_path, capsys):
    model = tmp_path / "m.npz"
    save_checkpoint(model, mlp(784, [8], 10, rng=np.random.default_rng(0)))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cut\x1b]0;pwned\x07\x1b[2J.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # truncated
    assert main(["predict", str(model), str(photos)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and r"cut\x1b]0;pwned\x07\x1b[2J.png" in err
    assert err.count("\n") == 1


def test_a_diverging_run_is_one_line_without_numpy_warnings(tmp_path, data_dir):
    args = [*train_args(data_dir, tmp_path / "run"), "--optimizer", "sgd", "--lr", "10",
            "--momentum", "0.99", "--no-batch-norm", "--hidden", "512,512",
            "--label-smoothing", "0", "--epochs", "10"]  # fmt: skip
    result = subprocess.run([sys.executable, "-W", "error", "-m", "fashionnet", *args],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1 and "training diverged" in result.stderr


@pytest.mark.parametrize("damage", ["not json", '{"epoch": 1}', "[1, 2]"])
def test_a_damaged_history_is_one_line_naming_the_file(damage, tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert main(train_args(data_dir, run)) == 0
    (run / "history.jsonl").write_text(damage + "\n")
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run / 'history.jsonl'}: line 1" in err


def test_a_run_folder_from_elsewhere_cannot_write_through_its_links(tmp_path, data_dir, capsys):
    """A shared run folder whose report/ holds links named as the report's files: the report
    replaces the links and leaves the files they point at alone."""
    run, mine = tmp_path / "run", tmp_path / "bashrc"
    assert main(train_args(data_dir, run)) == 0
    mine.write_text("the user's own file\n")
    (run / "report").mkdir()
    for name in ("report.html", "report.md", "learning_curves.png"):
        (run / "report" / name).symlink_to(mine)
    assert main(["report", str(run), "--data", str(data_dir)]) == 0, capsys.readouterr().err
    assert mine.read_text() == "the user's own file\n"
    for name in ("report.html", "report.md", "learning_curves.png"):
        path = run / "report" / name
        assert not path.is_symlink() and path.stat().st_size > 100
    elsewhere = tmp_path / "elsewhere"  # report/ itself a link: nothing is written through it
    elsewhere.mkdir()
    shutil.rmtree(run / "report")
    (run / "report").symlink_to(elsewhere)
    capsys.readouterr()
    assert main(["report", str(run), "--data", str(data_dir)]) == 2
    assert capsys.readouterr().err == (
        f"fashionnet: error: {run / 'report'}: a link, not the run's own folder; remove it\n"
    )
    assert list(elsewhere.iterdir()) == []


def test_bad_usage_is_two_lines_at_most(capsys):
    for argv in (["train", "--bogus"], ["train", "--lr", "x"], ["frobnicate"], ["data"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") <= 2 and err.startswith("usage: "), err


def test_config_json_is_read_within_bounds(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert main(train_args(data_dir, run)) == 0
    (run / "model.npz").unlink()
    (run / "config.json").write_text(json.dumps({"pad": "x" * (2 << 20)}))
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "not a run configuration" in capsys.readouterr().err


def rewrite_checkpoint(path, edit_meta=lambda m: None, edit_arrays=lambda a: None):
    """A checkpoint rewritten with its metadata and arrays edited, its arrays table kept true,
    so that only the meaning of what was edited can be wrong."""
    import io
    import zipfile

    from fashionnet.checkpoint import read_checkpoint

    meta, arrays = read_checkpoint(path)
    edit_meta(meta)
    edit_arrays(arrays)
    meta["arrays"] = {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()}
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in {"metadata": np.frombuffer(json.dumps(meta).encode(), np.uint8),
                            **arrays}.items():  # fmt: skip
            buf = io.BytesIO()
            np.save(buf, array, allow_pickle=False)
            zf.writestr(f"{name}.npy", buf.getvalue())


def drop(key):
    return lambda d: d.pop(key)


DAMAGED_RUNS = {
    "config-batch-size-string": ("config", lambda c: c.update(batch_size="256")),
    "config-without-batch-size": ("config", drop("batch_size")),
    "config-nested-100k": ("config-text", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    "config-not-json": ("config-text", "{oops"),
    "no-history": ("meta", lambda m: m["train_state"].pop("history")),
    "no-optimizer": ("meta", drop("optimizer")),
    "rng-is-5": ("meta", lambda m: m.update(rng=5)),
    "rng-of-another-kind": ("meta", lambda m: m["rng"].update(bit_generator="MT19937")),
    "epoch-negative": ("meta", lambda m: m["train_state"].update(epoch=-1)),
    "epoch-a-string": ("meta", lambda m: m["train_state"].update(epoch="1")),
    "unknown-state-key": ("meta", lambda m: m["train_state"].update(surprise=1)),
    "optimizer-of-another-type": ("meta", lambda m: m["optimizer"].update(type="SGD")),
    "buffer-missing": ("arrays", lambda a: a.pop(next(k for k in a if k.startswith("buffer.")))),
    "unknown-array": ("arrays", lambda a: a.update({"extra.x": np.zeros(3)})),
    "order-floats": ("arrays", lambda a: a.update({"train.order": np.arange(250.0)})),
    "order-out-of-range": ("arrays", lambda a: a.update({"train.order": np.arange(250) + 9})),
    "order-short": ("arrays", lambda a: a.update({"train.order": np.arange(10)})),
    "nan-in-moments": ("arrays", lambda a: a["optim.m"].__setitem__(0, np.nan)),
}


@pytest.mark.parametrize("damage", DAMAGED_RUNS)
def test_a_damaged_run_folder_refuses_to_resume_in_one_line(damage, tmp_path, data_dir, capsys):
    run = damaged_run(tmp_path / "run", data_dir, damage)
    before = sorted(p.name for p in run.iterdir())
    assert main(["train", "--resume", str(run), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(run) in err, err
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written, nothing removed


def damaged_run(run, data_dir, damage):
    """A run folder stopped after step 3 (so resumable), then damaged as DAMAGED_RUNS says."""
    from fashionnet import runs
    from fashionnet.config import RunConfig

    real_fit, runs.fit = runs.fit, fit_stopping_at(3)
    try:
        result = runs.Run(RunConfig.from_json(small_config(data_dir)), run).train(progress=False)
    finally:
        runs.fit = real_fit
    assert result.interrupted == "SIGINT"
    where, edit = DAMAGED_RUNS[damage]
    if where == "config":
        config = json.loads((run / "config.json").read_text())
        edit(config)
        (run / "config.json").write_text(json.dumps(config))
    elif where == "config-text":
        (run / "config.json").write_text(edit)
    elif where == "meta":
        rewrite_checkpoint(run / "last.npz", edit_meta=edit)
    else:
        rewrite_checkpoint(run / "last.npz", edit_arrays=edit)
    return run


def small_config(data_dir):
    from fashionnet.config import PRESETS, replace

    config = replace(PRESETS["mlp"], data=str(data_dir), hidden=(8,), epochs=2, val_size=50,
                     batch_size=32, optimizer="adam")  # fmt: skip
    return config.to_json()
