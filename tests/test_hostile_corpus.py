"""Every broken or hostile input fashionnet knows of, run through the real command in its own
process, one parametrized test: the exit code, no traceback, at most two lines on stderr, the
file named, no file left behind, and the process's own peak memory and CPU time as the kernel
counts them (os.wait4), never a clock. The cases come from this file and from the corpora of
the data, checkpoint and run-folder tests."""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import test_data_corpus
import test_hostile_checkpoints
import test_hostile_runs
from fashionnet.checkpoint import save_checkpoint
from fashionnet.model import mlp

MAX_RSS_BYTES = 1 << 30  # the bound: every case under 1 GB
MAX_CPU_S = 10.0  # CPU seconds (user + system) of the case's process, from its rusage
# a hang guard only: every case ends by itself in about a second; a regression that blocks
# (a FIFO read) fails here instead of hanging the suite
HANG_GUARD_S = 300


@dataclass
class Case:
    argv: list[str]
    code: int = 2
    named: str | None = None  # a path the message must name
    stdin: bytes = b""
    forbidden_out: bytes = b""  # bytes that must not reach stdout (terminal escapes)


@dataclass
class Setup:
    """What every case may use: a good model, a tiny dataset, a folder for its own files."""

    root: Path
    data: Path
    model: Path
    made: list[Path] = field(default_factory=list)


CASES: dict[str, tuple[str, Callable[[Setup], Case]]] = {}


def case(category: str, name: str) -> Callable[[Callable[[Setup], Case]], None]:
    def register(make: Callable[[Setup], Case]) -> None:
        CASES[f"{category}: {name}"] = (category, make)

    return register


def special(path: Path, kind: str) -> Path:
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


def _class_folders(root: Path) -> Path:
    """Photos sorted by class: folders Trouser/ and Bag/ of two 28x28 PNGs each."""
    from PIL import Image

    for name in ("Trouser", "Bag"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((28, 28), 60 * i + 30, np.uint8)).save(root / name / f"{i}.png")
    return root


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height gray pixels, with (almost) no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


# --- the data corpus: malformed IDX, CSV and NPZ datasets, given to train
for _name, _make in test_data_corpus.CORPUS.items():

    def _data_case(s: Setup, make: Callable[[Path], Path] = _make) -> Case:
        data = make(s.root)
        named = data if data.is_dir() or not data.exists() else data.parent
        return Case(["train", "--data", str(data), "--epochs", "1", "--val-size", "1",
                     "--out", str(s.root / "run"), "--quiet"], named=str(named))  # fmt: skip

    case("data", _name)(_data_case)

# --- the checkpoint corpus: hostile model files, given to evaluate
with tempfile.TemporaryDirectory() as _tmp:
    _valid = Path(_tmp) / "valid.npz"
    save_checkpoint(_valid, mlp(784, [8], 10, rng=np.random.default_rng(0)))
    _MODEL_FILES = sorted(test_hostile_checkpoints.build_corpus(_valid, Path(_tmp), Path(_tmp)))

for _file in _MODEL_FILES:

    def _model_case(s: Setup, name: str = _file) -> Case:
        valid = s.root / "valid.npz"
        save_checkpoint(valid, mlp(784, [8], 10, rng=np.random.default_rng(0)))
        path = test_hostile_checkpoints.build_corpus(valid, s.root, s.root / "CANARY")[name]
        return Case(["evaluate", str(path), "--data", str(s.data)], named=str(path))

    case("model file", _file)(_model_case)

# --- damaged run folders, given to train --resume
for _damage in test_hostile_runs.DAMAGED_RUNS:

    def _run_case(s: Setup, damage: str = _damage) -> Case:
        run = test_hostile_runs.damaged_run(s.root / "run", s.data, damage)
        return Case(["train", "--resume", str(run), "--quiet", "--no-report"], named=str(run))

    case("run folder", _damage)(_run_case)

# --- special files wherever a file is read
for _kind in ("fifo", "dev-zero"):

    @case("special file", f"{_kind} as the model")
    def _(s: Setup, kind: str = _kind) -> Case:
        path = special(s.root / "model.npz", kind)
        return Case(["evaluate", str(path), "--data", str(s.data)], named=str(path))

    @case("special file", f"{_kind} as the model to fine-tune")
    def _(s: Setup, kind: str = _kind) -> Case:
        path = special(s.root / "model.npz", kind)
        return Case(["train", "--from-model", str(path), "--data", str(s.data), "--out",
                     str(s.root / "run")], named=str(path))  # fmt: skip

    @case("special file", f"{_kind} as the training file")
    def _(s: Setup, kind: str = _kind) -> Case:
        path = special(s.data / "train.npz", kind)
        return Case(["train", "--data", str(path), "--out", str(s.root / "run")], named=str(path))

    @case("special file", f"{_kind} as classes.txt (harmless: only a regular file is read)")
    def _(s: Setup, kind: str = _kind) -> Case:
        special(s.data / "classes.txt", kind)
        return Case(["data", "info", str(s.data)], code=0)

    @case("special file", f"{_kind} as config.json")
    def _(s: Setup, kind: str = _kind) -> Case:
        run = test_hostile_runs.damaged_run(s.root / "run", s.data, "no-history")
        path = special(run / "config.json", kind)
        return Case(["train", "--resume", str(run), "--quiet"], named=str(path))

    @case("special file", f"{_kind} as a photo to predict")
    def _(s: Setup, kind: str = _kind) -> Case:
        path = special(s.root / "photo.png", kind)
        return Case(["predict", str(s.model), str(path)], named=str(path))

    # an output that is there and is not a file: the atomic rename would have put a file in
    # its place (as root, passing /dev/null replaced the system's /dev/null)
    @case("special file", f"{_kind} as the file export writes")
    def _(s: Setup, kind: str = _kind) -> Case:
        path = special(s.root / "weights.safetensors", kind)
        return Case(["export", str(s.model), str(path), "--format", "safetensors"], named=str(path))

    @case("special file", f"{_kind} as the picture data show writes")
    def _(s: Setup, kind: str = _kind) -> Case:
        path = special(s.root / "grid.png", kind)
        return Case(["data", "show", str(s.data), "--out", str(path)], named=str(path))

    @case("special file", f"{_kind} among the photos data split copies")
    def _(s: Setup, kind: str = _kind) -> Case:
        photos = _class_folders(s.root / "photos")
        path = special(photos / "Trouser" / "2.png", kind)
        return Case(["data", "split", str(photos), str(s.root / "split")], named=str(path))

    @case("special file", f"{_kind} among the photos evaluate reads by class")
    def _(s: Setup, kind: str = _kind) -> Case:
        photos = _class_folders(s.root / "photos")
        path = special(photos / "Trouser" / "2.png", kind)
        return Case(["evaluate", str(s.model), "--data", str(photos)], named=str(path))

    @case("special file", f"{_kind} as history.jsonl")
    def _(s: Setup, kind: str = _kind) -> Case:
        run = s.root / "run"
        assert test_hostile_runs.main(test_hostile_runs.train_args(s.data, run)) == 0
        path = special(run / "history.jsonl", kind)
        return Case(["report", str(run)], named=str(path))


# --- pictures: decompression bombs and things that are not pictures
_PICTURES = {
    "png declaring 30000x30000": png_header(30000, 30000),
    "png declaring 65535x65535": png_header(65535, 65535),
    "bmp header declaring 60000x60000": b"BM"
    + struct.pack("<IHHI", 62, 0, 0, 62)
    + struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 8, 0, 0, 0, 0, 0, 0),
    "gif declaring 65535x65535": b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\0\0\0;",
    "text named .png": b"this is not a picture\n",
    "png cut after its header": png_header(28, 28)[:40],
    "empty .jpg": b"",
}
for _name, _raw in _PICTURES.items():

    @case("picture", _name)
    def _(s: Setup, raw: bytes = _raw, name: str = _name) -> Case:
        path = s.root / ("photo.jpg" if name.endswith(".jpg") else "photo.png")
        path.write_bytes(raw)
        return Case(["predict", str(s.model), str(path)], named=str(path))


# --- other inputs to predict
@case("predict input", "an IDX label file")
def _(s: Setup) -> Case:
    path = s.root / "t10k-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes(3))
    return Case(["predict", str(s.model), str(path)], named=str(path))


@case("predict input", "npz whose float64 x declares 150 million values")
def _(s: Setup) -> Case:
    import zipfile

    header = test_hostile_checkpoints.npy(np.zeros(4, np.float64)).replace(b"(4,)", b"(150000000,)")
    path = s.root / "big.npz"
    with zipfile.ZipFile(path, "w") as zf:  # the header alone: a reader that inflates fails
        zf.writestr("x.npy", header)
        zf.writestr("y.npy", test_hostile_checkpoints.npy(np.zeros(3, np.int64)))
    return Case(["predict", str(s.model), str(path)], named=str(path))


@case("predict input", "unknown kind of file")
def _(s: Setup) -> Case:
    path = s.root / "notes.xyz"
    path.write_text("x")
    return Case(["predict", str(s.model), str(path)], named=str(path))


@case("predict input", "a folder")
def _(s: Setup) -> Case:
    return Case(["predict", str(s.model), str(s.root)], named=str(s.root))


@case("predict input", "garbage on stdin")
def _(s: Setup) -> Case:
    return Case(["predict", str(s.model), "-"], stdin=bytes(range(256)) * 8, named="stdin")


@case("predict input", "96 MB of CSV rows on stdin (harmless: predicted)")
def _(s: Setup) -> Case:
    row = b",".join([b"0"] * 783 + [b"255"]) + b"\n"
    return Case(["predict", str(s.model), "-"], code=0, stdin=row * (96_000_000 // len(row)))


@case("predict input", "class names with terminal escapes (harmless: printed escaped)")
def _(s: Setup) -> Case:
    names = [f"class{i}" for i in range(9)] + ["\x1b]0;pwned\x07\x1b[2J"]
    model = s.root / "escapes.npz"
    save_checkpoint(model, mlp(784, [8], 10, rng=np.random.default_rng(0)),
                    metadata={"class_names": names})  # fmt: skip
    np.savez(s.root / "x.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.zeros(2, np.int64))
    return Case(["predict", str(model), str(s.root / "x.npz"), "--top-k", "10"], code=0,
                forbidden_out=b"\x1b")  # fmt: skip


# --- datasets that would inflate or allocate before refusing
@case("dataset size", "gzip IDX with a bad magic over 1.2 GB of zeros")
def _(s: Setup) -> Case:
    folder = s.root / "idx"
    test_data_corpus.idx_folder(s.root)  # a complete folder, then one file replaced
    target = folder / (test_data_corpus.IMAGES + ".gz")
    with gzip.open(target, "wb", compresslevel=1) as f:
        f.write(b"\x01\x02\x08\x03")
        zeros = bytes(1 << 24)
        for _ in range(72):  # 1.2 GB inflated, a 1.2 MB file
            f.write(zeros)
    return Case(["data", "info", str(folder)], named=str(target))


@case("dataset size", "gzip CSV of one row repeated: 2 MB inflating to 300 MB (and on)")
def _(s: Setup) -> Case:
    folder = s.root / "csv"
    folder.mkdir()
    row = b"1," + b",".join([b"0"] * 784) + b"\n"
    with gzip.open(folder / "fm_train.csv.gz", "wb", compresslevel=1) as f:
        for _ in range(24):
            f.write(row * 8000)
    with gzip.open(folder / "fm_test.csv.gz", "wb") as f:
        f.write(row)
    target = folder / "fm_train.csv.gz"
    return Case(["data", "info", str(target)], named=str(target))


@case("dataset size", "data show of a million per class")
def _(s: Setup) -> Case:
    return Case(["data", "show", str(s.data), "--per-class", "1000000", "--out",
                 str(s.root / "g.png")], named="--per-class")  # fmt: skip


# --- bad usage: two lines at most, exit 2
_USAGE = {  # the command line, and what the message must name
    "train --epochs 0": (["train", "--epochs", "0"], "--epochs"),
    "train --lr -1": (["train", "--lr", "-1"], "--lr"),
    "train --hidden 10000000000": (["train", "--hidden", "10000000000"], "--hidden"),
    "train --hidden x": (["train", "--hidden", "x"], "--hidden"),
    "train --stages 32/x": (["train", "--stages", "32/x"], "--stages"),
    "train --preset huge": (["train", "--preset", "huge"], "--preset"),
    "train --bogus": (["train", "--bogus"], "--bogus"),
    "an unknown command": (["frobnicate"], "frobnicate"),
    "data without an action": (["data"], "ACTION"),
    "export without --format": (["export", "m.npz", "out.onnx"], "--format"),
    "train --cycle-epochs with cosine": (
        ["train", "--schedule", "cosine", "--cycle-epochs", "2"],
        "--cycle-epochs",
    ),
    "train --resume with flags": (["train", "--resume", "somewhere", "--epochs", "3"], "--epochs"),
}
for _name, (_argv, _named) in _USAGE.items():

    @case("usage", _name)
    def _(s: Setup, argv: list[str] = _argv, named: str = _named) -> Case:
        return Case(list(argv), named=named)


# --- the operating system says no
@case("os", "train --out under a file")
def _(s: Setup) -> Case:
    (s.root / "afile").write_text("x")
    out = s.root / "afile" / "run"
    return Case(test_hostile_runs.train_args(s.data, out), named=str(out))


@case("os", "data show into a missing folder")
def _(s: Setup) -> Case:
    out = s.root / "nodir" / "g.png"
    return Case(["data", "show", str(s.data), "--out", str(out)], named=str(out))


@case("os", "export into a missing folder")
def _(s: Setup) -> Case:
    out = s.root / "nodir" / "m.safetensors"
    return Case(["export", str(s.model), "--format", "safetensors", str(out)], named=str(out))


@case("os", "data convert under a file")
def _(s: Setup) -> Case:
    (s.root / "afile").write_text("x")
    out = s.root / "afile" / "converted"
    return Case(["data", "convert", str(s.data), str(out), "--format", "csv"], named=str(out))


@case("os", "download into a file")
def _(s: Setup) -> Case:
    (s.root / "afile").write_text("x")
    return Case(["data", "download", "--dir", str(s.root / "afile"), "--url",
                 "http://127.0.0.1:9/"], named=str(s.root / "afile"))  # fmt: skip


# --- reports of damaged runs
for _damage in ("not json", '{"epoch": 1}', "[1, 2]"):

    @case("report", f"history.jsonl holding {_damage}")
    def _(s: Setup, damage: str = _damage) -> Case:
        run = s.root / "run"
        assert test_hostile_runs.main(test_hostile_runs.train_args(s.data, run)) == 0
        (run / "history.jsonl").write_text(damage + "\n")
        return Case(["report", str(run)], named=str(run / "history.jsonl"))


@case("report", "a folder without a model")
def _(s: Setup) -> Case:
    (s.root / "empty").mkdir()
    return Case(["report", str(s.root / "empty")], named=str(s.root / "empty"))


@case("training", "a diverging run (exit 3, no NumPy warnings)")
def _(s: Setup) -> Case:
    return Case([*test_hostile_runs.train_args(s.data, s.root / "run"), "--optimizer", "sgd",
                 "--lr", "10", "--momentum", "0.99", "--no-batch-norm", "--hidden", "512,512",
                 "--label-smoothing", "0", "--epochs", "10"], code=3)  # fmt: skip


SEEN: dict[str, tuple[str, int, float]] = {}  # case -> (category, peak RSS bytes, CPU seconds)


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 150


# Linux counts a child's peak RSS from the memory of the process it was forked from, and the
# pytest process can be large (PyTorch, loaded by other tests): so a small launcher, started
# fresh, spawns the case and reports that grandchild's own exit code and rusage
LAUNCHER = """
import json, os, sys
argv = [sys.executable, "-m", "fashionnet", *sys.argv[2:]]
pid = os.posix_spawn(sys.executable, argv, os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024,
               usage.ru_utime + usage.ru_stime], f)
"""


def run_measured(argv: list[str], stdin: bytes, cwd: Path) -> tuple[int, bytes, bytes, int, float]:
    """(exit code, stdout, stderr, peak RSS in bytes, CPU seconds) of `fashionnet ARGV`, the
    last two from the kernel's accounting of that one process."""
    out, err, report = cwd / ".case.out", cwd / ".case.err", cwd / ".case.json"
    with open(out, "wb") as o, open(err, "wb") as e, tempfile.TemporaryFile() as i:
        i.write(stdin)
        i.seek(0)
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(report), *argv], cwd=cwd,
                                stdin=i, stdout=o, stderr=e, start_new_session=True)  # fmt: skip
        guard = threading.Timer(HANG_GUARD_S, os.killpg, (proc.pid, signal.SIGKILL))
        guard.start()
        try:
            proc.wait()
        finally:
            guard.cancel()
            if proc.poll() is None:  # interrupted: the case and its launcher go together
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, f"the case was killed ({proc.returncode}): it hung"
    code, rss, cpu = json.loads(report.read_text())
    result = (code, out.read_bytes(), err.read_bytes(), rss, cpu)
    for path in (out, err, report):
        path.unlink()
    return result


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if not p.name.startswith(".case.")}


@pytest.mark.parametrize("name", CASES)
def test_every_hostile_input_is_refused_in_one_line(name, tmp_path):
    category, make = CASES[name]
    data = test_hostile_runs.write_dataset(tmp_path / "data")
    model = tmp_path / "model.npz"
    save_checkpoint(model, mlp(784, [8], 10, rng=np.random.default_rng(0)))
    c = make(Setup(tmp_path, data, model))
    before = files_under(tmp_path)
    code, out, err, rss, cpu = run_measured(c.argv, c.stdin, tmp_path)
    SEEN[name] = (category, rss, cpu)
    text = err.decode(errors="replace")
    assert code == c.code, text
    assert b"Traceback" not in err and text.count("\n") <= 2, text
    if c.code == 2:
        assert "error:" in text and (c.named is None or c.named in text), text
    if c.forbidden_out:
        assert c.forbidden_out not in out
    if c.code == 2:  # a refusal leaves nothing behind
        assert files_under(tmp_path) == before, files_under(tmp_path) - before
    assert rss < MAX_RSS_BYTES, f"peak RSS {rss / 2**20:.0f} MiB"
    assert cpu < MAX_CPU_S, f"{cpu:.1f} s of CPU"


def test_zz_what_the_corpus_measured(capsys):
    """Prints the count per category and the largest peak memory (in the issue's note)."""
    if not SEEN:
        pytest.skip("the corpus cases did not run in this session")
    counts = Counter(category for category, _, _ in SEEN.values())
    worst = max(SEEN, key=lambda n: SEEN[n][1])
    with capsys.disabled():
        print(f"\nhostile corpus: {len(SEEN)} cases; " + ", ".join(
            f"{c} {n}" for c, n in sorted(counts.items())))  # fmt: skip
        print(f"largest peak RSS {SEEN[worst][1] / 2**20:.0f} MiB ({worst}); "
              f"most CPU {max(cpu for _, _, cpu in SEEN.values()):.1f} s")  # fmt: skip
