"""A cache of parsed CSV files: loading an unchanged file again reads two plain .npy files.

Entries live in the user's cache folder ($XDG_CACHE_HOME/fashionnet/csv, ~/.cache/... when
unset), never next to the data, which may be read-only; FASHIONNET_CACHE=0 turns caching off.
An entry is looked up by the file's absolute path, size and modification time, and used only if
the file's CRC-32 (computed on another thread while the arrays load) matches the one stored with
it. Caching is an optimisation: a cache folder that cannot be written is silently skipped.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import threading
import zlib
from pathlib import Path

import numpy as np

from .._fsutil import atomic_folder, user_cache

# smaller files parse in milliseconds: not worth an entry
MIN_BYTES = 1 << 20


def cache_root() -> Path | None:
    """$XDG_CACHE_HOME/fashionnet/csv, or None when FASHIONNET_CACHE=0."""
    if os.environ.get("FASHIONNET_CACHE", "1") == "0":
        return None
    return user_cache("csv")


def file_crc32(path: Path) -> int:
    """CRC-32 of a file's bytes, read through a memory map (zlib releases the GIL)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return zlib.crc32(m)


def _names(path: Path) -> tuple[str, str]:
    """(prefix for every entry of this path, the entry for its current size and mtime)."""
    st = path.stat()
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    state = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return where, f"{where}-{state}"


def load(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(images, labels) as parsed before, or None: no entry, a changed file, a damaged entry."""
    root = cache_root()
    if root is None:
        return None
    try:
        entry = root / _names(path)[1]
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    crc: list[int] = []
    worker = threading.Thread(target=lambda: crc.append(file_crc32(path)), daemon=True)
    worker.start()
    try:
        images = np.load(entry / "images.npy", allow_pickle=False)
        labels = np.load(entry / "labels.npy", allow_pickle=False)
    except (OSError, ValueError):
        images = labels = None
    worker.join()
    if images is None or labels is None or crc != [meta.get("crc32")]:
        return None
    if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != images.shape[:1]:
        return None
    return images, labels


def store(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Save a parsed file's arrays as a new entry, replacing the path's older entries."""
    root = cache_root()
    if root is None or path.stat().st_size < MIN_BYTES:
        return
    try:
        where, name = _names(path)
        crc = file_crc32(path)
        if _names(path)[1] != name:
            return  # the file changed while we read it
        root.mkdir(parents=True, exist_ok=True)
        for old in root.glob(f"{where}-*"):
            shutil.rmtree(old, ignore_errors=True)
        with atomic_folder(root / name) as tmp:
            np.save(tmp / "images.npy", images, allow_pickle=False)
            np.save(tmp / "labels.npy", labels, allow_pickle=False)
            meta = {"path": str(path.resolve()), "crc32": crc}
            (tmp / "meta.json").write_text(json.dumps(meta) + "\n")
    except OSError:
        pass  # a read-only or full cache folder: no entry, no harm
