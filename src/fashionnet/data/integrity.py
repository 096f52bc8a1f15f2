"""Checksums of the official Fashion-MNIST files, and checking files against them.

The dataset publishes the MD5 of each .gz file; repackagers (Debian's dataset-fashion-mnist
among them) recompress, so the .gz bytes differ while the IDX bytes inside are the same.
fashionnet therefore checks the MD5 of the decompressed IDX bytes, which every copy shares, and
reports whether the .gz itself is the published one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
IDX_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


def official_name(path: Path) -> str | None:
    """The official IDX name a file carries ('train-images-idx3-ubyte' for either form)."""
    name = path.name.removesuffix(".gz")
    return name if name in IDX_MD5 else None


@dataclass(frozen=True)
class Check:
    path: Path
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'MISMATCH'}  {self.path}  {self.detail}"


def check_idx_bytes(path: Path, raw: bytes, *, compare_gz: bool = False) -> Check | None:
    """Check the decompressed bytes of an official file; None for other file names.

    compare_gz also says whether a .gz file is byte for byte the published one (reads it again).
    """
    name = official_name(path)
    if name is None:
        return None
    digest = hashlib.md5(raw).hexdigest()
    if digest != IDX_MD5[name]:
        return Check(path, False, f"content MD5 {digest}, the official {name} has {IDX_MD5[name]}")
    detail = "content matches the official file"
    if compare_gz and path.suffix == ".gz":
        published = hashlib.md5(path.read_bytes()).hexdigest() == GZ_MD5[path.name]
        detail += "; .gz as published" if published else "; .gz recompressed (content identical)"
    return Check(path, True, detail)


def verify_folder(folder: Path) -> list[Check]:
    """Check every official IDX file in `folder`, raw or .gz, against the known checksums."""
    from .formats import read_idx_bytes

    checks = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and official_name(path):
            check = check_idx_bytes(path, read_idx_bytes(path), compare_gz=True)
            assert check is not None
            checks.append(check)
    return checks
