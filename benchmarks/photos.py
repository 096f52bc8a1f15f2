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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--centre", default="box", choices=("box", "mass"))
    ap.add_argument("--speed", type=int, help="time predict on this many phone-sized JPEGs")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    path = args.model / "model.npz" if args.model.is_dir() else args.model
    test = load_fashion_mnist().test.images
    if args.speed:
        speed(path, test[: args.speed], args.rounds)
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
