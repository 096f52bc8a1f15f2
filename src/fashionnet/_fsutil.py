"""Writing files in one place: atomic file and folder writes, and the user's cache folder.

Temporary names carry a mark only fashionnet uses (.NAME.fashionnet-XXXXXX.tmp), so cleaning up
after a killed write removes fashionnet's own leftovers and never a user's file. Imports nothing
of fashionnet: every module, data/ included, may use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TMP_MARK = ".fashionnet-"


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def user_cache(*parts: str) -> Path:
    """$XDG_CACHE_HOME/fashionnet/PARTS (~/.cache/fashionnet/PARTS when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "fashionnet", *parts)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Write to a temp file beside `path`, fsync, rename over `path`, fsync the folder.

    Readers see the old complete file or the new complete one, never a partial one; on error
    the temp file is removed and `path` is untouched. The file gets the usual mode (0666 less
    the umask), not mkstemp's 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """A temp folder beside `out` to fill; renamed to `out` when the block ends without error,
    removed with everything in it otherwise. `out` must not exist yet."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP_MARK}", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(out.parent)


def stale_temp_files(folder: Path) -> list[Path]:
    """Temp files a killed fashionnet write left in `folder` (and nothing else)."""
    return sorted(folder.glob(f".*{TMP_MARK}*.tmp"))
