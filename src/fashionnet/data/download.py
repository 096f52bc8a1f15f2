"""Fetching over HTTP: the four official files, for machines with internet and without the
package, and pictures that predict is given by their address.

Each official file is streamed to `<name>.part` beside its destination, resumed with an HTTP Range
request when a partial file is there, checked (gzip stream intact, IDX content MD5 as published),
and only then renamed into place. A corrupt or truncated download is deleted and refused. A
picture is read into memory, up to a limit checked before and while it arrives.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from http.client import HTTPException, InvalidURL
from pathlib import Path
from typing import IO, Any

from .._fsutil import open_regular, user_cache
from .._version import __version__
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
        e.close()  # it holds the error page's connection
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


MAX_PICTURE_BYTES = 50 << 20  # a 48-megapixel phone JPEG is 15-25 MB
PICTURE_TIMEOUT = 30.0  # seconds without a byte before a server is given up
PICTURE_DEADLINE = 120.0  # seconds for the whole picture: a server trickling bytes is given up


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


class _HttpOnly(urllib.request.HTTPRedirectHandler):
    """Redirects stay on http and https (urllib would follow one to ftp://)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:  # fmt: skip
        if not is_url(newurl):
            fp.close()  # urllib closes it after a redirect it follows
            raise DataError(f"{req.full_url}: redirected to {newurl}, not an http(s) address")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_picture(url: str, *, timeout: float = PICTURE_TIMEOUT) -> tuple[bytes, str]:
    """(body, Content-Type) of an http(s) address, refused beyond MAX_PICTURE_BYTES: from the
    Content-Length before reading, and as soon as more arrives than the limit allows; given up
    after `timeout` seconds without a byte or PICTURE_DEADLINE seconds in all. Proxies come
    from the environment (HTTPS_PROXY ...), as for any urllib request."""
    limit, deadline = MAX_PICTURE_BYTES, time.monotonic() + PICTURE_DEADLINE
    too_big = f"{url}: more than {limit / 2**20:g} MiB; a picture may have at most that"
    opener = urllib.request.build_opener(_HttpOnly)
    # spaces and non-ASCII letters quoted as a browser quotes them; %-escapes kept as they are
    quoted = urllib.parse.quote(url, safe="!#$%&'()*+,/:;=?@[]~")
    agent = {"User-Agent": f"fashionnet/{__version__}"}  # some shops refuse urllib's own
    try:
        request = urllib.request.Request(quoted, headers=agent)
        with opener.open(request, timeout=timeout) as r:
            length = r.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                raise DataError(too_big)
            body = bytearray()
            while len(body) <= limit and (chunk := r.read1(CHUNK)):  # what has come, at once
                body += chunk
                if time.monotonic() > deadline:
                    raise DataError(f"{url}: still arriving after {PICTURE_DEADLINE:g} s")
            if len(body) > limit:
                raise DataError(too_big)
            if length.isdigit() and len(body) < int(length):  # urllib's read() does not say
                raise DataError(
                    f"{url}: the connection ended early ({len(body)} of {length} bytes)"
                )
            return bytes(body), r.headers.get_content_type()
    except DataError:  # a ValueError too: said as it is
        raise
    except urllib.error.HTTPError as e:
        e.close()  # it holds the error page's connection
        raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = getattr(e.reason, "strerror", None) or e.reason
        raise DataError(f"{url}: cannot fetch it ({reason})") from None
    except TimeoutError:
        raise DataError(f"{url}: no answer for {timeout:g} s") from None
    except InvalidURL as e:
        raise DataError(f"{url}: not a valid address ({e})") from None
    except HTTPException as e:  # a reply that is not HTTP, a connection closed at once
        raise DataError(f"{url}: the connection ended early or broke ({e!r})") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{url}: cannot fetch it ({getattr(e, 'strerror', None) or e})") from None
