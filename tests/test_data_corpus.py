"""Malformed data in every format: one line naming the file (and line or byte), exit 2, no
traceback, no run folder left behind. Plus random byte mutations that must never crash."""

import gzip
import io
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import idx_bytes, write_idx_folder
from fashionnet.cli import main
from fashionnet.data import DataError, load_fashion_mnist, read_csv, read_idx, read_npz

RNG = np.random.default_rng(0)
GOOD_ROW = "3," + ",".join(["0"] * 783 + ["255"])
CSV_HEADER = "label," + ",".join(f"pixel{i}" for i in range(1, 785))


def idx_folder(root: Path, replace: dict[str, bytes] | None = None, gz: bool = True) -> Path:
    folder = root / "idx"
    write_idx_folder(folder, np.random.default_rng(1), n_train=12, n_test=6, gz=gz)
    for name, content in (replace or {}).items():
        for old in folder.glob(name + "*"):
            old.unlink()
        (folder / name).write_bytes(content)
    return folder


def header(code: int, dims: tuple[int, ...]) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def csv_pair(root: Path, train_text: str | bytes, classes: str | None = None) -> Path:
    folder = root / "csv"
    folder.mkdir()
    train = folder / "fm_train.csv"
    train.write_bytes(train_text.encode() if isinstance(train_text, str) else train_text)
    (folder / "fm_test.csv").write_text(f"{CSV_HEADER}\n{GOOD_ROW}\n")
    if classes is not None:
        (folder / "classes.txt").write_text(classes)
    return train


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_pair(root: Path, train: bytes) -> Path:
    folder = root / "npz"
    folder.mkdir()
    good = npz_bytes(x=np.zeros((4, 28, 28), np.uint8), y=np.array([0, 1, 2, 3]))
    (folder / "fm_test.npz").write_bytes(good)
    (folder / "fm_train.npz").write_bytes(train)
    return folder / "fm_train.npz"


IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
ROWS = f"{CSV_HEADER}\n{GOOD_ROW}\n"
X = np.zeros((4, 28, 28), np.uint8)
Y = np.array([0, 1, 2, 3])

CORPUS = {
    # IDX
    "idx truncated gz": lambda r: idx_folder(r, {IMAGES + ".gz": gzip.compress(b"x" * 5000)[:40]}),
    "idx not gzip": lambda r: idx_folder(r, {IMAGES + ".gz": b"plain bytes, not gzip"}),
    "idx empty": lambda r: idx_folder(r, {IMAGES: b""}),
    "idx wrong magic": lambda r: idx_folder(r, {IMAGES: b"\x01\x02\x08\x03" + b"\x00" * 20}),
    "idx unknown type code": lambda r: idx_folder(r, {IMAGES: header(0x07, (1, 1, 1)) + b"\x00"}),
    "idx zero dimensions": lambda r: idx_folder(r, {IMAGES: b"\x00\x00\x08\x00"}),
    "idx header cut": lambda r: idx_folder(r, {IMAGES: b"\x00\x00\x08\x03\x00\x00"}),
    "idx too few bytes": lambda r: idx_folder(r, {IMAGES: header(8, (12, 28, 28)) + b"\x00" * 100}),
    "idx too many bytes": lambda r: idx_folder(r, {IMAGES: header(8, (1, 2, 2)) + b"\x00" * 5}),
    "idx declares 10^12 images": lambda r: idx_folder(
        r, {IMAGES: header(8, (10**6, 10**3, 10**3))}
    ),
    "idx float images": lambda r: idx_folder(r, {IMAGES: header(0x0D, (12, 2, 2)) + b"\x00" * 192}),
    "idx labels 2-d": lambda r: idx_folder(r, {LABELS: header(8, (12, 1)) + bytes(12)}),
    "idx count mismatch": lambda r: idx_folder(r, {LABELS: idx_bytes(np.zeros(11, np.uint8))}),
    "idx label above classes": lambda r: _with_classes(
        idx_folder(r, {LABELS: idx_bytes(np.full(12, 7, np.uint8))}), "a\nb\nc\n"
    ),
    "idx test size differs": lambda r: idx_folder(
        r, {"t10k-images-idx3-ubyte": idx_bytes(np.zeros((6, 27, 27), np.uint8))}
    ),
    "idx images is a folder": lambda r: _images_folder(idx_folder(r)),
    "idx raw garbage": lambda r: idx_folder(r, {IMAGES: bytes(range(256))}, gz=False),
    # CSV
    "csv empty": lambda r: csv_pair(r, ""),
    "csv header only": lambda r: csv_pair(r, CSV_HEADER + "\n"),
    "csv short row": lambda r: csv_pair(r, ROWS + "1,2,3\n"),
    "csv long row": lambda r: csv_pair(r, ROWS + GOOD_ROW + ",7\n"),
    "csv non-numeric cell": lambda r: csv_pair(
        r, ROWS + GOOD_ROW.replace(",0,", ",zero,", 1) + "\n"
    ),
    "csv pixel 300": lambda r: csv_pair(r, ROWS + GOOD_ROW[:-3] + "300\n"),
    "csv pixel 99999": lambda r: csv_pair(r, ROWS + GOOD_ROW[:-3] + "99999\n"),
    "csv pixel -1": lambda r: csv_pair(r, ROWS + GOOD_ROW.replace(",0,", ",-1,", 1) + "\n"),
    "csv label -1": lambda r: csv_pair(r, ROWS + "-" + GOOD_ROW + "\n"),
    "csv label above classes": lambda r: csv_pair(r, ROWS, classes="a\nb\n"),
    "csv mixed widths": lambda r: csv_pair(r, ROWS + GOOD_ROW + "\n" + "1,2\n" + GOOD_ROW + "\n"),
    "csv not square": lambda r: csv_pair(r, "1,2,3,4,5,6\n"),
    "csv binary garbage": lambda r: csv_pair(r, bytes(range(256)) * 4),
    "csv floats": lambda r: csv_pair(r, ROWS + GOOD_ROW.replace(",0,", ",0.5,", 1) + "\n"),
    "csv blank line inside": lambda r: csv_pair(r, ROWS + "\n" + GOOD_ROW + "\n"),
    "csv only commas": lambda r: csv_pair(r, ",,,,\n,,,,\n"),
    "csv semicolons": lambda r: csv_pair(r, ROWS.replace(",", ";")),
    "csv utf-16": lambda r: csv_pair(r, ROWS.encode("utf-16")),
    "csv empty classes.txt": lambda r: csv_pair(r, ROWS, classes="\n\n"),
    "csv a class named twice": lambda r: csv_pair(r, ROWS, classes="a\nb\na\nc\n"),
    "csv no test file": lambda r: _drop_test(csv_pair(r, ROWS)),
    # NPZ
    "npz without y": lambda r: npz_pair(r, npz_bytes(x=X)),
    "npz float x": lambda r: npz_pair(r, npz_bytes(x=X.astype(np.float32), y=Y)),
    "npz 4-d x": lambda r: npz_pair(r, npz_bytes(x=X[:, None], y=Y)),
    "npz 2-d y": lambda r: npz_pair(r, npz_bytes(x=X, y=Y[:, None])),
    "npz count mismatch": lambda r: npz_pair(r, npz_bytes(x=X, y=Y[:3])),
    "npz object y": lambda r: npz_pair(r, npz_bytes(x=X, y=np.array([0, "a", None, 1], object))),
    "npz not a zip": lambda r: npz_pair(r, b"PK but not really a zip file"),
    "npz that is an npy": lambda r: npz_pair(r, _npy(X)),
    "npz that is a pickle": lambda r: npz_pair(r, __import__("pickle").dumps({"x": X, "y": Y})),
    "npz truncated": lambda r: npz_pair(r, npz_bytes(x=X, y=Y)[:300]),
    "npz non-square": lambda r: npz_pair(r, npz_bytes(x=np.zeros((4, 5, 7), np.uint8), y=Y)),
    "npz string labels": lambda r: npz_pair(r, npz_bytes(x=X, y=np.array(["a", "b", "c", "d"]))),
    # anything else
    "unknown file type": lambda r: _file(r / "fm_train.bmp", b"BM...."),
    "empty folder": lambda r: _folder(r / "empty"),
    "missing path": lambda r: r / "does-not-exist",
}


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _with_classes(folder: Path, text: str) -> Path:
    (folder / "classes.txt").write_text(text)
    return folder


def _images_folder(folder: Path) -> Path:
    (folder / (IMAGES + ".gz")).unlink()
    (folder / IMAGES).mkdir()
    return folder


def _drop_test(train: Path) -> Path:
    (train.parent / "fm_test.csv").unlink()
    return train


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def test_the_corpus_has_at_least_40_files():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("make", CORPUS.values(), ids=CORPUS.keys())
def test_malformed_data_is_one_line_exit_2_and_leaves_nothing(make, tmp_path, capsys):
    data = make(tmp_path)
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--epochs", "1", "--val-size", "1", "--out",
                 str(out), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("fashionnet: error: ") and "Traceback" not in err
    named = data if data.is_dir() or not data.exists() else data.parent
    assert str(named) in err  # the message says where
    assert not out.exists()


def test_a_good_8x8_csv_trains_and_evaluates(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 20)):
        labels = rng.integers(0, 3, n)
        pixels = rng.integers(0, 17, (n, 64)) + labels[:, None] * 60  # learnable
        rows = [",".join(map(str, [lab, *row])) for lab, row in zip(labels, pixels, strict=True)]
        (tmp_path / f"digits_{split}.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.txt").write_text("low\nmid\nhigh\n")
    out, data = tmp_path / "run", str(tmp_path / "digits_train.csv")
    # 30 steps (one a epoch): a rate 10x the default's learns this well-separated data in them
    argv = ["--val-size", "10", "--epochs", "30", "--lr", "0.03", "--hidden", "16", "--out",
            str(out), "--quiet"]  # fmt: skip
    assert main(["train", "--data", data, *argv]) == 0
    assert main(["evaluate", str(out), "--data", data]) == 0
    table = capsys.readouterr().out
    assert "high" in table and "test accuracy 1.0000" in table


def test_npz_datasets_load(tmp_path):
    x = np.arange(4 * 16, dtype=np.uint8).reshape(4, 16)
    (tmp_path / "train.npz").write_bytes(npz_bytes(x=x, y=Y))
    split = read_npz(tmp_path / "train.npz")
    assert split.images.shape == (4, 4, 4)
    np.testing.assert_array_equal(split.labels, Y)


# ---------------------------------------------------------------- random mutations


def valid_idx() -> bytes:
    return idx_bytes(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))


def valid_csv() -> bytes:
    return b"label,p1,p2,p3,p4\n1,0,255,3,4\n0,9,8,7,6\n"


mutations = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6)


def mutate(raw: bytes, changes: list[tuple[int, int]], cut: int | None) -> bytes:
    data = bytearray(raw)
    for pos, value in changes:
        if data:
            data[pos % len(data)] = value
    return bytes(data[:cut] if cut is not None else data)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=mutations, cut=st.one_of(st.none(), st.integers(0, 60)))
def test_mutated_idx_reads_correctly_or_raises_data_error(tmp_path, changes, cut):
    path = tmp_path / "m-idx3-ubyte"
    path.write_bytes(mutate(valid_idx(), changes, cut))
    try:
        out = read_idx(path)
    except DataError as e:
        assert "\n" not in str(e)
    else:
        assert out.size * out.dtype.itemsize == len(path.read_bytes()) - 4 - 4 * out.ndim


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=mutations, cut=st.one_of(st.none(), st.integers(0, 50)))
def test_mutated_csv_reads_correctly_or_raises_data_error(tmp_path, changes, cut):
    path = tmp_path / "m.csv"
    path.write_bytes(mutate(valid_csv(), changes, cut))
    try:
        split = read_csv(path)
    except DataError as e:
        assert "\n" not in str(e)
    else:
        assert split.images.dtype == np.uint8 and (split.labels >= 0).all()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=mutations, cut=st.one_of(st.none(), st.integers(0, 400)))
def test_mutated_npz_reads_correctly_or_raises_data_error(tmp_path, changes, cut):
    path = tmp_path / "m.npz"
    raw = npz_bytes(x=X[:, :4, :4].copy(), y=Y)
    path.write_bytes(mutate(raw, [(p * 3, v) for p, v in changes], cut))
    try:
        read_npz(path)
    except DataError as e:
        assert "\n" not in str(e)


def test_gzip_and_raw_idx_agree(tmp_path):
    raw = valid_idx()
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), read_idx(tmp_path / "a.gz"))
    shutil.rmtree(tmp_path / "a", ignore_errors=True)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("a\nb\n", "classes.txt: names 2 classes, but the labels go up to 3; it needs one name"),
        ("a\nb\na\nc\n", "classes.txt: 'a' names two classes; each line must name a class once"),
    ],
)
def test_a_classes_txt_that_does_not_fit_the_labels_is_what_is_named(classes, message, tmp_path):
    """Not the label file, which is right: with two names for one class, or fewer names than
    labels, classes.txt is what to fix."""
    train = csv_pair(tmp_path, ROWS, classes=classes)
    with pytest.raises(DataError) as refused:
        load_fashion_mnist(train)
    assert str(refused.value).startswith(f"{train.parent}/{message}")
