"""How often predict on a photo-like picture agrees with the model on the 28x28 original.

    python benchmarks/photos.py MODEL_OR_RUN_DIR [--n 200] [--centre box|mass]

For each kind of picture in tests/photo_variants.py (EXIF-rotated JPEG, transparent PNG, 16-bit
PNG, small garment on a large canvas, grey and gradient backdrops, plain RGB), N test images are
turned into that kind of file, read back through fashionnet's picture pipeline, and classified;
the table gives the share whose class matches the model's class for the original array. Also the
round trip: the first 1,000 test images saved as PNG, read back, classified.
"""

from __future__ import annotations

import argparse
import io
import sys
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--centre", default="box", choices=("box", "mass"))
    args = ap.parse_args()
    path = args.model / "model.npz" if args.model.is_dir() else args.model
    model = load_model(path)
    test = load_fashion_mnist().test.images
    print(f"| kind | agreement ({args.n} test images) | seconds |\n|---|---:|---:|")
    for kind in KINDS:
        t = time.perf_counter()
        share = agreement(model, test[: args.n], kind, args.centre)
        print(f"| {kind} | {share:.3f} | {time.perf_counter() - t:.1f} |")
    print(f"\nround trip through PNG: {round_trip(model, test[:1000])}/1000 same class")


if __name__ == "__main__":
    main()
