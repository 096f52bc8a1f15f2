"""Files in one place: atomic file and folder writes, reading only regular files, a folder's
lock, and the user's cache folder.

Temporary names carry a mark only fashionnet uses (.NAME.fashionnet-XXXXXX.tmp), so cleaning up
after a killed write removes fashionnet's own leftovers and never a user's file. Imports nothing
of fashionnet: every module, data/ included, may use it.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
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
    the umask), not mkstemp's 0600. A `path` that is there and is not a regular file (a device,
    a FIFO, a folder) is refused, before and again just before the rename: the rename would put
    a file in its place, and as root that replaces /dev/null for every program on the machine.
    """
    path = Path(path)
    _refuse_non_regular(path)
    fd, tmp = _mkstemp(path)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _refuse_non_regular(path)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _named(e, path, tmp) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _named(e: OSError, path: Path, temp: str) -> OSError:
    """`e` naming `path`, so its one line says where: a write that fills the disk fails in
    write() or fsync(), whose errors name no file, and a temp name means nothing to the user
    (a file inside a temp folder is named inside `path`). An error naming another file keeps
    it: it is about that file."""
    name = e.filename
    if e.errno is None or not (name is None or name == temp or str(name).startswith(temp + "/")):
        return e
    return type(e)(
        e.errno, e.strerror, str(path) + ("" if name is None else str(name)[len(temp) :])
    )


def _refuse_non_regular(path: Path) -> None:
    """NotARegularFile when `path` (its links followed) is there and is not a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:  # nothing there, or a dangling link: the rename makes the file
        return
    if not stat.S_ISREG(mode):
        raise NotARegularFile(errno.EINVAL, f"is {_kind(mode)}, not a regular file", str(path))


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a device",
             stat.S_ISBLK: "a device"}  # fmt: skip
    return next((k for test, k in kinds.items() if test(mode)), "a socket")


def _mkstemp(path: Path) -> tuple[int, str]:
    """mkstemp beside `path`; its errors (no such folder, read-only, full) name `path`."""
    try:
        return tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(path)) from None


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """A temp folder beside `out` to fill; renamed to `out` when the block ends without error,
    removed with everything in it otherwise. `out` must not exist yet."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP_MARK}", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(out)) from None
    try:
        yield tmp
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700
        os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _named(e, out, str(tmp)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(out.parent)


def stale_temp_files(folder: Path) -> list[Path]:
    """Temp files a killed fashionnet write left in `folder` (and nothing else)."""
    return sorted(folder.glob(f".*{TMP_MARK}*.tmp"))


class NotARegularFile(OSError):
    """A FIFO, device, socket or folder where a file was expected."""


def open_regular(path: str | os.PathLike[str], *, follow_links: bool = True) -> IO[bytes]:
    """Open a regular file for reading. Anything else is refused before a byte is read and
    without waiting: a FIFO would block until a writer came, a link to /dev/zero would never
    end. The check is on the opened file itself (fstat), so nothing can swap the path between.
    `follow_links=False` refuses a link too (OSError ELOOP)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(
                errno.EINVAL, f"is {_kind(mode)}, not a regular file", os.fspath(path)
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class FolderLocked(OSError):
    """Another process holds the folder's lock."""


def lock_folder(folder: Path) -> int:
    """An exclusive lock on `folder` (flock on its .fashionnet.lock file), held until the
    returned descriptor is closed or the process ends, however it ends. FolderLocked when
    another process holds it."""
    import fcntl  # POSIX only, like the run folders' other guarantees

    fd = os.open(folder / ".fashionnet.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderLocked(errno.EBUSY, "in use by another fashionnet run", str(folder)) from None
    return fd
