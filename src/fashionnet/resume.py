"""Resuming a run: last.npz holds everything needed to continue bit-exactly (weights, optimiser
moments, the random generator, the data order, the history), checked on the way back in."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import NonFiniteError, read_checkpoint, save_checkpoint
from .model import Classifier, unwrap
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
    path: Path, model: Classifier, optimizer: Optimizer, rng: np.random.Generator, checksum: str
) -> TrainState:
    """Put model, optimizer and rng back as last.npz has them; return the training state."""
    meta, arrays = read_checkpoint(path)
    if meta.get("data_checksum") != checksum:
        raise ResumeError(f"{path}: written for other training data; resume with the same --data")
    stored = ("param.", "buffer.")
    state = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(stored)}
    try:
        unwrap(model).load_state_dict(state)
    except ValueError as e:
        raise ResumeError(f"{path}: does not match the run's config ({e})") from None
    optim_arrays = {
        k.removeprefix("optim."): v for k, v in arrays.items() if k.startswith("optim.")
    }
    optimizer.load_state_dict({**meta["optimizer"], "arrays": optim_arrays})
    rng.bit_generator.state = meta["rng"]
    train_arrays = {
        k.removeprefix("train."): v for k, v in arrays.items() if k.startswith("train.")
    }
    return TrainState.from_saved(meta["train_state"], train_arrays)
