"""Fine-tuning against training from scratch, on a few images per class.

    python benchmarks/finetune.py --scenario new-classes|shifted [--preset cnn-small]
        [--per-class 20 50 200] [--seeds 0 1 2] [--epochs 30] [--batch-size 32]
        [--tuned KEY=VALUE ...] [--out benchmarks/finetune_results.json]

new-classes: a model is trained with the preset on the five Fashion-MNIST classes T-shirt/top,
Trouser, Pullover, Dress and Coat (their 30,000 training images). The other five (Sandal, Shirt,
Sneaker, Bag, Ankle boot) play a user's own classes: N training images of each, tested on all
5,000 official test images of those classes. The model's last layer has none of them: every
column is drawn afresh.

shifted: a model is trained with the preset on all of Fashion-MNIST. The user's pictures are of
the same ten classes, taken otherwise: each image turned by up to 20 degrees, shrunk to 65-90%,
blurred and of lower contrast (drawn per image, seeded). N of each class to train on; the 10,000
test images, shifted alike, to test on. The model as it is, on those, is a row of its own.

Each N is trained per seed with the same recipe (the preset, --epochs, --batch-size; --tuned
changes the fine-tuned runs only): from random weights, and `--from-model` the model. The table
gives the median test accuracy over the seeds, min-max in brackets. Results are kept in --out
by scenario and preset; `python benchmarks/run.py --render` puts them in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fashionnet.config import parse_setting, preset
from fashionnet.data import CLASS_NAMES, load_fashion_mnist
from fashionnet.runs import Run
from fashionnet.transfer import settings_from

SEEN, NEW = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


def write_classes(folder: Path, data, classes: tuple[int, ...], per_class: int | None,
                  rng: np.random.Generator) -> Path:  # fmt: skip
    """train.npz / test.npz of `classes` (relabelled 0..k-1) and their classes.txt; per_class
    training images of each, drawn by rng (all of them when None)."""
    folder.mkdir(parents=True)
    for name, split in (("train", data.train), ("test", data.test)):
        picked = []
        for c in classes:
            rows = np.flatnonzero(split.labels == c)
            if name == "train" and per_class is not None:
                rows = np.sort(rng.choice(rows, per_class, replace=False))
            picked.append(rows)
        rows = rng.permutation(np.concatenate(picked))  # classes mixed: --limit takes the first
        labels = np.searchsorted(np.asarray(classes), split.labels[rows])
        np.savez(folder / f"{name}.npz", x=split.images[rows], y=labels)
    (folder / "classes.txt").write_text("\n".join(CLASS_NAMES[c] for c in classes) + "\n")
    return folder


def shifted(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each 28x28 image turned, shrunk, blurred and dimmed, by amounts drawn from rng."""
    from PIL import Image, ImageFilter

    out = np.empty_like(images)
    for i, image in enumerate(images):
        angle, scale = rng.uniform(-20, 20), rng.uniform(0.65, 0.9)
        contrast = rng.uniform(0.6, 1.0)
        side = round(28 * scale)
        im = Image.fromarray(image).rotate(angle, Image.Resampling.BILINEAR)
        small = im.resize((side, side), Image.Resampling.BILINEAR)
        canvas = Image.new("L", (28, 28), 0)
        canvas.paste(small, ((28 - side) // 2, (28 - side) // 2))
        blurred = canvas.filter(ImageFilter.GaussianBlur(0.7))
        out[i] = (np.asarray(blurred, np.float64) * contrast).round().astype(np.uint8)
    return out


def write_shifted(folder: Path, data, per_class: int, rng: np.random.Generator) -> Path:
    """train.npz of per_class shifted training images of each class, test.npz of all the
    shifted test images (the same shift for every N: drawn from a generator of its own)."""
    folder.mkdir(parents=True)
    rows = np.concatenate([rng.choice(np.flatnonzero(data.train.labels == c), per_class,
                                      replace=False) for c in range(10)])  # fmt: skip
    rows = rng.permutation(rows)
    np.savez(folder / "train.npz", x=shifted(data.train.images[rows], rng),
             y=data.train.labels[rows])  # fmt: skip
    test = shifted(data.test.images, np.random.default_rng(12345))
    np.savez(folder / "test.npz", x=test, y=data.test.labels)
    return folder


def train(config, folder: Path) -> dict:
    result = Run(config, folder).train(progress=False)
    return {"test_accuracy": result.metrics["test_accuracy"],
            "train_seconds": result.metrics["train_seconds"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("new-classes", "shifted"), default="new-classes")
    parser.add_argument("--preset", default="cnn-small")
    parser.add_argument("--per-class", type=int, nargs="+", default=[20, 50, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--source-limit", type=int, help="train the source on fewer images")
    parser.add_argument("--tuned", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings of the fine-tuned runs only, e.g. lr=0.0003")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "finetune_results.json")
    args = parser.parse_args()
    changes = {k: parse_setting(k, v) for k, v in (kv.split("=", 1) for kv in args.tuned)}
    data = load_fashion_mnist(None)
    new_classes = args.scenario == "new-classes"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if new_classes:
            source_data = str(write_classes(root / "seen", data, SEEN, None,
                                            np.random.default_rng(0)))  # fmt: skip
        else:
            source_data = None  # Fashion-MNIST itself
        t = time.perf_counter()
        source = train(preset(args.preset, data=source_data, limit=args.source_limit),
                       root / "source")  # fmt: skip
        print(f"source: {args.preset}, test accuracy {source['test_accuracy']:.4f} in "
              f"{time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
        recipe = {"epochs": args.epochs, "batch_size": args.batch_size}
        for n in args.per_class:
            rng = np.random.default_rng(n)
            folder = (write_classes(root / f"new-{n}", data, NEW, n, rng) if new_classes
                      else write_shifted(root / f"new-{n}", data, n, rng))  # fmt: skip
            found: dict[str, list[dict]] = {"scratch": [], "fine-tuned": []}
            if not new_classes:
                found["as it is"] = [as_it_is(root / "source", folder)]
            for seed in args.seeds:
                common = {**recipe, "data": str(folder), "seed": seed}
                found["scratch"].append(train(preset(args.preset, **common),
                                              root / f"scratch-{n}-{seed}"))  # fmt: skip
                tuned = settings_from(root / "source", args.preset, **common, **changes)
                found["fine-tuned"].append(train(tuned, root / f"tuned-{n}-{seed}"))
            row = {"per_class": n, **found}
            rows.append(row)
            print(_line(row), flush=True)
    from run import machine  # this folder's benchmarks/run.py

    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv),
              "machine": machine(),
              "scenario": args.scenario, "preset": args.preset, "source": source, **recipe,
              "tuned": args.tuned, "rows": rows}  # fmt: skip
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    saved[f"{args.scenario} {args.preset}" + "".join(f" {t}" for t in args.tuned)] = record
    args.out.write_text(json.dumps(saved, indent=1) + "\n")
    print(table(args.preset, rows))
    return 0


def as_it_is(source: Path, folder: Path) -> dict:
    """The source model's accuracy on the new test images, untouched."""
    from fashionnet.checkpoint import load_model
    from fashionnet.data import to_float
    from fashionnet.train import evaluate

    test = load_fashion_mnist(folder).test
    _, acc = evaluate(load_model(source / "model.npz"), to_float(test.images), test.labels)
    return {"test_accuracy": acc, "train_seconds": 0.0}


def _median(runs: list[dict], key: str) -> tuple[float, float, float]:
    values = [r[key] for r in runs]
    return statistics.median(values), min(values), max(values)


def _arms(row: dict) -> list[str]:
    return [arm for arm in ("as it is", "scratch", "fine-tuned") if arm in row]


def _line(row: dict) -> str:
    parts = [f"{row['per_class']} per class"]
    for arm in _arms(row):
        mid, lo, hi = _median(row[arm], "test_accuracy")
        parts.append(f"{arm} {mid:.4f} [{lo:.4f}-{hi:.4f}]")
    return "; ".join(parts)


def table(name: str, rows: list[dict]) -> str:
    arms = _arms(rows[0])
    lines = ["| training images per class | " + " | ".join(f"{name} {arm}" for arm in arms)
             + " | training seconds (scratch / fine-tuned) |",
             "|---" * (len(arms) + 2) + "|"]  # fmt: skip
    for row in rows:
        cells = []
        for arm in arms:
            mid, lo, hi = _median(row[arm], "test_accuracy")
            cells.append(f"{mid:.4f} [{lo:.4f}-{hi:.4f}]" if lo != hi else f"{mid:.4f}")
        secs = [_median(row[arm], "train_seconds")[0] for arm in ("scratch", "fine-tuned")]
        lines.append(f"| {row['per_class']} | " + " | ".join(cells)
                     + f" | {secs[0]:.1f} / {secs[1]:.1f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
