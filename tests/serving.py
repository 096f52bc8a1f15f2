"""Helpers for the server tests: a picture as PNG bytes, and a real `fashionnet serve` process."""

import io
import re
import socket
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()


def bomb() -> bytes:
    """A PNG whose header declares 30000x30000 pixels (a decompression bomb: 110 KB of zeros
    would inflate to 900 MB); only the header is real."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 999))


def start_server(cmd, workers=1, env=None, *, own_socket=False):
    """A server process started with `cmd`, returned with its port once every worker has
    finished its startup (warm-up included): events from its log, no waiting on a clock.

    `fashionnet serve` announces its port once it listens. A plain uvicorn with --workers N
    does not (its workers listen after their startup is logged): with `own_socket`, this helper
    listens on a free port itself and hands the socket over with uvicorn's --fd, so no request
    ever meets a closed port."""
    port, fds = None, ()
    if own_socket:
        sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
        port, fds = sock.getsockname()[1], (sock.fileno(),)
        cmd = [*cmd, "--fd", str(sock.fileno())]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, pass_fds=fds)
    if own_socket:
        sock.close()  # the server holds it now
    started = 0
    for line in proc.stderr:
        if found := re.search(r"^fashionnet serve: .* on http://\S+:(\d+)/ \(Ctrl-C stops\)", line):
            port = int(found.group(1))
        started += "Application startup complete" in line
        if port is not None and started == workers:
            return proc, port
    proc.wait()
    raise AssertionError(f"the server did not start: {' '.join(map(str, cmd))}")


def serve_process(run_dir, *flags, workers=1):
    """`fashionnet serve RUN_DIR` on a free port."""
    cmd = [sys.executable, "-m", "fashionnet", "serve", str(run_dir), "--port", "0",
           "--workers", str(workers), *flags]  # fmt: skip
    return start_server(cmd, workers)
