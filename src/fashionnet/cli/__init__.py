"""The `fashionnet` command: one module per command (add_parser and run), the only place that
prints and chooses exit codes.

Exit codes: 0 success (and `fashionnet` alone, which prints the help), 2 bad usage or bad input
(one line on stderr), 3 training diverged, 130 / 143 stopped by SIGINT / SIGTERM (saved).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import threads
from .._text import shown
from .._version import __version__
from ..checkpoint import CheckpointError
from ..data import DataError
from ..train import TrainingDiverged
from . import data, evaluate, export, predict, report, serve, summary, sweep, train
from ._common import UsageError

COMMANDS = {m.__name__.rsplit(".", 1)[1]: m for m in (train, evaluate, predict, report, summary,
                                                        export, serve, sweep, data)}  # fmt: skip


class Parser(argparse.ArgumentParser):
    """argparse, except that bad usage prints one short usage line and the error (two lines),
    not the whole usage block; subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        print(f"usage: {self.prog} [options] (see {self.prog} --help)", file=sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


EXAMPLES = """examples:
  fashionnet train                          the default MLP (about 0.91 in 2 minutes on 2 cores)
  fashionnet train --preset cnn --out runs/cnn
                                            a CNN; every preset: fashionnet train --help
  fashionnet evaluate runs/cnn              test accuracy, per class, most confused pairs
  fashionnet predict runs/cnn shirt.jpg photos/ --top-k 3 --show seen.png
                                            classify photos and see what the model saw
  fashionnet predict runs/cnn https://example.com/img/shirt.jpg
                                            a picture on the web, by its address
  fashionnet evaluate runs/cnn --data my_photos/ --mistakes 10
                                            photos sorted into a folder per class
  fashionnet report runs/cnn                report/report.html: curves, confusion, mistakes
  fashionnet export runs/cnn cnn.onnx --format onnx
                                            for onnxruntime and other runtimes
  fashionnet serve runs/cnn                 an HTTP API and a web page on http://127.0.0.1:8000/
  fashionnet data show --per-class 4 --out grid.png
                                            look at the data
  fashionnet data split my_photos/ my_dataset/
                                            photos by class as train/ and test/, to train on
  fashionnet train --from-model runs/cnn --data my_dataset/
                                            fine-tune a trained model on them

Each command's options: fashionnet COMMAND --help
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fashionnet", description="Train, evaluate and use Fashion-MNIST classifiers.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"fashionnet {__version__}")
    # not required: `fashionnet` alone prints the help and exits 0, as pip and git do
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        threads.from_env()  # a malformed FASHIONNET_THREADS is named before anything runs
        return int(COMMANDS[args.command].run(args))
    except ModuleNotFoundError as e:  # a dependency removed after install (--no-deps, uninstall)
        print(
            f"fashionnet: error: the {e.name} package is missing; reinstall fashionnet "
            f"(pip install fashionnet) to get its dependencies",
            file=sys.stderr,
        )
        return 2
    except (UsageError, DataError, CheckpointError, ValueError) as e:
        _error(str(e))
        return 2
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # a full disk, a read-only or missing folder, a folder in use: one line
        where = f"{e.filename}: " if e.filename is not None else ""
        _error(f"{where}{e.strerror or e}")
        return 2
    except TrainingDiverged as e:
        _error(f"training diverged: {e}")
        return 3
    except KeyboardInterrupt:
        print("fashionnet: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("fashionnet: error: out of memory", file=sys.stderr)
        return 2


def _error(message: str) -> None:
    """The one line of an error. Its paths may come from a folder listing or a file, so control
    characters are escaped as predict's output escapes them: a file named with an escape
    sequence must not retitle or clear the terminal that reads about it."""
    print(f"fashionnet: error: {shown(message)}", file=sys.stderr)


__all__ = ["UsageError", "build_parser", "main"]
