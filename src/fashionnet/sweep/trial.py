"""One trial: a full `fashionnet train` run in DIR/trials/NNNN, reporting each epoch's validation
figure to Optuna, which may prune it. Runs wherever a worker is (a local process, a Dask task),
with the data read there, once per process."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import show_setting
from ..data import Dataset, load_fashion_mnist
from ..runs import Run
from ..train import TrainingDiverged
from ..transfer import run_settings
from .space import Param

_DATA: dict[str | None, Dataset] = {}  # per process: a worker reads the data once


@dataclass(frozen=True)
class Sweep:
    """Everything a worker needs to run trials: plain values, cheap to send to a Dask task."""

    folder: str
    storage: str
    study: str
    preset: str
    params: tuple[Param, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    metric: str = "val_accuracy"
    total: int = 20
    prune: str = "median"
    seed: int = 0

    @property
    def direction(self) -> str:
        return "minimize" if self.metric == "val_loss" else "maximize"


def trial_folder(sweep: Sweep, number: int) -> Path:
    return Path(sweep.folder) / "trials" / f"{number:04d}"


def config_of(sweep: Sweep, values: dict[str, Any]) -> Any:
    return run_settings(sweep.preset, **{**sweep.fixed, **values})


def objective(sweep: Sweep, trial: Any) -> float:
    """Train the trial's recipe; its best epoch's validation figure is the score."""
    import optuna

    values = {p.name: p.suggest(trial) for p in sweep.params}
    config = config_of(sweep, values)
    trial.set_user_attr("config", config.to_json())
    if config.data not in _DATA:
        _DATA[config.data] = load_fashion_mnist(config.data)
    pruned = False

    def on_epoch(record: dict[str, Any]) -> bool:
        nonlocal pruned
        trial.report(record[sweep.metric], record["epoch"])
        pruned = trial.should_prune()
        return pruned

    folder = trial_folder(sweep, trial.number)
    result = Run(config, folder).train(_DATA[config.data], on_epoch=on_epoch, progress=False,
                                       test=False)  # fmt: skip
    score = float(result.metrics[sweep.metric])
    trial.set_user_attr("folder", str(folder))
    trial.set_user_attr("seconds", float(result.metrics["train_seconds"]))
    trial.set_user_attr("epochs", int(result.metrics["epochs"]))
    if pruned:
        raise optuna.TrialPruned(f"pruned after epoch {result.metrics['epochs']}")
    return score


def single_threaded() -> None:
    """One BLAS thread in this process: N workers on N cores, not N x cores threads."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(1, user_api="blas")
    os.environ["OMP_NUM_THREADS"] = "1"


def state_of(trial: Any) -> str:
    """A trial's state as the table, leaderboard and --status show it: Optuna's, except that
    a failed trial whose training diverged says so."""
    if trial.state.name == "FAIL" and "diverged" in trial.user_attrs:
        return "diverged"
    return str(trial.state.name.lower())


def counts(trial: Any) -> bool:
    """Whether a trial counts towards the sweep's total: complete, pruned, or diverged (its
    recipe was tried to its end). One that failed because the sweep was killed does not: its
    values run again."""
    return state_of(trial) in ("complete", "pruned", "diverged")


def run_trials(sweep: Sweep, worker: int, timeout: float | None = None) -> None:
    """Run trials of the shared study while it holds fewer than `total` counted or running
    ones: what each local worker process does. (Two workers deciding at the same moment may
    start one trial more than asked; never fewer.)"""
    import time

    single_threaded()
    study = _load(sweep, worker)
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        if sum(counts(t) or t.state.name == "RUNNING" for t in trials) >= sweep.total:
            return
        tell(study, sweep, study.ask())


def run_one_trial(sweep_json: str, worker: int) -> int:
    """A Dask task: one trial of the study; returns its number."""
    sweep = sweep_from_json(sweep_json)
    single_threaded()
    study = _load(sweep, worker)
    trial = study.ask()
    tell(study, sweep, trial)
    return int(trial.number)


def tell(study: Any, sweep: Sweep, trial: Any) -> None:
    """Run `trial` and record how it ended: its score, pruned, diverged, or failed (and
    raise). A recipe whose training diverges is an answer about the search space, as a low
    score is, so the sweep goes on: it is a failed trial with the reason kept."""
    import optuna
    from optuna.trial import TrialState

    try:
        value = objective(sweep, trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except TrainingDiverged as e:
        trial.set_user_attr("diverged", str(e))
        trial.set_user_attr("epochs", e.epoch)
        study.tell(trial, state=TrialState.FAIL)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        study.tell(trial, value)


def _load(sweep: Sweep, worker: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=sweep.study, storage=sweep.storage)
    # a continued sweep draws new values: the seed moves on with the trials already run
    study.sampler = sampler(sweep, worker + 100 * len(study.get_trials(deepcopy=False)))
    study.pruner = pruner(sweep)
    return study


def sampler(sweep: Sweep, worker: int) -> Any:
    """TPE, seeded per worker: workers sharing one study must not propose the same values (so a
    sweep is repeatable with one worker, not with several)."""
    import optuna

    return optuna.samplers.TPESampler(seed=sweep.seed * 1000 + worker, n_startup_trials=8)


def pruner(sweep: Sweep) -> Any:
    """Pruning from each epoch's validation figure: below the median of earlier trials at the
    same epoch, or successive halving; never in a trial's first epoch."""
    import optuna

    if sweep.prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if sweep.prune == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=2)
    return optuna.pruners.NopPruner()


def sweep_to_json(sweep: Sweep) -> str:
    raw = dict(sweep.__dict__)
    raw["params"] = [dict(p.__dict__) for p in sweep.params]
    raw["fixed"] = {k: show_setting(v) for k, v in sweep.fixed.items()}
    return json.dumps(raw)


def sweep_from_json(text: str) -> Sweep:
    from ..config import parse_setting

    raw = json.loads(text)
    params = []
    for p in raw.pop("params"):
        choices = tuple(parse_setting(p["name"], show_setting(_tuples(c))) for c in p["choices"])
        params.append(Param(p["name"], p["kind"], p["low"], p["high"], choices))
    fixed = {k: parse_setting(k, v) for k, v in raw.pop("fixed").items()}
    return Sweep(**raw, params=tuple(params), fixed=fixed)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
