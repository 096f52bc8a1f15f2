"""Downloading the four official files, for machines with internet and without the package.

Each file is streamed to `<name>.part` beside its destination, resumed with an HTTP Range request
when a partial file is there, checked (gzip stream intact, IDX content MD5 as published), and only
then renamed into place. A corrupt or truncated download is deleted and refused.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path
from typing import IO

from .._fsutil import open_regular, user_cache
from .formats import DataError
from .integrity import GZ_MD5, IDX_MD5

MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CHUNK = 1 << 20
# what writing the .part file, never the network, fails with: named as the file's problem
LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def default_dir() -> Path:
    """$XDG_CACHE_HOME/fashionnet/fashion-mnist (~/.cache/... when unset)."""
    return user_cache("fashion-mnist")


def _content_ok(path: Path, name: str) -> bool:
    """`path` decompresses and its IDX content has the official MD5 of file `name`."""
    try:
        with open_regular(path) as raw, gzip.open(raw, "rb") as f:
            digest = hashlib.md5()
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return False
    return digest.hexdigest() == IDX_MD5[name.removesuffix(".gz")]


def _open_part(part: Path) -> IO[bytes]:
    """`part` for writing, created when missing, its content kept for a resume. Not through a
    link (a .part in a shared folder could point at a file of the user's) and never a FIFO or
    device: open() would truncate the file behind the link or wait for a FIFO's reader."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(part, flags, 0o666)
    except OSError as e:  # ELOOP: a link; ENXIO: a FIFO with no reader
        raise DataError(f"{part}: cannot write the download there ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{part}: not a regular file; remove it and run again")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "wb")


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of `url` to `part`, resuming from its current size when it has one."""
    with _open_part(part) as f:
        offset = os.fstat(f.fileno()).st_size
        try:
            _fetch_into(f, part, url, offset, timeout)
        except BaseException:
            if os.fstat(f.fileno()).st_size == 0:  # nothing came: leave no empty .part behind
                part.unlink(missing_ok=True)
            raise


def _fetch_into(f: IO[bytes], part: Path, url: str, offset: int, timeout: float) -> None:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as r:
            if offset and r.status != 206:  # the server ignored the range: start again
                offset = 0
            expected = r.headers.get("Content-Length")
            f.truncate(offset)
            f.seek(offset)
            received = 0
            while chunk := r.read(CHUNK):
                f.write(chunk)
                received += len(chunk)
            f.flush()
            os.fsync(f.fileno())
            if expected is not None and received != int(expected):
                raise DataError(
                    f"{url}: connection ended after {received} of {expected} bytes; "
                    f"run again to resume"
                )
    except urllib.error.HTTPError as e:
        if e.code == 416:  # range beyond the end: what we have is at least complete
            return
        raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, HTTPException, OSError) as e:
        if isinstance(e, OSError) and e.errno in LOCAL_ERRNOS:  # the part is kept to resume
            raise OSError(e.errno, e.strerror, str(part)) from None
        raise DataError(f"{url}: download interrupted ({e}); run again to resume") from None


def download(
    dest: Path | None = None,
    *,
    base_url: str = MIRROR,
    timeout: float = 60.0,
    log: Callable[[str], None] = lambda line: None,
) -> Path:
    """Fetch the four official .gz files into `dest` (default_dir()); return the folder."""
    dest = dest if dest is not None else default_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for name in GZ_MD5:
        target, part = dest / name, dest / (name + ".part")
        if os.path.lexists(target) and not target.is_file():  # the rename would replace it
            raise DataError(f"{target}: not a regular file; remove it and run again")
        if target.exists() and _content_ok(target, name):
            log(f"{target}: already here, content checked")
            continue
        url = base_url.rstrip("/") + "/" + name
        log(f"{url} -> {target}" + (" (resuming)" if part.exists() else ""))
        _fetch(url, part, timeout)
        if not _content_ok(part, name):
            part.unlink()
            raise DataError(
                f"{url}: downloaded file is corrupt or truncated (content MD5); refused"
            )
        os.replace(part, target)
    return dest
