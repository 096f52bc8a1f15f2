"""fashionnet train: a run from a preset and flags, or --resume RUN_DIR. Its flags are RunConfig's
fields (one per field, same name), so a new setting needs no change here."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config import (
    CHOICES,
    FIELD_TYPES,
    PRESETS,
    ConfigError,
    RunConfig,
    parse_setting,
    show_setting,
)
from ..runs import Run
from ..train import History, TrainState, epoch_line
from ..transfer import run_settings
from ._common import UsageError, load_data

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
HANDLED = (signal.SIGINT, signal.SIGTERM)
NOT_FLAGS = {"preset"}  # --preset picks the starting point; it is recorded, not overridden
METAVARS = {"from_model": "MODEL", "data": "PATH"}  # what to give, where the name does not say


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parser(name: str) -> Any:
    """text -> the field's value, checked as RunConfig checks it (one rule, one message)."""

    def parse(text: str) -> Any:
        try:
            return parse_setting(name, text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(e.message) from None

    return parse


def add_parser(sub: Any) -> None:
    tr = sub.add_parser(
        "train", help="train a model and evaluate it on the test set",
        description="Train a preset, with any setting changed by its flag. Presets: "
        + "; ".join(f"{n}: {_summary(c)}" for n, c in PRESETS.items()),
    )  # fmt: skip
    tr.add_argument("--preset", choices=list(PRESETS),
                    help="the recipe the other settings start from (default: mlp; with "
                         "--from-model, the model's own preset)")  # fmt: skip
    for f in dataclasses.fields(RunConfig):
        if f.name in NOT_FLAGS:
            continue
        default = f"default: from --preset; mlp: {show_setting(getattr(PRESETS['mlp'], f.name))}"
        help_text = f"{f.metadata['help']} ({default})"
        if FIELD_TYPES[f.name] is bool:
            tr.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction,
                            default=argparse.SUPPRESS, help=help_text)  # fmt: skip
            continue
        choices = _choices(f.name)
        tr.add_argument(
            _flag(f.name), type=_parser(f.name), default=argparse.SUPPRESS, help=help_text,
            metavar="|".join(choices) if choices else METAVARS.get(f.name, f.name.upper()),
        )  # fmt: skip
    tr.add_argument("--out", type=Path, help="run folder (default: runs/<time>-<preset>)")
    tr.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar, no per-epoch lines (default: both, the bar on a terminal only)",
    )
    tr.add_argument(
        "--no-report",
        action="store_true",
        help="skip the pictures and report (default: write report/ in the run folder)",
    )
    tr.add_argument(
        "--resume", type=Path, metavar="RUN_DIR",
        help="continue the run in RUN_DIR exactly where its last checkpoint left off "
        "(default: start a new run)",
    )  # fmt: skip


def _choices(name: str) -> list[str]:
    if name not in CHOICES:
        return []
    return [*CHOICES[name], "none"] if FIELD_TYPES[name] is not str else list(CHOICES[name])


def _summary(config: RunConfig) -> str:
    """The settings in which a preset differs from the default one."""
    base = PRESETS["mlp"]
    changed = [
        f"{f.name}={show_setting(getattr(config, f.name))}"
        for f in dataclasses.fields(RunConfig)
        if f.name != "preset" and getattr(config, f.name) != getattr(base, f.name)
    ]
    return " ".join(changed) or "the default"


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields given as flags (absent ones are not in the namespace)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
            if f.name not in NOT_FLAGS and hasattr(args, f.name)}  # fmt: skip


def _stop_on_signals(state: TrainState) -> None:
    """SIGINT / SIGTERM: finish the current step, then save and stop. A second one aborts.
    Only the main thread may set handlers: a run started from another thread leaves signals to
    the process's own handlers."""

    def handler(signum: int, frame: object) -> None:
        if state.stop_requested is not None:
            raise KeyboardInterrupt
        state.stop_requested = signal.Signals(signum).name

    if threading.current_thread() is threading.main_thread():
        for s in HANDLED:
            signal.signal(s, handler)


@contextmanager
def _handlers_given_back() -> Iterator[None]:
    """The SIGINT / SIGTERM handlers as they were once the run ends. A process that called
    main() (a notebook, a test, a worker) keeps its own: left installed, the run's handler
    swallowed that process's next Ctrl-C, and a child it forked ignored SIGTERM (a
    multiprocessing pool's terminate() then waited forever)."""
    previous = {s: signal.getsignal(s) for s in HANDLED}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for s, handler in previous.items():
                if handler is not None:  # None: set outside Python, not ours to restore
                    signal.signal(s, handler)


def _afterword(
    history: History, config: RunConfig, metrics: dict[str, Any], n_classes: int
) -> list[str]:
    """What a user should know about how a run ended: an early stop, or a model no better than
    guessing (a learning rate too high for the recipe, labels that do not match the images)."""
    lines = []
    if history.stopped_early:
        lines.append(
            f"stopped early at epoch {len(history.epochs)} of {config.epochs}: no better "
            f"validation loss for {config.patience} epochs (best: epoch {history.best_epoch})"
        )
    chance = 1.0 / n_classes
    if metrics["test_accuracy"] < chance + 0.1 * (1 - chance):  # a tenth of the way to perfect
        lines.append(
            f"fashionnet: warning: test accuracy {metrics['test_accuracy']:.4f} is near chance "
            f"({chance:.4f} for {n_classes} classes): this model learned little; check the data "
            "and labels, or try a lower --lr"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    given = overrides(args)
    if args.resume:
        if given or args.out:
            flags = " ".join([_flag(k) for k in given] + (["--out"] if args.out else []))
            raise UsageError(f"--resume continues a run with its own settings; drop {flags}")
        training = Run.open(args.resume)
    else:
        try:
            training = Run(run_settings(args.preset, **given), args.out)
        except ConfigError as e:
            raise UsageError(f"{_flag(e.name)} {e.message}") from None
    config = training.config
    data = load_data(config.data)

    def on_start(started: Run, state: TrainState) -> None:
        _stop_on_signals(state)
        if not args.quiet:
            verb = "resuming" if args.resume else f"fashionnet train --preset {config.preset}" + (
                f" from {config.from_model}:" if config.from_model else ":")  # fmt: skip
            print(f"{verb} data {data.source}, run folder {started.folder}", flush=True)

    def on_epoch(record: dict[str, Any]) -> None:
        if not args.quiet:
            print(epoch_line(record, config.epochs, config.label_smoothing), flush=True)

    try:
        with _handlers_given_back():
            result = training.train(data, on_start=on_start, on_epoch=on_epoch,
                                    progress=False if args.quiet else None)  # fmt: skip
    except ConfigError as e:
        raise UsageError(f"{_flag(e.name)} {e.message}") from None
    out = training.folder
    if result.interrupted:
        name = result.interrupted
        print(
            f"stopped by {name} in epoch {result.epoch} after step {result.step}; "
            f"saved {out / 'last.npz'}. Resume with: fashionnet train --resume {out}",
            file=sys.stderr,
        )
        return EXIT_CODES.get(name, 130)
    metrics = result.metrics
    for line in _afterword(result.history, config, metrics, len(result.metadata["class_names"])):
        print(line, file=sys.stderr)
    c = result.metadata.get("calibration")
    if c:
        print(f"probabilities calibrated on {c['images']:,} validation images: temperature "
              f"{c['temperature']:.3f}, expected calibration error {c['val_ece_before']:.4f} -> "
              f"{c['val_ece_after']:.4f}")  # fmt: skip
    print(
        f"test accuracy {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) "
        f"best epoch {metrics['best_epoch']}, trained {metrics['train_seconds']:.1f}s; "
        f"model {out / 'model.npz'}"
    )
    if not args.no_report:
        from .report import write

        write(out, result.model, result.metadata, result.test.images, result.test.labels,
              quiet=args.quiet, evaluation=result.evaluation)  # fmt: skip
    return 0
