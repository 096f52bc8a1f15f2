"""Resuming a run: last.npz holds everything needed to continue bit-exactly (weights, optimiser
moments, the random generator, the data order, the history), checked on the way back in."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import NonFiniteError, read_checkpoint, save_checkpoint
from .model import Classifier, Sequential, unwrap
from .optim import Optimizer
from .train import TrainingDiverged, TrainState


class ResumeError(ValueError):
    """A run folder cannot be resumed (no config, a different dataset, a damaged checkpoint)."""


def data_checksum(*arrays: np.ndarray) -> str:
    """A short content hash of the training data, stored in checkpoints and checked on resume."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def save_last(
    path: Path,
    model: Classifier,
    optimizer: Optimizer,
    st: TrainState,
    rng: np.random.Generator,
    metadata: dict[str, Any],
) -> None:
    """last.npz: everything needed to continue bit-exactly from this point."""
    scalars, arrays = st.to_saved()
    try:
        save_checkpoint(
            path,
            model,
            metadata={**metadata, "train_state": scalars, "rng": rng.bit_generator.state},
            optimizer_state=optimizer.state_dict(),
            arrays={f"train.{k}": v for k, v in arrays.items()},
        )
    except NonFiniteError as e:  # the step overflowed: keep the last good checkpoint
        raise TrainingDiverged(st.epoch + 1, optimizer.steps, "the weights") from e


def load_last(
    path: Path,
    model: Classifier,
    optimizer: Optimizer,
    rng: np.random.Generator,
    checksum: str,
    n_train: int,
) -> tuple[TrainState, dict[str, Any]]:
    """Put model, optimizer and rng back as last.npz has them; return the training state and
    the file's metadata (what the run recorded beside it: a fine-tuned run's source model).

    The whole state is checked first (every key, type and range, the data order a permutation
    of the training set), and nothing is put back unless all of it fits: a damaged last.npz
    is one ResumeError naming the file, never a half-restored run.
    """
    meta, arrays = read_checkpoint(path)
    if meta.get("data_checksum") != checksum:
        raise ResumeError(f"{path}: written for other training data; resume with the same --data")
    parts: dict[str, dict[str, Any]] = {"param": {}, "buffer": {}, "optim": {}, "train": {}}
    for key, value in arrays.items():
        kind, _, name = key.partition(".")
        if kind not in parts:
            raise ResumeError(f"{path}: unknown state {key!r}")
        parts[kind][name] = value
    problem = _state_problem(meta, parts["train"], n_train, unwrap(model))
    if problem:
        raise ResumeError(f"{path}: {problem}")
    try:
        unwrap(model).load_state_dict(parts["param"] | parts["buffer"])
        optimizer.load_state_dict({**meta["optimizer"], "arrays": parts["optim"]})
        rng.bit_generator.state = meta["rng"]
    except (KeyError, TypeError, ValueError) as e:
        raise ResumeError(f"{path}: does not match the run's config ({e})") from None
    return TrainState.from_saved(meta["train_state"], parts["train"]), meta


_STATE_TYPES: dict[str, Any] = {
    "epoch": int, "batch": int, "loss_sum": float, "correct": int, "seen": int,
    "best_val_loss": float, "history": list, "best_epoch": int, "stopped_early": bool,
    "train_seconds": float,
}  # fmt: skip


def _state_problem(
    meta: dict[str, Any], train: dict[str, Any], n_train: int, model: Sequential
) -> str | None:
    """What is wrong with a resume state, or None: its keys, types and ranges."""
    state = meta.get("train_state")
    if not isinstance(state, dict) or set(state) != set(_STATE_TYPES):
        return "train_state is missing or has other keys than a run writes"
    for key, kind in _STATE_TYPES.items():
        value = state[key]
        ok = isinstance(value, kind) if kind is not float else isinstance(value, int | float)
        if not ok or (kind is int and (isinstance(value, bool) or value < 0)):
            return f"train_state {key} is {str(value)[:40]}, expected a {kind.__name__}"
    if not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in state["history"]):
        return "train_state history holds something other than epoch records"
    if not isinstance(meta.get("optimizer"), dict) or not isinstance(meta.get("rng"), dict):
        return "no optimizer or random generator state"
    if set(train) - {"order", "best_weights"}:
        return f"unknown training arrays {sorted(set(train) - {'order', 'best_weights'})}"
    order = train.get("order")
    if order is not None and (
        order.dtype.kind not in "iu"
        or order.shape != (n_train,)
        or not np.array_equal(np.sort(order), np.arange(n_train))
    ):
        return "train.order is not an order of the training images"
    best = train.get("best_weights")
    size = (model.flat.size if model.flat is not None else 0) + sum(
        b.size for b in model.named_buffers().values()
    )
    if best is not None and best.shape != (size,):
        return f"train.best_weights has shape {best.shape}, the model needs ({size},)"
    return None
