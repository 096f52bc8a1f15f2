"""`fashionnet data download` against a server on 127.0.0.1 (never a real host): the Debian
files, a truncated one, a corrupted one, and a connection that drops half-way, then resumes."""

import errno
import os
import shutil
import stat
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from fashionnet.cli import main
from fashionnet.data import download as download_module
from fashionnet.data import load_fashion_mnist
from fashionnet.data.integrity import GZ_MD5


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with Range support; `drop_after` cuts the first response after N bytes."""

    drop_after: ClassVar[int | None] = None
    requests: ClassVar[list[str]] = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        self.requests.append(f"{path.name} {rng or ''}".strip())
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).drop_after
        if cut is not None:
            type(self).drop_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path, real_data):
    root = tmp_path / "mirror"
    root.mkdir()
    for name in GZ_MD5:
        shutil.copy(real_data / name, root / name)
    RangeHandler.requests = []
    RangeHandler.drop_after = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def download(url, dest):
    return main(["data", "download", "--dir", str(dest), "--url", url])


@pytest.mark.realdata
def test_download_verifies_and_loads(server, tmp_path, capsys):
    _, url = server
    dest = tmp_path / "cache"
    assert download(url, dest) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(GZ_MD5)
    assert len(load_fashion_mnist(dest).train) == 60000
    assert download(url, dest) == 0  # a second run checks and keeps them
    assert "already here" in capsys.readouterr().out


@pytest.mark.realdata
@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_file_is_refused_and_not_kept(damage, server, tmp_path, capsys):
    root, url = server
    victim = root / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(victim.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    dest = tmp_path / "cache"
    assert download(url, dest) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "t10k-labels-idx1-ubyte.gz" in err and "refused" in err
    assert not (dest / victim.name).exists() and not list(dest.glob("*.part"))


@pytest.mark.realdata
def test_an_interrupted_download_resumes(server, tmp_path, capsys):
    _, url = server
    dest = tmp_path / "cache"
    RangeHandler.drop_after = 1_000_000  # the first file stops after 1 MB
    assert download(url, dest) == 2
    assert "run again to resume" in capsys.readouterr().err
    part = dest / "train-images-idx3-ubyte.gz.part"
    assert part.stat().st_size == 1_000_000
    assert download(url, dest) == 0
    assert "train-images-idx3-ubyte.gz bytes=1000000-" in RangeHandler.requests
    assert sorted(p.name for p in dest.iterdir()) == sorted(GZ_MD5)


class FillsUp:
    """A .part file on a disk with `room` bytes free: the write that passes it fails as
    write(2) does, naming no file, after writing what fitted."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        fits = max(0, min(len(data), self.room - self.f.tell()))
        self.f.write(data[:fits])
        if fits < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fits

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.realdata
def test_a_full_disk_names_the_file_and_keeps_it_to_resume(server, tmp_path, monkeypatch, capsys):
    _, url = server
    dest = tmp_path / "cache"
    opened = download_module._open_part
    monkeypatch.setattr(
        download_module, "_open_part", lambda part: FillsUp(opened(part), 1_500_000)
    )
    assert download(url, dest) == 2
    part = dest / "train-images-idx3-ubyte.gz.part"
    # the disk's problem, not the network's: no "download interrupted", no URL (the other
    # lines are the test server's, about the connection the client dropped)
    err = [line for line in capsys.readouterr().err.splitlines() if "fashionnet" in line]
    assert err == [f"fashionnet: error: {part}: No space left on device"]
    assert part.stat().st_size == 1_500_000
    monkeypatch.undo()  # room made
    assert download(url, dest) == 0
    assert "train-images-idx3-ubyte.gz bytes=1500000-" in RangeHandler.requests
    assert sorted(p.name for p in dest.iterdir()) == sorted(GZ_MD5)


def test_no_server_is_one_line(tmp_path, capsys):
    assert download("http://127.0.0.1:9/", tmp_path / "cache") == 2  # port 9: nothing listens
    assert capsys.readouterr().err.count("\n") == 1
    assert list((tmp_path / "cache").iterdir()) == []  # no empty .part left


@pytest.mark.parametrize(
    ("where", "kind"),
    [(".part", "fifo"), (".part", "link to a file of the user's"), ("", "fifo")],
)
def test_a_special_file_in_the_way_is_one_line_and_left_alone(where, kind, tmp_path, capsys):
    dest, mine = tmp_path / "shared", tmp_path / "notes.txt"
    dest.mkdir()
    mine.write_text("mine\n")
    path = dest / ("train-images-idx3-ubyte.gz" + where)
    if kind == "fifo":
        os.mkfifo(path)  # no reader or writer: open() or a read would wait forever
    else:
        path.symlink_to(mine)  # open(..., "wb") would have emptied it
    assert download("http://127.0.0.1:9/", dest) == 2  # refused before any connection
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err
    assert mine.read_text() == "mine\n"
    assert [p.name for p in dest.iterdir()] == [path.name]
    assert stat.S_ISFIFO(path.lstat().st_mode) if kind == "fifo" else path.is_symlink()
