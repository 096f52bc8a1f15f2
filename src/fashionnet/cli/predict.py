"""fashionnet predict MODEL INPUT...: the most probable classes of photos, folders of them, CSV,
NPZ, NPY and IDX images; --show draws what the model saw."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .._text import shown
from ..classify import open_model, through, top_classes
from ..data import DataError, to_float
from ..data.download import is_url
from ..data.image_folders import IMAGE_SUFFIXES, open_image
from ..data.photos import to_gray
from ..predict import fetch_image, load_inputs
from ._common import MODEL_HELP, UsageError, add_tta_argument, model_path, positive_int

MAX_SHOWN = 64  # pictures on a --show sheet; more would make a page nobody reads


def add_parser(sub: Any) -> None:
    pr = sub.add_parser("predict", help="classify images with a saved model",
                        description="Classify pictures (photos are framed as the training images "
                        "were: see docs/photos.md) and image files.")  # fmt: skip
    pr.add_argument("model", type=Path, help=MODEL_HELP)
    pr.add_argument("inputs", nargs="+", help="PNG/JPEG/GIF/BMP/WebP/AVIF pictures, HEIC photos "
                    "(with the heif extra), folders of them (searched recursively), pictures' "
                    "http(s) addresses, .csv, .npz, .npy, IDX files, - (stdin)")  # fmt: skip
    pr.add_argument("--top-k", type=positive_int, default=1,
                    help="the K most probable classes (default: 1)")  # fmt: skip
    pr.add_argument("--json", action="store_true",
                    help="one JSON object per image (default: one line of text)")  # fmt: skip
    pr.add_argument("--show", type=Path, metavar="OUT.png",
                    help=f"also draw each input beside the view the model saw, with its top "
                    f"classes (the first {MAX_SHOWN}) (default: no picture)")  # fmt: skip
    add_tta_argument(pr)


def _original(name: str) -> Any:
    """The picture a name points to, upright, for the --show sheet (None for other inputs)."""
    from PIL import Image, ImageOps

    path = Path(name)
    if is_url(name):  # fetched again (at most MAX_SHOWN): predict keeps no picture it has read
        try:
            source: Path | bytes = fetch_image(name)
        except DataError:
            return None
    elif path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
        return None
    else:
        source = path
    with open_image(source, name) as im:
        if im.mode.startswith(("I", "F")):  # 16/32-bit gray: scaled as the pipeline scales it
            return Image.fromarray(to_gray(im).astype(np.uint8))
        picture = ImageOps.exif_transpose(im)
        picture.thumbnail((512, 512))
        return picture.convert("RGBA" if "A" in picture.mode else "RGB")


def run(args: argparse.Namespace) -> int:
    if args.show is not None and args.show.suffix.lower() not in (".png", ".svg", ".pdf", ".jpg"):
        raise UsageError(f"--show {shown(args.show)}: expected a .png, .svg, .pdf or .jpg name")
    if args.show is not None and not args.show.parent.is_dir():  # said before any prediction
        raise UsageError(f"--show {shown(args.show)}: no folder {shown(args.show.parent)}")
    loaded = open_model(model_path(args.model))
    model = through(loaded.model, args.tta, loaded.image_shape)  # refused before any input is read
    names = tuple(shown(n) for n in loaded.class_names)
    stdin = sys.stdin.buffer.read() if "-" in args.inputs else None
    unread: list[DataError] = []

    def skip(e: DataError) -> None:  # the other inputs go on: one bad photo in a folder of 2,000
        print(f"fashionnet: error: {shown(str(e))}", file=sys.stderr)
        unread.append(e)

    labels, images = load_inputs(args.inputs, loaded.image_shape, stdin, on_error=skip)
    if not labels:
        return 2
    probs = model.predict_proba(to_float(images))
    found = top_classes(probs, names, args.top_k)
    for label, picks in zip(labels, found, strict=True):
        if args.json:
            top = [{"class": p["label"], "probability": p["score"]} for p in picks]
            print(json.dumps({"input": label, "predictions": top}))
        else:
            print(shown(label) + "  " + "  ".join(f"{p['label']} {p['score']:.4f}" for p in picks))
    if args.show is not None:
        from ..plots import prediction_sheet

        n = min(len(labels), MAX_SHOWN)
        captions = [shown(Path(label).name) + "\n" +
                    "\n".join(f"{p['label']} {p['score']:.2f}" for p in picks[:3])
                    for label, picks in zip(labels[:n], found[:n], strict=True)]  # fmt: skip
        prediction_sheet([_original(x) for x in labels[:n]], images[:n], captions, args.show)
        more = f" (the first {n} of {len(labels)})" if n < len(labels) else ""
        print(f"what the model saw: {shown(args.show)}{more}", file=sys.stderr)
    return 2 if unread else 0
