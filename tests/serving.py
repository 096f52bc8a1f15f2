"""Helpers for the server tests: a picture as PNG bytes, and a real `fashionnet serve` process."""

import io
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


def start_server(cmd, workers=1, env=None):
    """A server process started with `cmd`, returned with its port once uvicorn listens and
    every worker has finished its startup (warm-up included): events from its log, no waiting
    on a clock."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    port, started = None, 0
    for line in proc.stderr:
        if "Uvicorn running on" in line:
            port = int(line.rsplit(":", 1)[1].split()[0])
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
