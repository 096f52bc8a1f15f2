"""fashionnet export MODEL --format onnx|safetensors OUT."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..checkpoint import export_safetensors
from ..classify import through
from ..model import unwrap
from ._common import MODEL_HELP, UsageError, add_tta_argument, load_model


def add_parser(sub: Any) -> None:
    ex = sub.add_parser("export", help="write a model's weights in another format")
    ex.add_argument("model", type=Path, help=MODEL_HELP)
    ex.add_argument("--format", choices=["onnx", "safetensors"], required=True,
                    help="onnx: for onnxruntime and other runtimes; safetensors: the "
                    "weights alone (required)")  # fmt: skip
    ex.add_argument("out", type=Path, help="output file")
    add_tta_argument(ex)  # the views the ONNX graph averages; safetensors holds weights alone


def run(args: argparse.Namespace) -> int:
    model, meta = load_model(args.model)
    if args.format == "safetensors" and args.tta != "model":
        raise UsageError("--tta: safetensors holds the weights alone, not how they predict")
    model = through(model, args.tta, tuple(meta.get("image_shape", (28, 28))))
    if args.out.is_dir():
        raise UsageError(f"{args.out}: is a folder, expected an output file name")
    if not args.out.parent.is_dir():
        raise UsageError(f"{args.out}: folder {args.out.parent} does not exist")
    facts: dict[str, Any] = {
        k: meta[k] for k in ("class_names", "image_shape", "input_scale") if k in meta
    }
    if args.format == "onnx":
        try:
            from ..export import export_onnx

            shape = meta.get("image_shape", [28, 28])
            export_onnx(args.out, model, n_features=int(np.prod(shape)),
                        input_scale=float(meta.get("input_scale", 1 / 255)),
                        facts=facts | {"fashionnet_version": __version__})  # fmt: skip
        except ImportError:
            raise UsageError(
                "--format onnx needs the onnx extra: pip install 'fashionnet[onnx]'"
            ) from None
    else:
        export_safetensors(args.out, model, metadata=facts)
    print(f"wrote {args.out} ({args.format}, {unwrap(model).n_parameters():,} parameters)")
    return 0
