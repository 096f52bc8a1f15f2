"""Bytes -> arrays for each file format: IDX (raw or .gz), Kaggle-style CSV, NPZ.

Every reader returns exactly what the file holds or raises DataError with one line naming the
file and the line, column or byte where it went wrong.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from .._fsutil import NotARegularFile, open_regular
from . import cache

# IDX type codes (the third byte of the magic number) -> numpy dtype (big-endian on disk)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_IDX_BYTES = 1 << 34  # 16 GiB: anything larger is a corrupt header, refused before allocating


# what zipfile raises on damaged or unusual archives (NotImplementedError: an unknown zip
# version or compression; RuntimeError: an encrypted member; zlib.error: a corrupt stream;
# UnicodeDecodeError: a damaged member name flagged as UTF-8)
ZIP_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    KeyError,
    NotImplementedError,
    RuntimeError,
    UnicodeDecodeError,
    zlib.error,
)


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and what was expected."""


@dataclass(frozen=True)
class Split:
    """Images as stored (uint8, (n, h, w)) and integer labels (int64, (n,)); for pictures read
    from files, their paths (`names`, one per image; empty for arrays, whose index names them)."""

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise DataError(
                f"{len(self.images)} images but {len(self.labels)} labels: counts must agree"
            )
        if self.names and len(self.names) != len(self.labels):
            raise ValueError(f"{len(self.names)} names for {len(self.labels)} images")

    def first(self, n: int | None) -> Split:
        """The first `n` images (all of them for None), with their labels and names."""
        return Split(self.images[:n], self.labels[:n], self.names[:n])

    def name(self, i: int) -> str:
        """What image `i` is called: its file, else its index."""
        return self.names[i] if self.names else f"#{i}"

    def __len__(self) -> int:
        return len(self.labels)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: permission denied")


def _open(path: Path) -> IO[bytes]:
    """The data file, opened only if it is a regular file (a FIFO or a device is refused)."""
    try:
        return open_regular(path)
    except NotARegularFile as e:
        raise DataError(f"{path}: {e.strerror}") from None


# a .gz read whole (a gzipped CSV) may inflate to this many times its size, and past that
# only while under MAX_INFLATED_FLOOR: real CSVs of images inflate 4-8x, a file of one repeated
# row (a decompression bomb: 2 MB that would hold 4 GB of memory) hundreds of times. The same
# ratio as Apache POI's zip bomb guard.
MAX_INFLATE_RATIO = 100
MAX_INFLATED_FLOOR = 256 << 20


def _read_bytes(path: Path) -> bytes:
    _check_file(path)
    try:
        with _open(path) as f:
            if path.suffix != ".gz":
                return f.read()
            limit = max(MAX_INFLATED_FLOOR, MAX_INFLATE_RATIO * os.fstat(f.fileno()).st_size)
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                raw = g.read(limit + 1)
            if len(raw) > limit:
                raise DataError(
                    f"{path}: inflates to over {limit:,} bytes, more than {MAX_INFLATE_RATIO} "
                    "times its size: refused as a decompression bomb (gunzip it to use it)"
                )
            return raw
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot read ({e})") from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or .gz) exactly as stored: shape and dtype from its header."""
    path = Path(path)
    return parse_idx(read_idx_bytes(path), path)


def read_idx_bytes(path: Path) -> bytes:
    """An IDX file's (decompressed) bytes, header first: a bad magic or an impossible size is
    refused after its first 4 + 4 * ndim bytes, and no more than the header promises (and one
    byte, to notice extra data) is ever inflated from a .gz."""
    _check_file(path)
    try:
        with _open(path) as raw, (
            gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw
        ) as f:  # fmt: skip
            head = f.read(4)
            head += f.read(4 * head[3]) if len(head) == 4 else b""
            _, _, expected = _idx_layout(head, path)
            return head + f.read(expected + 1)
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot read ({e})") from None


def parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """The array an IDX file's (decompressed) bytes hold; errors name `path`."""
    dtype, dims, expected = _idx_layout(raw, path)
    header = 4 + 4 * len(dims)
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: byte {header}: dimensions {dims} need {expected} bytes of data, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_layout(raw: bytes, path: Path) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """(dtype, dimensions, data bytes) an IDX header declares, from its first 4 + 4 * ndim
    bytes; the magic and the size checked."""
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header (4 bytes)")
    zero0, zero1, code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path}: byte 0: bad IDX magic {raw[:4].hex()}, expected 0000 + type code "
            f"(08 for uint8) + number of dimensions"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes, header of {ndim} dimensions needs {header}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.float64)) * dtype.itemsize
    if expected > _MAX_IDX_BYTES:
        raise DataError(f"{path}: header declares dimensions {dims}, far larger than any dataset")
    return dtype, dims, expected


def _first_bad_row(path: Path, rows: list[str], first_line: int) -> DataError:
    """Scan the rows np.loadtxt refused and say exactly where and what (the error path only)."""
    width = len(rows[0].split(","))
    for offset, row in enumerate(rows):
        cells = row.split(",")
        where = f"{path}: line {first_line + offset}"
        if len(cells) != width:
            return DataError(
                f"{where}: {len(cells)} columns, expected {width} like line {first_line}"
            )
        for col, cell in enumerate(cells, 1):
            text = cell.strip()
            if not text.isdigit():
                return DataError(f"{where}, column {col}: {text[:20]!r} is not an integer 0..255")
            if int(text) > 255:
                what = "label" if col == 1 else "pixel"
                return DataError(f"{where}, column {col}: {what} {text[:20]} out of range")
    return DataError(f"{path}: cannot parse the rows from line {first_line} on")


def read_csv(path: str | os.PathLike[str], *, n_classes: int | None = None) -> Split:
    """Read a Kaggle-style CSV: a label column then h*w pixel columns, optional header row.

    Images must be square (h*w = 784 gives 28x28, 64 gives 8x8); labels must lie in
    0..n_classes-1 (any non-negative integer when n_classes is None). Files of 1 MiB and more
    are cached after the first read (see fashionnet.data.cache).
    """
    path = Path(path)
    _check_file(path)
    cached = cache.load(path)
    if cached is not None:  # parsed before and unchanged since
        _check_labels(path, cached[1], n_classes)
        return Split(*cached)
    split = parse_csv(_read_bytes(path), path, n_classes=n_classes)
    cache.store(path, split.images, split.labels)
    return split


def parse_csv(
    raw: bytes, path: Path, *, n_classes: int | None = None, has_labels: bool = True
) -> Split:
    """The images (and labels) a CSV's bytes hold; errors name `path`. Without labels, every
    column is a pixel and the labels are all 0."""
    newline = raw.find(b"\n")
    first_line = raw if newline < 0 else raw[:newline]
    header = any(65 <= c <= 90 or 97 <= c <= 122 for c in first_line)  # letters: column names
    table = parse_unsigned_csv(raw, len(first_line) + 1 if header else 0)
    if table is not None:  # the common case, parsed fast; anything else line by line
        return _csv_split(path, table, int(header), n_classes, has_labels)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: byte {e.start} is not text (expected a CSV)"
        ) from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    skip = int(header)
    rows = lines[skip:]
    if not rows:
        raise DataError(f"{path}: no data rows (expected label,pixel1,...,pixelN lines)")
    blank = next((i for i, row in enumerate(rows) if not row.strip()), None)
    if blank is not None:
        raise DataError(f"{path}: line {blank + skip + 1}: empty row (expected label,pixel1,...)")
    try:
        # int16 parses almost twice as fast as int64 and still shows values outside 0..255
        table = np.loadtxt(rows, delimiter=",", dtype=np.int16, ndmin=2)
    except ValueError:
        raise _first_bad_row(path, rows, skip + 1) from None
    return _csv_split(path, table, skip, n_classes, has_labels)


def _csv_split(
    path: Path, table: np.ndarray, skip: int, n_classes: int | None, has_labels: bool
) -> Split:
    """Check a parsed (rows, columns) table and cut it into square images and labels."""
    if not has_labels:  # a zero label column in front: the same checks and reshaping below
        table = np.concatenate([np.zeros((len(table), 1), table.dtype), table], axis=1)
    n_pixels = table.shape[1] - 1
    side = round(n_pixels**0.5)
    if n_pixels < 1 or side * side != n_pixels:
        raise DataError(
            f"{path}: line {skip + 1}: {n_pixels} pixel columns is not a square image "
            f"(expected e.g. 784 = 28x28)"
        )
    pixels, labels = table[:, 1:], table[:, 0].astype(np.int64)
    in_range = pixels.size == 0 or (pixels.min() >= 0 and pixels.max() <= 255)
    bad = (
        np.zeros(0, np.int64)
        if in_range
        else np.flatnonzero(((pixels < 0) | (pixels > 255)).any(axis=1))
    )
    if bad.size:
        col = int(np.flatnonzero((pixels[bad[0]] < 0) | (pixels[bad[0]] > 255))[0])
        value = pixels[bad[0], col]
        raise DataError(
            f"{path}: line {bad[0] + skip + 1}, column {col + 2}: pixel {value} out of range 0..255"
        )
    _check_labels(path, labels, n_classes, first_line=skip + 1)
    return Split(pixels.astype(np.uint8).reshape(-1, side, side), labels)


# the fast CSV parser works through blocks of about this many bytes (whole rows), so its
# temporaries stay in cache rather than being page-faulted in (BENCHMARKS.md)
CSV_BLOCK_BYTES = 1 << 18


def parse_unsigned_csv(raw: bytes, start: int = 0) -> np.ndarray | None:
    """The (rows, columns) int16 table of raw[start:], a CSV of unsigned numbers of 1 to 3
    digits, parsed in whole-array passes over blocks of rows; None for anything else (a sign, a
    space, a long or empty field, ragged rows, an empty file), which the line-by-line parser
    then reads or names exactly.

    Every non-digit byte ends a field; the separators' positions give each field's last digit
    and its length, and the value is that digit plus 10x and 100x the ones before it.
    """
    if raw.find(b"\r", start) >= 0:
        raw, start = raw[start:].replace(b"\r\n", b"\n"), 0
    if len(raw) <= start:
        return None
    first_newline = raw.find(b"\n", start)
    columns = raw.count(b",", start, first_newline if first_newline >= 0 else len(raw)) + 1
    bounds = [start]  # blocks of whole rows
    while bounds[-1] < len(raw):
        cut = raw.find(b"\n", bounds[-1] + CSV_BLOCK_BYTES)
        bounds.append(len(raw) if cut < 0 else cut + 1)
    # numpy lets go of the GIL inside each pass, so blocks parse side by side on every core
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        blocks = list(pool.map(partial(_parse_block, raw, columns=columns), bounds, bounds[1:]))
    if any(block is None for block in blocks):
        return None
    return np.concatenate(blocks)  # type: ignore[arg-type]


def _parse_block(raw: bytes, start: int, end: int, columns: int) -> np.ndarray | None:
    """raw[start:end], whole rows of `columns` fields each, as an int16 table (or None)."""
    closed = raw[end - 1] == 10  # the block's last row ends with a newline
    # digit values, with a non-digit (255) before the first byte and after the last
    digits = np.empty(end - start + 2, np.uint8)
    digits[0] = digits[-1] = 255
    np.subtract(np.frombuffer(raw, np.uint8, end - start, start), 48, out=digits[1:-1])
    ends = np.flatnonzero(digits >= 10)[1 : -1 if closed else None]  # every non-digit byte
    separators = digits.take(ends)  # ',' is 252 here, a newline 218, the end sentinel 255
    newline = separators == 218
    newlines, commas = np.count_nonzero(newline), np.count_nonzero(separators == 252)
    rows = newlines + (not closed)
    if commas + newlines + (not closed) != len(ends) or len(ends) != rows * columns:
        return None  # another byte (non-ASCII, a sign, a space, ...) or ragged rows
    if not newline[columns - 1 :: columns][: rows - 1].all():
        return None  # a newline must end every row (and so only rows)
    lengths = np.empty_like(ends)  # digits per field, plus one: the gap between separators
    lengths[0] = ends[0]
    np.subtract(ends[1:], ends[:-1], out=lengths[1:])
    if lengths.min() < 2 or lengths.max() > 4:
        return None
    last = ends - 1
    table = digits.take(last).astype(np.int16)  # ones
    table += np.multiply(digits.take(last - 1), lengths >= 3, dtype=np.int16) * np.int16(10)
    table += np.multiply(digits.take(last - 2), lengths == 4, dtype=np.int16) * np.int16(100)
    return table.reshape(rows, columns)


def _check_labels(
    path: Path, labels: np.ndarray, n_classes: int | None, first_line: int = 0
) -> None:
    hi = None if n_classes is None else n_classes - 1
    bad = np.flatnonzero(
        (labels < 0) | (labels > (hi if hi is not None else np.iinfo(np.int64).max))
    )
    if bad.size:
        where = f"line {bad[0] + first_line}" if first_line else f"index {bad[0]}"
        expected = f"0..{hi}" if hi is not None else ">= 0"
        raise DataError(
            f"{path}: {where}: label {labels[bad[0]]} out of range (expected {expected})"
        )


def write_idx(path: Path, array: np.ndarray) -> None:
    """`array` as an IDX file (uint8 or int32), gzip-compressed when the name ends in .gz."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
    if array.dtype not in codes:
        raise ValueError(f"IDX output takes uint8 or int32 arrays, got {array.dtype}")
    header = (
        bytes([0, 0, codes[array.dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    )
    raw = header + np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)


def write_csv(path: Path, split: Split) -> None:
    """Kaggle layout: a header, then label,pixel1..pixelN per image."""
    n_pixels = split.images[0].size if len(split) else 0
    table = np.column_stack([split.labels, split.images.reshape(len(split), -1)])
    with open(path, "w") as f:
        f.write("label," + ",".join(f"pixel{i}" for i in range(1, n_pixels + 1)) + "\n")
        np.savetxt(f, table, fmt="%d", delimiter=",")
