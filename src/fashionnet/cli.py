"""The `fashionnet` command: the only module that prints and chooses exit codes.

Exit codes: 0 success (and `fashionnet` alone, which prints the help), 2 bad usage or bad input
(one line on stderr), 3 training diverged.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .checkpoint import (
    CheckpointError,
    export_safetensors,
    load_model_with_metadata,
)
from .data import (
    CLASS_NAMES,
    ENV_VAR,
    DataError,
    Dataset,
    find_data,
    load_fashion_mnist,
    to_float,
    write_dataset,
)
from .data.download import download
from .data.integrity import verify_folder
from .metrics import report
from .model import Sequential
from .predict import load_inputs
from .recipes import PRESETS, make_config, train_run
from .train import TrainingDiverged, TrainState, evaluate


class UsageError(Exception):
    """Bad input found after parsing: reported as one line, exit 2."""


def _int_at_least(lo: int) -> Any:
    what = "a positive integer" if lo == 1 else f"an integer >= {lo}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lo - 1
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def _float_in(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = True) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}")
        return value

    return parse


def _hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes like 256,128, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashionnet", description="Train, evaluate and use Fashion-MNIST classifiers."
    )
    parser.add_argument("--version", action="version", version=f"fashionnet {__version__}")
    # not required: `fashionnet` alone prints the help and exits 0, as pip and git do
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tr = sub.add_parser("train", help="train a model and evaluate it on the test set")
    tr.add_argument("--preset", choices=sorted(PRESETS), default="mlp", help="recipe (default mlp)")
    tr.add_argument("--epochs", type=_positive_int)
    tr.add_argument("--batch-size", type=_positive_int)
    tr.add_argument("--lr", type=_float_in(0, 10, lo_open=True))
    tr.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    tr.add_argument("--weight-decay", type=_float_in(0, 1))
    tr.add_argument("--hidden", type=_hidden_sizes, help="hidden layer sizes, e.g. 256,128")
    tr.add_argument("--dropout", type=_float_in(0, 1))
    tr.add_argument("--label-smoothing", type=_float_in(0, 1))
    tr.add_argument("--tta", choices=["flip", "none"],
                    help="average each image's predictions with its mirror image's")  # fmt: skip
    tr.add_argument(
        "--schedule",
        choices=["constant", "cosine", "restarts"],
        help="restarts: cosine cycles, each twice as long as the one before",
    )
    tr.add_argument(
        "--cycle-epochs",
        type=_positive_int,
        help="the first cycle's length with --schedule restarts (default 4)",
    )
    tr.add_argument(
        "--patience", type=_positive_int, help="early stopping after N epochs without gain"
    )
    tr.add_argument("--val-size", type=_non_negative_int, help="validation images (default 5000)")
    tr.add_argument("--seed", type=_non_negative_int, help="random seed (default 0)")
    tr.add_argument("--limit", type=_positive_int, help="use only the first N images of each split")
    tr.add_argument("--data", help="folder of IDX files or Kaggle CSVs, or a training CSV")
    tr.add_argument("--out", type=Path, help="run folder (default runs/<timestamp>-<preset>)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar, no per-epoch lines")
    tr.add_argument("--no-report", action="store_true", help="skip the pictures and report")
    tr.add_argument(
        "--checkpoint-every", type=_positive_int, metavar="N",
        help="also save last.npz every N steps (default: every epoch)",
    )  # fmt: skip
    tr.add_argument(
        "--resume", type=Path, metavar="RUN_DIR",
        help="continue the run in RUN_DIR exactly where its last checkpoint left off",
    )  # fmt: skip

    ev = sub.add_parser("evaluate", help="evaluate a saved model on the test set")
    ev.add_argument("model", type=Path, help="model file (model.npz in a run folder) or run folder")
    ev.add_argument("--data", help="folder of IDX files or Kaggle CSVs, or a training CSV")
    ev.add_argument("--limit", type=_positive_int, help="use only the first N test images")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    rp = sub.add_parser("report", help="pictures and report.html / report.md for a run folder")
    rp.add_argument("run", type=Path, help="run folder of `fashionnet train`")
    rp.add_argument("--data", help="folder of IDX files or Kaggle CSVs, or a training CSV")
    rp.add_argument("--limit", type=_positive_int, help="use only the first N test images")

    pr = sub.add_parser("predict", help="classify images with a saved model")
    pr.add_argument("model", type=Path, help="model file (model.npz in a run folder) or run folder")
    pr.add_argument("inputs", nargs="+", help="PNG/JPEG images, .csv, .npz, IDX files, - (stdin)")
    pr.add_argument("--top-k", type=_positive_int, default=1, help="the K most probable classes")
    pr.add_argument("--json", action="store_true", help="one JSON object per image")

    da = sub.add_parser("data", help="inspect, check and convert datasets")
    dsub = da.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    info = dsub.add_parser("info", help="format, counts, image size and classes of a dataset")
    info.add_argument("path", nargs="?", help="dataset folder or training file (default: found)")
    verify = dsub.add_parser("verify", help="check the official files against their checksums")
    verify.add_argument("path", nargs="?", help="folder of the IDX files (default: found)")
    dl = dsub.add_parser("download", help="fetch the four official files (needs internet)")
    dl.add_argument("--dir", type=Path, help="destination (default: the user cache folder)")
    dl.add_argument("--url", default=None, help="mirror to fetch from (default: the official one)")
    show = dsub.add_parser("show", help="a labelled grid of a dataset's images, as a picture")
    show.add_argument("path", nargs="?", help="dataset folder or training file (default: found)")
    pick = show.add_mutually_exclusive_group()
    pick.add_argument("--index", type=_non_negative_int, nargs="+", help="these images")
    pick.add_argument("--per-class", type=_positive_int, help="the first K of each class")
    show.add_argument("--split", choices=["train", "test"], default="train")
    show.add_argument("--out", type=Path, required=True, help="picture file (.png, .svg, .pdf)")
    conv = dsub.add_parser("convert", help="write a dataset in another format")
    conv.add_argument("path", help="dataset folder or training file")
    conv.add_argument("out", type=Path, help="new folder for the converted train and test files")
    conv.add_argument("--format", choices=["idx", "csv", "npz"], required=True)

    ex = sub.add_parser("export", help="write a model's weights in another format")
    ex.add_argument("model", type=Path, help="model file (model.npz in a run folder) or run folder")
    ex.add_argument("--format", choices=["onnx", "safetensors"], required=True)
    ex.add_argument("out", type=Path, help="output file")
    return parser


def _model_path(path: Path) -> Path:
    return path / "model.npz" if path.is_dir() else path


def _epoch_line(record: dict[str, Any]) -> str:
    line = (
        f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f}"
    )
    if "val_loss" in record:
        line += f"  val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.4f}"
    return line + f"  {record['seconds']:.1f}s"


TRAIN_FLAGS = (
    "epochs", "batch_size", "lr", "optimizer", "weight_decay", "hidden", "dropout",
    "label_smoothing", "schedule", "cycle_epochs", "patience", "val_size", "seed", "limit", "data",
    "checkpoint_every", "tta",
)  # fmt: skip
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def _resume_config(args: argparse.Namespace) -> dict[str, Any]:
    given = [f"--{k.replace('_', '-')}" for k in TRAIN_FLAGS if getattr(args, k) is not None]
    if given:
        raise UsageError(f"--resume continues a run with its own settings; drop {' '.join(given)}")
    path = args.resume / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(
            f"--resume {args.resume}: no config.json, not a fashionnet run folder"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: cannot read ({e})") from None
    if not isinstance(config, dict) or config.get("preset") not in PRESETS:
        raise UsageError(f"{path}: not a fashionnet run configuration")
    return config


def _stop_on_signals(state: TrainState) -> None:
    """SIGINT / SIGTERM: finish the current step, then save and stop. A second one aborts."""

    def handler(signum: int, frame: object) -> None:
        if state.stop_requested is not None:
            raise KeyboardInterrupt
        state.stop_requested = signal.Signals(signum).name

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        config, out = _resume_config(args), args.resume
    else:
        config = make_config(args.preset, **{k: getattr(args, k) for k in TRAIN_FLAGS})
        if config.get("tta") == "none":
            config["tta"] = None
        if args.cycle_epochs is not None and config["schedule"] != "restarts":
            raise UsageError(f"--cycle-epochs needs --schedule restarts, not {config['schedule']}")
        out = args.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.preset}"
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out}: exists and is not a folder")
        if (out / "last.npz").exists():
            raise UsageError(f"--out {out}: holds a run already; continue it with --resume {out}")
    data = _load_data(config.get("data"))
    if config["val_size"] >= min(len(data.train), config["limit"] or len(data.train)):
        raise UsageError(f"--val-size {config['val_size']}: must be smaller than the training set")
    if not args.quiet:
        verb = "resuming" if args.resume else f"fashionnet train --preset {config['preset']}:"
        print(f"{verb} data {data.source}, run folder {out}")

    def on_epoch(record: dict[str, Any]) -> None:
        if not args.quiet:
            print(_epoch_line(record), flush=True)

    metrics = train_run(
        config, out, data=data, resume=bool(args.resume), on_epoch=on_epoch,
        on_start=_stop_on_signals, progress=False if args.quiet else None,
    )  # fmt: skip
    if metrics.get("interrupted"):
        name = metrics["interrupted"]
        print(
            f"stopped by {name} in epoch {metrics['epoch']} after step {metrics['step']}; "
            f"saved {out / 'last.npz'}. Resume with: fashionnet train --resume {out}",
            file=sys.stderr,
        )
        return EXIT_CODES.get(name, 130)
    print(
        f"test accuracy {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) "
        f"best epoch {metrics['best_epoch']}, trained {metrics['train_seconds']:.1f}s; "
        f"model {out / 'model.npz'}"
    )
    if not args.no_report:
        _write_report(out, config.get("data"), quiet=args.quiet)
    return 0


def _write_report(run: Path, data_path: str | None, *, limit: int | None = None,
                  quiet: bool = False) -> None:  # fmt: skip
    """The run's pictures and report.html / report.md in RUN_DIR/report/."""
    from .plots import write_report  # matplotlib is imported there, only when a report is drawn

    model, meta = load_model_with_metadata(run / "model.npz")
    images, labels, probs, result = _evaluate(model, meta, data_path, limit, warn=False)
    files = write_report(run, model, meta, images, labels, probs, result)
    if not quiet:
        print(f"report {files[-1]}")


def _evaluate(
    model: Sequential,
    meta: dict[str, Any],
    data_path: str | None,
    limit: int | None,
    *,
    warn: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(test images, labels, probabilities, every metric) of a saved model on the test set."""
    data = _load_data(data_path) if warn else load_fashion_mnist(data_path)
    images, labels = data.test.images[:limit], data.test.labels[:limit]
    expected = tuple(meta.get("image_shape", images.shape[1:]))
    if images.shape[1:] != expected:
        raise UsageError(
            f"{data.source}: images are {images.shape[1:]}, the model expects {expected}"
        )
    x = to_float(images)
    loss, acc = evaluate(model, x, labels)  # exactly the figures `train` printed
    probs = model.predict_proba(x)
    result: dict[str, Any] = {"test_accuracy": acc, "test_loss": loss, "test_size": len(labels)}
    result |= {k: v for k, v in report(labels, probs).items() if k != "accuracy"}
    return images, labels, probs, result


def cmd_evaluate(args: argparse.Namespace) -> int:
    model, meta = load_model_with_metadata(_model_path(args.model))
    _, labels, _, result = _evaluate(model, meta, args.data, args.limit)
    names = meta.get("class_names", list(CLASS_NAMES))
    acc, loss = result["test_accuracy"], result["test_loss"]
    if args.json:
        print(json.dumps(result | {"class_names": names}))
        return 0
    print(f"test accuracy {acc:.4f} (loss {loss:.4f}) on {len(labels)} images")
    print(f"top-2 accuracy {result['top_2_accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}\n")
    width = max(len(n) for n in names)
    print(f"{'class':<{width}}  precision  recall     F1  support")
    pc = result["per_class"]
    for i, name in enumerate(names):
        print(f"{name:<{width}}  {pc['precision'][i]:9.4f}  {pc['recall'][i]:6.4f}  "
              f"{pc['f1'][i]:.4f}  {pc['support'][i]:7d}")  # fmt: skip
    if result["most_confused"]:
        print("\nmost confused (true -> predicted: images)")
        for true, pred, count in result["most_confused"]:
            print(f"  {names[true]} -> {names[pred]}: {count}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    model, meta = load_model_with_metadata(_model_path(args.model))
    if args.out.is_dir():
        raise UsageError(f"{args.out}: is a folder, expected an output file name")
    if not args.out.parent.is_dir():
        raise UsageError(f"{args.out}: folder {args.out.parent} does not exist")
    if args.format == "onnx":
        try:
            from .export import export_onnx

            shape = meta.get("image_shape", [28, 28])
            export_onnx(args.out, model, n_features=int(np.prod(shape)),
                        input_scale=float(meta.get("input_scale", 1 / 255)))  # fmt: skip
        except ImportError:
            raise UsageError("--format onnx needs the onnx package: pip install onnx") from None
    else:
        export_safetensors(args.out, model)
    print(f"wrote {args.out} ({args.format}, {model.n_parameters():,} parameters)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if not (args.run / "model.npz").is_file():
        raise UsageError(f"{args.run}: no model.npz, not a finished fashionnet run folder")
    _write_report(args.run, args.data, limit=args.limit)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    model, meta = load_model_with_metadata(_model_path(args.model))
    shape = tuple(meta.get("image_shape", (28, 28)))
    names = list(meta.get("class_names", CLASS_NAMES))
    stdin = sys.stdin.buffer.read() if "-" in args.inputs else None
    labels, images = load_inputs(args.inputs, (int(shape[0]), int(shape[1])), stdin)
    probs = model.predict_proba(to_float(images))
    k = min(args.top_k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    for label, row, best in zip(labels, probs, top, strict=True):
        picks = [(names[c], float(row[c])) for c in best]
        if args.json:
            found = [{"class": n, "probability": p} for n, p in picks]
            print(json.dumps({"input": label, "predictions": found}))
        else:
            print(label + "  " + "  ".join(f"{n} {p:.4f}" for n, p in picks))
    return 0


def _load_data(path: str | None) -> Dataset:
    data = load_fashion_mnist(path)
    for note in data.warnings:
        print(f"fashionnet: warning: {note}", file=sys.stderr)
    return data


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "verify":
        folder = find_data(args.path)
        folder = folder if folder.is_dir() else folder.parent
        checks = verify_folder(folder)
        if not checks:
            raise UsageError(f"{folder}: no official Fashion-MNIST IDX files to verify")
        for check in checks:
            print(check.line())
        return 0 if all(c.ok for c in checks) else 1
    if args.data_command == "download":
        kwargs = {"base_url": args.url} if args.url else {}
        folder = download(args.dir, log=print, **kwargs)
        print(f"done: {folder} (use it with --data {folder} or {ENV_VAR}={folder})")
        return 0
    if args.data_command == "show" and args.out.suffix.lower() not in PICTURE_TYPES:
        raise UsageError(f"--out {args.out}: expected a {', '.join(PICTURE_TYPES)} file name")
    data = load_fashion_mnist(args.path)
    if args.data_command == "show":
        return _show(data, args)
    if args.data_command == "info":
        print(f"data {data.source}")
        for name, split in (("train", data.train), ("test", data.test)):
            counts = np.bincount(split.labels, minlength=len(data.class_names))
            per_class = ", ".join(
                f"{n} {c}" for n, c in zip(data.class_names, counts, strict=False)
            )
            h, w = split.images.shape[1:]
            print(f"{name}: {len(split)} images {h}x{w} {split.images.dtype}; {per_class}")
        for note in data.warnings:
            print(f"warning: {note}")
        return 0
    write_dataset(args.out, data, args.format)
    print(
        f"wrote {args.out} ({args.format}: {len(data.train)} train, {len(data.test)} test images)"
    )
    return 0


PICTURE_TYPES = (".png", ".svg", ".pdf")


def _show(data: Dataset, args: argparse.Namespace) -> int:
    """Write a grid of images titled with their index and class: chosen ones, or K per class."""
    split = data.train if args.split == "train" else data.test
    names = data.class_names
    if args.index:
        bad = [i for i in args.index if i >= len(split)]
        if bad:
            raise UsageError(
                f"--index {bad[0]}: the {args.split} split has {len(split)} images "
                f"(expected 0..{len(split) - 1})"
            )
        picks, columns = list(args.index), min(8, len(args.index))
    else:
        k = args.per_class or 8
        picks = []  # class by class, a row each; -1 leaves a cell empty
        for c in range(len(names)):
            found = np.flatnonzero(split.labels == c)[:k].tolist()
            picks += found + [-1] * (k - len(found))
        columns = k
    from .plots import image_grid

    blank = np.zeros(split.images.shape[1:], np.uint8)
    images = np.stack([split.images[i] if i >= 0 else blank for i in picks])
    titles = [f"#{i} {names[split.labels[i]]}" if i >= 0 else "" for i in picks]
    image_grid(images, titles, args.out, columns=columns)
    print(f"wrote {args.out} ({sum(i >= 0 for i in picks)} {args.split} images)")
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "data": cmd_data,
    "predict": cmd_predict,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except (
        ModuleNotFoundError
    ) as e:  # a dependency removed after install (pip uninstall, --no-deps)
        print(
            f"fashionnet: error: the {e.name} package is missing; reinstall fashionnet "
            f"(pip install fashionnet) to get its dependencies",
            file=sys.stderr,
        )
        return 2
    except (UsageError, DataError, CheckpointError, ValueError) as e:
        print(f"fashionnet: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"fashionnet: error: training diverged: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("fashionnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
