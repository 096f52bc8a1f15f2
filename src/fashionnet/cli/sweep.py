"""fashionnet sweep --out DIR ...: a hyperparameter search; fashionnet sweep DIR --status."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..config import PRESETS
from ..sweep.space import METRICS, PRUNE
from ._common import (
    UsageError,
    load_data,
    non_negative_int,
    positive_float,
    positive_int,
)


def add_parser(sub: Any) -> None:
    sw = sub.add_parser(
        "sweep", help="search hyperparameters (Optuna; local processes or a Dask cluster)",
        description="Search a preset's settings: every trial a full run folder in DIR/trials, "
        "ranked on validation accuracy; the chosen one is tested once at the end. Running the "
        "same command again continues the study. Needs the sweep extra (and dask for --dask).",
        epilog="--param NAME=KIND:LOW:HIGH, KIND float, logfloat or int, or NAME=choice:a,b,c "
        "(hidden, stages: choices split by |). Example: fashionnet sweep --out sweeps/mlp "
        "--trials 40 --param lr=logfloat:1e-4:1e-2 --param hidden=choice:256,128|512,256",
    )  # fmt: skip
    sw.add_argument("dir", nargs="?", type=Path, help="with --status: the sweep to show")
    sw.add_argument(
        "--out", type=Path, help="the sweep's folder (default: none; needed to run a sweep)"
    )
    sw.add_argument("--spec", type=Path, help="a TOML file with these settings and [params] "
                    "(default: flags only)")  # fmt: skip
    sw.add_argument("--preset", choices=list(PRESETS), help="the recipe trials start from "
                    "(default: mlp)")  # fmt: skip
    sw.add_argument("--trials", type=positive_int,
                    help="finished trials the study should hold (default: 20)")  # fmt: skip
    sw.add_argument("--param", action="append", default=[], metavar="NAME=KIND:LOW:HIGH",
                    help="a setting to search (repeatable) (default: lr, weight_decay, "
                    "label_smoothing)")  # fmt: skip
    sw.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting fixed for every trial, e.g. epochs=5 (default: the preset's)",
    )
    sw.add_argument("--metric", choices=METRICS,
                    help="what trials are ranked on (default: val_accuracy)")  # fmt: skip
    sw.add_argument("--workers", type=positive_int,
                    help="local worker processes (default: the number of cores)")  # fmt: skip
    sw.add_argument("--dask", metavar="ADDRESS", help="run trials on this Dask scheduler, "
                    "e.g. tcp://10.0.0.5:8786 (default: local processes)")  # fmt: skip
    sw.add_argument("--storage", help="Optuna storage URL shared by all workers (default: "
                    "sqlite:///DIR/study.db)")  # fmt: skip
    sw.add_argument("--timeout", type=positive_float, metavar="MIN",
                    help="stop starting trials after MIN minutes (default: none)")  # fmt: skip
    sw.add_argument("--prune", choices=PRUNE,
                    help="stop poor trials early (default: median)")  # fmt: skip
    sw.add_argument("--seed", type=non_negative_int, help="the sampler's seed (default: 0)")
    sw.add_argument("--status", action="store_true", help="show DIR's trials and best, run "
                    "nothing (default: run)")  # fmt: skip


DEFAULT_PARAMS = ("lr=logfloat:1e-4:1e-2", "weight_decay=logfloat:1e-3:0.5",
                  "label_smoothing=float:0:0.2")  # fmt: skip


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from ..config import ConfigError, parse_setting
    from ..sweep.space import load_spec, parse_param

    spec = load_spec(args.spec) if args.spec else {}
    keys = ("preset", "trials", "metric", "prune", "seed", "workers", "timeout")
    flags = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    defaults = {"preset": "mlp", "trials": 20, "metric": "val_accuracy", "prune": "median",
                "seed": 0, "workers": os.cpu_count() or 1, "timeout": None}  # fmt: skip
    settings = {**defaults, **spec, **flags}
    params = [parse_param(p) for p in args.param] or spec.get("params") or [
        parse_param(p) for p in DEFAULT_PARAMS]  # fmt: skip
    fixed = dict(spec.get("set", {}))
    for item in args.set:
        name, eq, text = item.partition("=")
        if not eq:
            raise UsageError(f"--set {item!r}: expected NAME=VALUE")
        try:
            fixed[name.replace("-", "_")] = parse_setting(name.replace("-", "_"), text)
        except ConfigError as e:
            raise UsageError(f"--set {item!r}: {e.name} {e.message}") from None
    swept = {p.name for p in params}
    both = sorted(swept & set(fixed))
    if both:
        raise UsageError(f"--set {both[0]}: also searched by --param; choose one")
    if settings["preset"] not in PRESETS:
        raise UsageError(f"preset {settings['preset']!r}: not one of {', '.join(PRESETS)}")
    return {**settings, "params": tuple(params), "fixed": fixed}


def run(args: argparse.Namespace) -> int:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UsageError("fashionnet sweep needs the sweep extra: pip install "
                         "'fashionnet[sweep]'") from None  # fmt: skip
    from ..sweep.space import SpecError

    try:
        return _status(args) if args.status else _run(args)
    except SpecError as e:
        raise UsageError(str(e)) from None


def _run(args: argparse.Namespace) -> int:
    from .._fsutil import FolderLocked, lock_folder
    from ..config import ConfigError
    from ..runs import splits_of
    from ..sweep.output import finish
    from ..sweep.runner import (
        Table,
        connect,
        open_study,
        recover,
        run_dask,
        run_local,
        storage_of,
    )
    from ..sweep.trial import Sweep, config_of
    from ..transfer import ARCH_FIELDS

    if args.out is None:
        raise UsageError("--out DIR: the sweep's folder is required (or DIR --status)")
    s = _settings(args)
    folder = args.out.resolve()
    sweep = Sweep(str(folder), args.storage or f"sqlite:///{folder / 'study.db'}", "fashionnet",
                  s["preset"], s["params"], s["fixed"], s["metric"], s["trials"], s["prune"],
                  s["seed"])  # fmt: skip
    # the fixed settings, the storage and the data, checked before anything starts (the data:
    # every worker reads it, and this process tests the chosen trial on it)
    try:
        config = config_of(sweep, {})
        varied = [p.name for p in sweep.params if config.from_model and p.name in ARCH_FIELDS]
        if varied:
            raise ConfigError(varied[0], f"is the model's own: a sweep from {config.from_model} "
                                         "keeps its layers")  # fmt: skip
        if args.storage or (folder / "study.db").exists():
            storage_of(sweep.storage)
        splits_of(config, load_data(config.data))
    except ConfigError as e:
        raise UsageError(f"{e.name} {e.message}") from None
    client = connect(args.dask) if args.dask else None  # an unreachable scheduler: exit 2 here
    (folder / "trials").mkdir(parents=True, exist_ok=True)
    try:
        lock = lock_folder(folder)
    except FolderLocked:
        raise UsageError(f"{folder}: another fashionnet sweep is running in it") from None
    try:
        study = open_study(sweep)
        lost = [] if args.dask else recover(study)
        if lost:
            print(f"fashionnet sweep: trials {lost} were running when the sweep stopped: "
                  "marked failed, their values queued again", file=sys.stderr)  # fmt: skip
        table = Table(study, sweep)
        timeout = s["timeout"] * 60 if s["timeout"] else None
        if client is not None:
            with client:
                run_dask(sweep, client, study, table, timeout)
        else:
            run_local(sweep, s["workers"], timeout, table)
        summary = finish(study, sweep)
    finally:
        os.close(lock)
    if summary is None:
        raise UsageError(f"{folder}: no trial completed; see the messages above")
    print(f"best: trial {summary['best_trial']}, {sweep.metric} {summary[sweep.metric]:.4f}, "
          f"test accuracy {summary['test_accuracy']:.4f} ({folder / 'best'})")  # fmt: skip
    print(f"train it again: {summary['train_command']}")
    print(f"leaderboard {folder / 'leaderboard.csv'}, report {folder / 'report.html'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    import optuna

    from ..sweep.runner import storage_of
    from ..sweep.trial import state_of

    folder = args.dir or args.out
    if folder is None or (not (folder / "study.db").exists() and not args.storage):
        raise UsageError(f"{folder}: no study.db here, not a fashionnet sweep folder")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_of(args.storage or f"sqlite:///{folder.resolve() / 'study.db'}")
    try:
        study = optuna.load_study(study_name="fashionnet", storage=storage)
    except KeyError:  # a database, without a sweep's study in it
        raise UsageError(f"{folder}: its storage holds no fashionnet sweep") from None
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[state_of(t)] = counts.get(state_of(t), 0) + 1
    print(f"{folder}: {len(trials)} trials ({', '.join(f'{n} {k}' for k, n in counts.items())})")
    print(json.dumps(study.user_attrs.get("sweep", {})))
    summary = folder / "summary.json"
    if summary.is_file():  # not a FIFO, whose read would wait for a writer
        print(summary.read_text().strip())
    return 0
