"""Presets and the end-to-end training run: data -> model -> fit -> test -> run folder.

A run is described by one JSON-safe config dict (a preset updated by the user's flags), which is
written to the run folder as config.json so the run can be reproduced exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .augment import make_augment
from .checkpoint import atomic_write, save_checkpoint
from .data import Dataset, load_fashion_mnist, to_float, train_val_split
from .model import Sequential, mlp
from .optim import make_optimizer
from .schedules import make_schedule
from .train import History, evaluate, fit

PRESETS: dict[str, dict[str, Any]] = {
    # The notebook's 784-10-10 ReLU net and its U(-0.5, 0.5) init, trained correctly.
    "seed": {
        "hidden": [10],
        "activation": "relu",
        "init": "uniform",
        "dropout": 0.0,
        "optimizer": "adam",
        "lr": 3e-3,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "warmup_epochs": 0,
        "epochs": 40,
        "batch_size": 256,
        "label_smoothing": 0.0,
    },
    # The default: a wider MLP with dropout, AdamW and a cosine schedule.
    "mlp": {
        "hidden": [512, 256],
        "activation": "relu",
        "init": "he",
        "dropout": 0.2,
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.05,
        "schedule": "cosine",
        "warmup_epochs": 0,
        "epochs": 30,
        "batch_size": 128,
        "label_smoothing": 0.0,
    },
}
COMMON: dict[str, Any] = {"val_size": 5000, "seed": 0, "patience": None, "limit": None}


def make_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """The preset's settings, with every override that is not None applied."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    config = {"preset": preset, **COMMON, **PRESETS[preset]}
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def build(
    config: dict[str, Any], n_features: int, n_classes: int, rng: np.random.Generator
) -> Sequential:
    return mlp(
        n_features,
        config["hidden"],
        n_classes,
        rng=rng,
        activation=config["activation"],
        dropout=config["dropout"],
        init=config["init"],
    )


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path) as f:
        f.write((json.dumps(obj, indent=2) + "\n").encode())


def train_run(
    config: dict[str, Any],
    out_dir: Path,
    *,
    data: Dataset | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train as `config` says, test, write the run folder; return the metrics."""
    data = data if data is not None else load_fashion_mnist(config.get("data"))
    rng = np.random.default_rng(config["seed"])
    train, test = data.train, data.test
    if config.get("limit"):
        n = int(config["limit"])
        train, test = (
            type(train)(train.images[:n], train.labels[:n]),
            type(test)(test.images[:n], test.labels[:n]),
        )
    train, val = train_val_split(train, config["val_size"], rng)
    x, y = to_float(train.images), train.labels
    n_classes = len(data.class_names)
    model = build(config, x.shape[1], n_classes, rng)
    opt_args: dict[str, Any] = {"lr": config["lr"], "weight_decay": config["weight_decay"]}
    if config["optimizer"] == "sgd":
        opt_args |= {
            "momentum": config.get("momentum", 0.9),
            "nesterov": config.get("nesterov", True),
        }
    optimizer = make_optimizer(config["optimizer"], model.parameters(), **opt_args)
    steps_per_epoch = -(-len(x) // config["batch_size"])
    schedule = make_schedule(
        {"name": "constant", "lr": config["lr"]}
        if config["schedule"] == "constant"
        else {
            "name": "cosine",
            "lr": config["lr"],
            "total_steps": config["epochs"] * steps_per_epoch,
            "warmup_steps": config["warmup_epochs"] * steps_per_epoch,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "config.json", config)
    history_lines: list[str] = []

    def record_epoch(record: dict[str, Any]) -> None:
        history_lines.append(json.dumps(record))
        with atomic_write(out_dir / "history.jsonl") as f:
            f.write(("\n".join(history_lines) + "\n").encode())
        if on_epoch is not None:
            on_epoch(record)

    has_val = len(val) > 0
    history: History = fit(
        model,
        optimizer,
        (x, y),
        val=(to_float(val.images), val.labels) if has_val else None,
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        rng=rng,
        schedule=schedule,
        label_smoothing=config["label_smoothing"],
        augment=make_augment(config.get("augment"), train.images.shape[1:]),
        patience=config["patience"],
        callbacks=[record_epoch],
        progress=progress,
    )
    t0 = time.perf_counter()
    test_loss, test_acc = evaluate(model, to_float(test.images), test.labels)
    best = history.best()
    metrics = {
        "preset": config["preset"],
        "seed": config["seed"],
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "val_accuracy": best.get("val_accuracy"),
        "val_loss": best.get("val_loss"),
        "best_epoch": history.best_epoch,
        "epochs": len(history.epochs),
        "stopped_early": history.stopped_early,
        "train_seconds": history.train_seconds,
        "test_seconds": time.perf_counter() - t0,
        "n_parameters": model.n_parameters(),
        "train_size": len(train),
        "val_size": len(val),
        "test_size": len(test),
        "data": data.source,
    }
    save_checkpoint(
        out_dir / "model.npz",
        model,
        metadata={
            "class_names": list(data.class_names),
            "image_shape": list(train.images.shape[1:]),
            "input_scale": 1 / 255,
            "metrics": metrics,
            "config": config,
        },
    )
    _write_json(out_dir / "metrics.json", metrics)
    return metrics
