"""The whole-array CSV parser agrees with the line-by-line one, and the cache of parsed files."""

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fashionnet.data import DataError, read_csv
from fashionnet.data import cache as csv_cache
from fashionnet.data.formats import parse_unsigned_csv


def loadtxt(text: str) -> np.ndarray:
    return np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int16, ndmin=2)


@given(
    table=st.integers(1, 6).flatmap(
        lambda cols: st.lists(
            st.lists(st.integers(0, 999), min_size=cols, max_size=cols), min_size=1, max_size=8
        )
    ),
    newline=st.sampled_from(["\n", "\r\n"]),
    closed=st.booleans(),
)
def test_fast_parser_reads_what_loadtxt_reads(table, newline, closed):
    text = newline.join(",".join(str(v) for v in row) for row in table) + (newline * closed)
    np.testing.assert_array_equal(parse_unsigned_csv(text.encode()), loadtxt(text))


@pytest.mark.parametrize(
    "text",
    ["", "\n", "1,2\n3\n", "1,2\n3,4,5\n", "1,,2\n", "1,-2\n", "1, 2\n", "1,2.0\n", "1,1000\n",
     "1,2\n\n", "1,2\n\n3,4\n", "1;2\n", "1,2,\n", ",1\n", "1,2\nx,y\n", "1,\xe92\n"],
)  # fmt: skip
def test_fast_parser_leaves_everything_else_to_the_careful_one(text):
    assert parse_unsigned_csv(text.encode("latin-1")) is None


def test_fast_parser_skips_a_header_by_offset():
    raw = b"label,pixel1\n3,255\n0,7"
    assert parse_unsigned_csv(raw, raw.index(b"\n") + 1).tolist() == [[3, 255], [0, 7]]


def write_csv(path, rng, n=50):
    table = np.column_stack([rng.integers(0, 10, n), rng.integers(0, 256, (n, 16))])
    np.savetxt(path, table, fmt="%d", delimiter=",", header="label," + ",".join("p" * 16),
               comments="")  # fmt: skip
    return table


@pytest.fixture
def cache_everything(monkeypatch):
    monkeypatch.setattr(csv_cache, "MIN_BYTES", 0)


def test_second_read_comes_from_the_cache(tmp_path, rng, monkeypatch, cache_everything):
    path = tmp_path / "train.csv"
    table = write_csv(path, rng)
    first = read_csv(path)
    assert len(list(csv_cache.cache_root().iterdir())) == 1
    monkeypatch.setattr("fashionnet.data.formats.parse_csv", pytest.fail)  # must not parse
    second = read_csv(path)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, table[:, 0])
    with pytest.raises(DataError, match="label 9 out of range"):  # checks still apply
        read_csv(path, n_classes=3) if table[:, 0].max() == 9 else pytest.skip("no 9")


def test_a_changed_file_is_parsed_again(tmp_path, rng, cache_everything):
    path = tmp_path / "train.csv"
    write_csv(path, rng)
    read_csv(path)
    stat = path.stat()
    raw = bytearray(path.read_bytes())
    i = len(raw.rstrip()) - 1  # the last pixel's last digit
    raw[i] = ord("0") if raw[i] != ord("0") else ord("1")
    path.write_bytes(bytes(raw))  # same size, and the old modification time put back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    expected = loadtxt(raw.decode().split("\n", 1)[1])[-1, -1]
    assert read_csv(path).images[-1, -1, -1] == expected
    assert len(list(csv_cache.cache_root().iterdir())) == 1  # the stale entry was replaced


def test_cache_can_be_turned_off(tmp_path, rng, monkeypatch, cache_everything):
    monkeypatch.setenv("FASHIONNET_CACHE", "0")
    path = tmp_path / "train.csv"
    write_csv(path, rng)
    read_csv(path)
    assert not (tmp_path / "cache").exists()
    assert csv_cache.cache_root() is None


def test_an_unwritable_cache_folder_is_no_error(tmp_path, rng, monkeypatch, cache_everything):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    path = tmp_path / "train.csv"
    write_csv(path, rng)
    assert len(read_csv(path)) == 50


def test_a_damaged_entry_is_ignored(tmp_path, rng, cache_everything):
    path = tmp_path / "train.csv"
    write_csv(path, rng)
    first = read_csv(path)
    (entry,) = csv_cache.cache_root().iterdir()
    (entry / "images.npy").write_bytes(b"\x93NUMPY garbage")
    np.testing.assert_array_equal(read_csv(path).images, first.images)


def test_small_files_are_not_cached(tmp_path, rng):
    path = tmp_path / "train.csv"
    write_csv(path, rng)
    read_csv(path)
    root = csv_cache.cache_root()
    assert not root.exists() or not any(root.iterdir())
