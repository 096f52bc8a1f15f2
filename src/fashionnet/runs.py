"""Run: one training run and the folder it owns, from data to a tested, saved model.

The folder holds config.json (the RunConfig), last.npz (everything needed to resume bit-exactly,
rewritten every epoch), best.npz (the best validation epoch), history.jsonl, and at the end
model.npz and metrics.json, which record the data the run was trained and tested on.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._fsutil import atomic_write, lock_folder, open_regular, stale_temp_files
from .augment import make_augment
from .calibrate import calibrate
from .card import write_model_card
from .checkpoint import save_checkpoint
from .config import ConfigError, RunConfig
from .data import DataError, Dataset, Split, load_fashion_mnist, to_float, train_val_split
from .metrics import report
from .model import Classifier, FlipAveraged, cnn, mlp, resnet, unwrap
from .optim import Optimizer, make_optimizer
from .resume import ResumeError, data_checksum, load_last, save_last
from .schedules import Schedule, make_schedule
from .train import History, TrainState, evaluate, fit, quiet_floats
from .transfer import start_from

RUNS_ROOT = Path("runs")
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few hundred bytes
AUTO_VAL_MAX = 5000  # validation images held out at most when val_size is not given


def build_model(
    config: RunConfig, n_features: int, n_classes: int, rng: np.random.Generator
) -> Classifier:
    """The network `config` describes, its weights drawn from rng (wrapped in FlipAveraged when
    its predictions average views of each image)."""
    if config.arch in ("cnn", "resnet"):
        side = round(n_features**0.5)
        if side * side != n_features:
            raise ValueError(f"a CNN needs square images; got {n_features} pixels per image")
        build = cnn if config.arch == "cnn" else resnet
        model = build(
            side, config.stages, config.hidden, n_classes, rng=rng, dropout=config.dropout
        )
    else:
        model = mlp(
            n_features, config.hidden, n_classes, rng=rng, activation=config.activation,
            dropout=config.dropout, input_dropout=config.input_dropout,
            batch_norm=config.batch_norm, init=config.init,
        )  # fmt: skip
    return FlipAveraged(model, config.tta) if config.tta is not None else model


def build_training(
    config: RunConfig, n_features: int, n_classes: int, n_train: int, rng: np.random.Generator
) -> tuple[Classifier, Optimizer, Schedule]:
    """The model, its optimiser and the learning-rate schedule (in steps) `config` describes."""
    model = build_model(config, n_features, n_classes, rng)
    opt_args: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        opt_args |= {"momentum": config.momentum, "nesterov": config.nesterov}
    else:
        opt_args["beta2"] = config.beta2
    optimizer = make_optimizer(config.optimizer, unwrap(model).parameters(), **opt_args)
    return model, optimizer, lr_schedule(config, n_train)


def lr_schedule(config: RunConfig, n_train: int) -> Schedule:
    """The learning rate at each optimizer step of a run on `n_train` images."""
    steps_per_epoch = -(-n_train // config.batch_size)
    schedule: dict[str, Any] = {"name": config.schedule, "lr": config.lr}
    if config.schedule != "constant":
        schedule |= {
            "total_steps": config.epochs * steps_per_epoch,
            "warmup_steps": config.warmup_epochs * steps_per_epoch,
        }
    if config.cycle_epochs is not None:
        schedule["cycle_steps"] = config.cycle_epochs * steps_per_epoch
    return make_schedule(schedule)


def evaluate_test_set(model: Classifier, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Every test-set figure of a model: accuracy and loss as `train` reports them, top-2
    accuracy, per-class precision / recall / F1, the confusion matrix and the probabilities."""
    x = to_float(images)
    loss, acc = evaluate(model, x, labels)
    probs = model.predict_proba(x)
    result: dict[str, Any] = {"test_accuracy": acc, "test_loss": loss, "test_size": len(labels)}
    result |= {k: v for k, v in report(labels, probs).items() if k != "accuracy"}
    return result | {"probabilities": probs}


def splits_of(config: RunConfig, data: Dataset) -> tuple[Split, Split]:
    """The training and test images a run of `config` uses (its --limit applied); ConfigError
    when its validation split would take them all, DataError for data of one class."""
    if len(data.class_names) < 2:  # as scikit-learn's classifiers refuse it
        raise DataError(f"{data.source}: one class ({data.class_names[0]!r}); a classifier "
                        "needs at least two")  # fmt: skip
    train, test = data.train, data.test
    if config.limit:
        train, test = train.first(config.limit), test.first(config.limit)
    if config.val_size is not None and config.val_size >= len(train):
        raise ConfigError("val_size", f"{config.val_size}: must be smaller than the "
                                      f"{len(train)} training images")  # fmt: skip
    return train, test


def val_count(config: RunConfig, n_train: int) -> int:
    """How many of `n_train` training images a run holds out for validation: its val_size, or
    a tenth of them, at most AUTO_VAL_MAX (5,000 of Fashion-MNIST's 60,000; 14 of 144 photos)."""
    if config.val_size is not None:
        return config.val_size
    return min(AUTO_VAL_MAX, n_train // 10)


@dataclass
class RunResult:
    """What a finished run holds: the model, its metrics, and the exact test split they are on."""

    model: Classifier
    metadata: dict[str, Any]  # as stored in model.npz: class names, image shape, config, metrics
    test: Split
    history: History
    interrupted: str | None = None  # the signal's name when a run was stopped and saved
    epoch: int = 0  # where it stopped: the epoch in progress (1-based) and the steps done
    step: int = 0
    evaluation: dict[str, Any] | None = None  # evaluate_test_set's figures and probabilities

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.metadata["metrics"])


class Run:
    """A run folder. New runs get a folder of their own (runs/<time>-<preset>, with -2, -3 ...
    when that name is taken) created only once the data has been checked, so a run that cannot
    start leaves nothing behind."""

    def __init__(self, config: RunConfig, folder: Path | None = None) -> None:
        self.config = config
        self._folder = folder
        if folder is not None and (folder / "config.json").exists():
            raise ResumeError(f"{folder}: holds a run already; continue it with --resume {folder}")
        if folder is not None and folder.exists() and not folder.is_dir():
            raise ResumeError(f"{folder}: exists and is not a folder")
        self._resume, self._made = False, False
        self._lock: int | None = None  # the folder's lock while training

    @classmethod
    def open(cls, folder: Path) -> Run:
        """The run in `folder`, to resume it."""
        path = folder / "config.json"
        try:
            with open_regular(path) as f:
                raw = f.read(MAX_CONFIG_BYTES + 1)
            if len(raw) > MAX_CONFIG_BYTES:
                raise ResumeError(f"{path}: over {MAX_CONFIG_BYTES} bytes, not a run configuration")
            obj = json.loads(raw)
        except FileNotFoundError:
            raise ResumeError(f"{folder}: no config.json, not a fashionnet run folder") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ResumeError(
                f"{path}: cannot read ({getattr(e, 'strerror', None) or e})"
            ) from None
        try:
            config = RunConfig.from_json(obj)
        except ConfigError as e:
            raise ResumeError(f"{path}: not a fashionnet run configuration ({e})") from None
        run = cls(config)
        run._folder, run._resume = folder, True
        return run

    @property
    def folder(self) -> Path:
        if self._folder is None:
            raise RuntimeError("a new run's folder is made when it starts training")
        return self._folder

    def _make_folder(self) -> bool:
        """Create the folder (True) or take the one there (False); a default name taken by
        another run gets a suffix (mkdir is atomic, so two runs started in the same second
        still get two folders)."""
        if self._folder is not None:
            if self._folder.is_dir():
                return False
            self._folder.mkdir(parents=True)
            return True
        RUNS_ROOT.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{self.config.preset}"
        for n in range(1, 10_000):
            folder = RUNS_ROOT / (name if n == 1 else f"{name}-{n}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            self._folder = folder
            return True
        raise ResumeError(f"{RUNS_ROOT}: no free run folder name for {name}")

    def _write_json(self, name: str, obj: Any) -> None:
        with atomic_write(self.folder / name) as f:
            f.write((json.dumps(obj, indent=2) + "\n").encode())

    def train(
        self,
        data: Dataset | None = None,
        *,
        on_start: Callable[[Run, TrainState], None] | None = None,
        on_epoch: Callable[[dict[str, Any]], bool | None] | None = None,
        progress: bool | None = None,
        test: bool = True,
    ) -> RunResult:
        """Train as the config says (or continue from last.npz), test, and write the folder.

        `on_start` gets the run (its folder now made) and the training state before the first
        step, to set `stop_requested` from a signal handler: a stopped run saves last.npz and
        returns with `interrupted` set. The folder is locked while this runs: a second run on
        it is refused (FolderLocked). A run that fails before training starts removes what it
        made (the folder, or its config.json in a folder that was there). `on_epoch` returning
        True stops training after that epoch, as early stopping does (a sweep prunes so).
        `test=False` leaves the test set alone (a sweep's trials: only the chosen one is tested):
        no test figures, no model card.
        """
        try:
            return self._train(data, on_start, on_epoch, progress, test)
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    def _take_folder(self) -> None:
        """Make (or take) the folder and lock it; a folder this run made goes if that fails."""
        self._made = self._make_folder()
        try:
            self._lock = lock_folder(self.folder)
        except BaseException:  # another run holds it: what is in it is that run's, not ours
            if self._made:
                shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def _undo(self) -> None:
        """Remove what this run made before training started."""
        if self._made:
            shutil.rmtree(self.folder, ignore_errors=True)
        elif not self._resume:
            (self.folder / "config.json").unlink(missing_ok=True)

    @quiet_floats
    def _train(
        self,
        data: Dataset | None,
        on_start: Callable[[Run, TrainState], None] | None,
        on_epoch: Callable[[dict[str, Any]], bool | None] | None,
        progress: bool | None,
        test_set: bool,
    ) -> RunResult:
        config = self.config
        data = data if data is not None else load_fashion_mnist(config.data)
        train, test = splits_of(config, data)
        rng = np.random.default_rng(config.seed)
        checksum = data_checksum(train.images, train.labels)
        train, val = train_val_split(train, val_count(config, len(train)), rng)
        x, y = to_float(train.images), train.labels
        model, optimizer, schedule = build_training(
            config, x.shape[1], len(data.class_names), len(x), rng
        )
        resuming = self._resume and (self.folder / "last.npz").exists()
        start = None  # where a fine-tuned run's weights came from (last.npz keeps it)
        if config.from_model and not resuming:
            start = start_from(config.from_model, model, data.class_names, train.images.shape[1:])
        self._take_folder()
        last = self.folder / "last.npz"
        try:
            for stale in stale_temp_files(self.folder):  # left by a save killed half-way
                stale.unlink()
            state = TrainState()
            if resuming:
                state, saved = load_last(last, model, optimizer, rng, checksum, len(x))
                start = saved.get("from_model") if config.from_model else None
            elif not self._resume:
                self._write_json("config.json", config.to_json())
        except BaseException:
            self._undo()
            raise
        metadata: dict[str, Any] = {
            "class_names": list(data.class_names),
            "image_shape": list(train.images.shape[1:]),
            "input_scale": 1 / 255,
            "config": config.to_json(),
        }
        origin = {"from_model": start} if start else {}
        metadata |= origin

        def save_resume_point(st: TrainState) -> None:
            run_meta = {"config": config.to_json(), "data_checksum": checksum,
                        "step": optimizer.steps} | origin  # fmt: skip
            save_last(last, model, optimizer, st, rng, run_meta)

        def end_of_epoch(record: dict[str, Any]) -> bool:
            lines = [json.dumps(r) for r in state.history.epochs]
            with atomic_write(self.folder / "history.jsonl") as f:
                f.write(("\n".join(lines) + "\n").encode())
            if state.history.best_epoch == record["epoch"]:
                save_checkpoint(self.folder / "best.npz", model,
                                metadata={**metadata, "epoch": record["epoch"]})  # fmt: skip
            state.history.train_seconds = time.perf_counter() - started
            save_resume_point(state)
            return bool(on_epoch(record)) if on_epoch is not None else False

        def every_n_steps(st: TrainState) -> None:
            if config.checkpoint_every and optimizer.steps % config.checkpoint_every == 0:
                save_resume_point(st)

        if on_start is not None:
            on_start(self, state)
        started = time.perf_counter() - state.history.train_seconds
        # each epoch validated through 2 views at most; the final figures through all (below)
        x_val = to_float(val.images)
        watch = model.two_views() if isinstance(model, FlipAveraged) else model
        history = fit(
            watch, optimizer, (x, y), val=(x_val, val.labels) if len(val) else None,
            epochs=config.epochs, batch_size=config.batch_size, rng=rng, schedule=schedule,
            label_smoothing=config.label_smoothing,
            augment=make_augment({"flip": config.flip, "shift": config.shift,
                                  "erase": config.erase}, train.images.shape[1:]),
            patience=config.patience, callbacks=[end_of_epoch],
            step_callbacks=[every_n_steps] if config.checkpoint_every else [], state=state,
            progress=progress,
        )  # fmt: skip
        if history.interrupted:
            save_resume_point(state)
            return RunResult(model, metadata, test, history, interrupted=state.stop_requested,
                             epoch=state.epoch + 1, step=optimizer.steps)  # fmt: skip
        best = dict(history.best())
        if len(val) and watch is not model:  # the best epoch's weights, through every view
            best["val_loss"], best["val_accuracy"] = evaluate(model, x_val, val.labels)
        if config.calibrate:  # None when too few validation images say how (MODEL_CARD.md)
            metadata["calibration"] = calibrate(model, x_val, val.labels)
        t0 = time.perf_counter()
        evaluation = evaluate_test_set(model, test.images, test.labels) if test_set else None
        test_loss, test_acc = (evaluation["test_loss"], evaluation["test_accuracy"]) if (
            evaluation is not None) else (None, None)  # fmt: skip
        metadata["metrics"] = {
            "preset": config.preset, "seed": config.seed,
            "test_accuracy": test_acc, "test_loss": test_loss,
            "val_accuracy": best.get("val_accuracy"), "val_loss": best.get("val_loss"),
            "best_epoch": history.best_epoch,
            "epochs": len(history.epochs),
            "stopped_early": history.stopped_early,
            "train_seconds": history.train_seconds,
            "test_seconds": time.perf_counter() - t0,
            "n_parameters": unwrap(model).n_parameters(),
            "train_size": len(train), "val_size": len(val), "test_size": len(test),
            "data": data.source,
            "data_checksum": checksum,
        }  # fmt: skip
        if evaluation is None:  # untested: no test figures at all, rather than empty ones
            for key in ("test_accuracy", "test_loss", "test_seconds", "test_size"):
                del metadata["metrics"][key]
        save_checkpoint(self.folder / "model.npz", model, metadata=metadata)
        self._write_json("metrics.json", metadata["metrics"])
        if evaluation is not None:
            write_model_card(self.folder, metadata, evaluation)
        return RunResult(model, metadata, test, history, evaluation=evaluation)


def recorded_data(metadata: dict[str, Any]) -> tuple[str | None, int | None]:
    """(data path, limit) a saved model was tested on, from its metadata: where evaluate,
    report and predict look by default."""
    metrics = metadata.get("metrics")
    config = metadata.get("config")
    source = metrics.get("data") if isinstance(metrics, dict) else None
    limit = config.get("limit") if isinstance(config, dict) else None
    return (
        source if isinstance(source, str) and source else None,
        limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None,
    )


__all__ = [
    "RUNS_ROOT",
    "ResumeError",
    "Run",
    "RunResult",
    "build_model",
    "build_training",
    "data_checksum",
    "evaluate_test_set",
    "recorded_data",
]
