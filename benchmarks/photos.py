"""How often predict on a photo-like picture agrees with the model on the 28x28 original.

    python benchmarks/photos.py MODEL_OR_RUN_DIR [--n 200] [--centre box|mass]
    python benchmarks/photos.py MODEL_OR_RUN_DIR --speed 100 [--rounds 3]

For each kind of picture in tests/photo_variants.py (EXIF-rotated JPEG, transparent PNG, 16-bit
PNG, small garment on a large canvas, grey and gradient backdrops, plain RGB), N test images are
turned into that kind of file, read back through fashionnet's picture pipeline, and classified;
the table gives the share whose class matches the model's class for the original array. Also the
round trip: the first 1,000 test images saved as PNG, read back, classified.

With --speed N: N phone-sized JPEGs (4000x3000, a test image's garment on a noisy light backdrop)
classified by `fashionnet predict FOLDER`, with FASHIONNET_THREADS=1 and =2 in alternation; the
median seconds of each (the whole command, start-up included) and whether the outputs agree.

With --urls N: N shop-sized JPEGs (800x800) served from 127.0.0.1 by a server that waits
--delay-ms before each answer (a shop's server across the internet), classified by `fashionnet
predict URL...` fetching 2 at a time (as many as the cores) and URL_WORKERS at a time, in
alternation; the median seconds of each and whether the outputs agree.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fashionnet.checkpoint import load_model  # noqa: E402
from fashionnet.data import load_fashion_mnist, to_float  # noqa: E402
from fashionnet.data.photos import prepare  # noqa: E402
from photo_variants import KINDS, make  # noqa: E402


def agreement(model, images: np.ndarray, kind: str, centre: str, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    want = model.predict(to_float(images))
    seen = np.stack([prepare(make(kind, im, rng), (28, 28), centre=centre) for im in images])
    return float(np.mean(model.predict(to_float(seen)) == want))


def round_trip(model, images: np.ndarray) -> int:
    from PIL import Image

    want = model.predict(to_float(images))
    back = []
    for im in images:
        out = io.BytesIO()
        Image.fromarray(im).save(out, "PNG")
        back.append(prepare(out.getvalue(), (28, 28)))
    return int(np.sum(model.predict(to_float(np.stack(back))) == want))


def phone_photos(folder: Path, images: np.ndarray) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, im in enumerate(images):
        garment = Image.fromarray(255 - im).resize((1500, 1500), Image.Resampling.BILINEAR)
        canvas = Image.new("L", (4000, 3000), 250)
        canvas.paste(garment, (1200, 700))
        noisy = np.asarray(canvas.convert("RGB")) + rng.integers(-6, 7, (3000, 4000, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg",
                                                                      quality=90)  # fmt: skip


def speed(model: Path, images: np.ndarray, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        phone_photos(folder, images)
        seconds: dict[int, list[float]] = {1: [], 2: []}
        outputs: dict[int, bytes] = {}
        for _ in range(rounds):
            for threads in (1, 2):
                env = {**os.environ, "FASHIONNET_THREADS": str(threads)}
                t = time.perf_counter()
                outputs[threads] = subprocess.run(
                    [sys.executable, "-m", "fashionnet", "predict", str(model), str(folder),
                     "--json"], env=env, check=True, capture_output=True).stdout  # fmt: skip
                seconds[threads].append(time.perf_counter() - t)
    one, two = (statistics.median(seconds[t]) for t in (1, 2))
    print(f"{len(images)} phone JPEGs: {one:.2f} s on 1 thread, {two:.2f} s on 2 ({one / two:.2f}x)"
          f"; rounds {seconds}; same output: {outputs[1] == outputs[2]}")  # fmt: skip


def shop_server(images: np.ndarray, delay_s: float) -> tuple[object, list[str]]:
    """A server on 127.0.0.1 answering /N.jpg with an 800x800 product JPEG after `delay_s`."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image

    bodies = []
    for im in images:
        out = io.BytesIO()
        Image.fromarray(255 - im).resize((800, 800)).convert("RGB").save(out, "JPEG", quality=90)
        bodies.append(out.getvalue())

    class Shop(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = bodies[int(self.path.strip("/").removesuffix(".jpg"))]
            time.sleep(delay_s)  # the network's round trips, not measured by any test
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    return server, [f"http://127.0.0.1:{port}/{i}.jpg" for i in range(len(images))]


def url_speed(model: Path, images: np.ndarray, rounds: int, delay_ms: float) -> None:
    from fashionnet.predict import URL_WORKERS

    server, urls = shop_server(images, delay_ms / 1000)
    code = ("import sys, fashionnet.predict as p, fashionnet.cli as c; "
            "p.URL_WORKERS = int(sys.argv[1]); sys.exit(c.main(sys.argv[2:]))")  # fmt: skip
    seconds: dict[int, list[float]] = {2: [], URL_WORKERS: []}
    outputs: dict[int, bytes] = {}
    for _ in range(rounds):
        for workers in seconds:
            t = time.perf_counter()
            outputs[workers] = subprocess.run(
                [sys.executable, "-c", code, str(workers), "predict", str(model), *urls, "--json"],
                check=True, capture_output=True).stdout  # fmt: skip
            seconds[workers].append(time.perf_counter() - t)
    server.shutdown()  # type: ignore[attr-defined]
    two, many = (statistics.median(seconds[w]) for w in seconds)
    print(f"{len(urls)} addresses answered after {delay_ms:g} ms: {two:.2f} s fetching 2 at a "
          f"time, {many:.2f} s fetching {URL_WORKERS} ({two / many:.2f}x); rounds {seconds}; "
          f"same output: {outputs[2] == outputs[URL_WORKERS]}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--centre", default="box", choices=("box", "mass"))
    ap.add_argument("--speed", type=int, help="time predict on this many phone-sized JPEGs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--urls", type=int, help="time predict on this many pictures' addresses")
    ap.add_argument("--delay-ms", type=float, default=100.0)
    args = ap.parse_args()
    path = args.model / "model.npz" if args.model.is_dir() else args.model
    test = load_fashion_mnist().test.images
    if args.speed:
        speed(path, test[: args.speed], args.rounds)
        return
    if args.urls:
        url_speed(path, test[: args.urls], args.rounds, args.delay_ms)
        return
    model = load_model(path)
    print(f"| kind | agreement ({args.n} test images) | seconds |\n|---|---:|---:|")
    for kind in KINDS:
        t = time.perf_counter()
        share = agreement(model, test[: args.n], kind, args.centre)
        print(f"| {kind} | {share:.3f} | {time.perf_counter() - t:.1f} |")
    print(f"\nround trip through PNG: {round_trip(model, test[:1000])}/1000 same class")


if __name__ == "__main__":
    main()
