import gzip

import numpy as np
import pytest

from conftest import idx_bytes, write_idx_folder
from fashionnet.data import (
    CLASS_NAMES,
    ENV_VAR,
    DataError,
    Split,
    find_data,
    iterate_batches,
    load_fashion_mnist,
    read_csv,
    read_idx,
    to_float,
    train_val_split,
)


def write_csv(path, images, labels, header=True):
    lines = []
    if header:
        lines.append("label," + ",".join(f"pixel{i + 1}" for i in range(images[0].size)))
    for image, label in zip(images, labels, strict=True):
        lines.append(",".join(str(v) for v in [label, *image.ravel()]))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_round_trip(tmp_path, rng, gz):
    files = write_idx_folder(tmp_path, rng, gz=gz)
    data = load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(data.train.images, files["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.test.labels, files["t10k-labels-idx1-ubyte"])
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    assert data.class_names == CLASS_NAMES and len(CLASS_NAMES) == 10


def test_read_idx_keeps_type_and_byte_order(tmp_path):
    values = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    (tmp_path / "a.idx").write_bytes(idx_bytes(values))
    out = read_idx(tmp_path / "a.idx")
    np.testing.assert_array_equal(out, values)
    assert out.dtype == np.int32


def test_kaggle_csv_with_header(tmp_path, rng):
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5)
    write_csv(tmp_path / "fashion-mnist_train.csv", images, labels)
    write_csv(tmp_path / "fashion-mnist_test.csv", images[:2], labels[:2], header=False)
    split = read_csv(tmp_path / "fashion-mnist_train.csv")
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)
    data = load_fashion_mnist(
        tmp_path / "fashion-mnist_train.csv"
    )  # the test file is found beside it
    assert len(data.test) == 2
    assert len(load_fashion_mnist(tmp_path).train) == 5  # a folder of CSVs works too


def test_csv_of_8x8_images(tmp_path, rng):
    images = rng.integers(0, 17, (4, 8, 8), dtype=np.uint8)
    write_csv(tmp_path / "digits.csv", images, [0, 1, 2, 3])
    assert read_csv(tmp_path / "digits.csv").images.shape == (4, 8, 8)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no data rows"),
        (b"label,pixel1,pixel2,pixel3,pixel4\n", "no data rows"),
        (b"1,2,3\n", "line 1: 2 pixel columns is not a square image"),
        (b"1,2,3,4,300\n", "line 1, column 5: pixel 300 out of range"),
        (b"1,2,3,4,5\n-1,0,0,0,0\n", "line 2: label -1 out of range"),
        (b"1,2,3,4,5\n1,2,x,4,5\n", "line 2, column 3: 'x' is not an integer"),
        (b"1,2,3,4,5\n1,2,3\n", "line 2: 3 columns, expected 5"),
        (b"h,a\n1,2,3,4,5\n1,2,3,4,5,6\n", "line 3: 6 columns, expected 5"),
        (b"1,2,3,4,5\n1,2.5,3,4,5\n", "line 2, column 2: '2.5'"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "is not text"),
    ],
)
def test_bad_csv_gives_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_csv(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short"),
        (b"\x01\x02\x08\x01", "bad IDX magic"),
        (b"\x00\x00\x08\x03\x00\x00", "header of 3 dimensions"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "need 5 bytes of data, found 3"),
        (b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "far larger"),
    ],
)
def test_bad_idx_gives_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_truncated_gzip_is_a_data_error(tmp_path, rng):
    write_idx_folder(tmp_path, rng)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path)


def test_image_and_label_counts_must_agree(tmp_path, rng):
    write_idx_folder(tmp_path, rng)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(29, np.uint8)))
    )
    with pytest.raises(DataError, match="29 labels for 30 images"):
        load_fashion_mnist(tmp_path)


def test_directory_given_as_file(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_idx(tmp_path)


def test_find_data_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "a", tmp_path / "b"
    explicit.mkdir()
    env.mkdir()
    monkeypatch.setenv(ENV_VAR, str(env))
    assert find_data(explicit) == explicit
    assert find_data() == env
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        find_data()
    with pytest.raises(DataError, match="no such file"):
        find_data(tmp_path / "nope")


def test_folder_without_data_says_what_it_expected(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path)


def test_a_single_file_says_how_its_test_file_is_found(tmp_path, rng):
    images, labels = rng.integers(0, 256, (4, 28, 28)), np.arange(4)
    write_csv(tmp_path / "fashion.csv", images, labels)
    with pytest.raises(DataError, match=r"name must hold 'train'.*or pass their folder"):
        load_fashion_mnist(tmp_path / "fashion.csv")
    write_csv(tmp_path / "my_train.csv", images, labels)
    with pytest.raises(DataError, match=r"no test file beside it \(expected my_test.csv\)"):
        load_fashion_mnist(tmp_path / "my_train.csv")
    write_csv(tmp_path / "my_test.csv", images, labels)
    assert len(load_fashion_mnist(tmp_path / "my_train.csv").test) == 4


def test_to_float_scales_to_unit_interval():
    x = to_float(np.array([[[0, 255], [51, 102]]], dtype=np.uint8))
    assert x.dtype == np.float32 and x.shape == (1, 4)
    np.testing.assert_allclose(x, [[0, 1, 0.2, 0.4]], rtol=1e-6)


def test_train_val_split_is_seeded_and_disjoint():
    split = Split(np.arange(100, dtype=np.uint8).reshape(100, 1, 1), np.arange(100))
    train, val = train_val_split(split, 10, np.random.default_rng(0))
    again, _ = train_val_split(split, 10, np.random.default_rng(0))
    assert len(train) == 90 and len(val) == 10
    assert not set(train.labels) & set(val.labels)
    np.testing.assert_array_equal(train.labels, again.labels)
    np.testing.assert_array_equal(train.images.ravel(), train.labels)  # pairs stay together
    with pytest.raises(ValueError, match="val_size"):
        train_val_split(split, 100, np.random.default_rng(0))


def test_batches_cover_every_sample_once_per_epoch(rng):
    x, y = np.arange(10).reshape(10, 1), np.arange(10)
    seen = np.concatenate([yb for _, yb in iterate_batches(x, y, 3, rng=rng)])
    assert sorted(seen) == list(range(10)) and list(seen) != list(range(10))
    sizes = [len(yb) for _, yb in iterate_batches(x, y, 3)]
    assert sizes == [3, 3, 3, 1]


@pytest.mark.realdata
def test_the_real_files_load(real_data):
    data = load_fashion_mnist(real_data)
    assert data.train.images.shape == (60000, 28, 28)
    assert data.test.images.shape == (10000, 28, 28)
    assert np.bincount(data.test.labels).tolist() == [1000] * 10
