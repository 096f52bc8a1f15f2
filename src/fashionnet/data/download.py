"""Downloading the four official files, for machines with internet and without the package.

Each file is streamed to `<name>.part` beside its destination, resumed with an HTTP Range request
when a partial file is there, checked (gzip stream intact, IDX content MD5 as published), and only
then renamed into place. A corrupt or truncated download is deleted and refused.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path

from .._fsutil import user_cache
from .formats import DataError
from .integrity import GZ_MD5, IDX_MD5

MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CHUNK = 1 << 20


def default_dir() -> Path:
    """$XDG_CACHE_HOME/fashionnet/fashion-mnist (~/.cache/... when unset)."""
    return user_cache("fashion-mnist")


def _content_ok(path: Path, name: str) -> bool:
    """`path` decompresses and its IDX content has the official MD5 of file `name`."""
    try:
        with gzip.open(path, "rb") as f:
            digest = hashlib.md5()
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return False
    return digest.hexdigest() == IDX_MD5[name.removesuffix(".gz")]


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of `url` to `part`, resuming from its current size when it has one."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as r:
            if offset and r.status != 206:  # the server ignored the range: start again
                offset = 0
            expected = r.headers.get("Content-Length")
            with open(part, "ab" if offset else "wb") as f:
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
