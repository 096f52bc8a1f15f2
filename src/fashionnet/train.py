"""fit(...) -> History: minibatches, validation, best-epoch weights, early stopping, resuming."""

from __future__ import annotations

import ctypes
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar, cast

import numpy as np

from .augment import Augment
from .layers import Array, array_namespace
from .losses import softmax_cross_entropy
from .model import INFERENCE_BATCH, Classifier, Sequential, unwrap
from .optim import Optimizer
from .schedules import Schedule


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN or infinite; that step (1-based) was not applied."""

    def __init__(self, epoch: int, step: int, what: str) -> None:
        super().__init__(f"{what} became non-finite at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    interrupted: bool = False
    train_seconds: float = 0.0

    def best(self) -> dict[str, Any]:
        return self.epochs[self.best_epoch - 1]


@dataclass
class TrainState:
    """Where training stands, between two steps: enough to continue bit-exactly.

    `order` is the current epoch's shuffled sample order and `batch` how many of its batches are
    done; the sums are the running train loss / correct counts of the unfinished epoch.
    """

    epoch: int = 0  # finished epochs
    batch: int = 0
    order: Array | None = None
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    best_val_loss: float = math.inf
    best_weights: Array | None = None  # the flat parameter buffer, then the model's buffers
    history: History = field(default_factory=History)
    stop_requested: str | None = None  # set (e.g. by a signal handler) to stop after this step

    def to_saved(self) -> tuple[dict[str, Any], dict[str, Array]]:
        """(JSON-safe scalars, named arrays) for a checkpoint."""
        h = self.history
        scalars = {
            "epoch": self.epoch, "batch": self.batch, "loss_sum": self.loss_sum,
            "correct": self.correct, "seen": self.seen, "best_val_loss": self.best_val_loss,
            "history": h.epochs, "best_epoch": h.best_epoch, "stopped_early": h.stopped_early,
            "train_seconds": h.train_seconds,
        }  # fmt: skip
        arrays = {"order": self.order, "best_weights": self.best_weights}
        return scalars, {k: v for k, v in arrays.items() if v is not None}

    @classmethod
    def from_saved(cls, scalars: dict[str, Any], arrays: dict[str, Array]) -> TrainState:
        s = dict(scalars)
        history = History(
            epochs=s.pop("history"),
            best_epoch=s.pop("best_epoch"),
            stopped_early=s.pop("stopped_early"),
            train_seconds=s.pop("train_seconds"),
        )
        return cls(
            **s, order=arrays.get("order"), best_weights=arrays.get("best_weights"), history=history
        )


# Called after every epoch with that epoch's record; returning True stops training.
Callback = Callable[[dict[str, Any]], bool | None]
# Called after every step with the state; used for checkpoints every N steps.
StepCallback = Callable[[TrainState], None]


@cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the OS.

    A training step allocates the same few hundred-kilobyte temporaries every time; by default
    glibc returns them to the OS (mmap/trim) and the next step page-faults them back in
    (BENCHMARKS.md: what that cost). Process-wide, idempotent; a no-op without glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(
        libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
    )


def evaluate(
    model: Classifier, x: Array, y: Array, *, batch_size: int = INFERENCE_BATCH
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of model on (x, y), in inference mode (through the test-time
    averaging of a FlipAveraged model)."""
    y = _checked_pair(x, y)
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        batch, labels = x[start : start + batch_size], y[start : start + batch_size]
        # a Sequential's logits (which rank as its probabilities do) give the loss at once; a
        # FlipAveraged model averages probabilities
        out = model.forward(batch) if isinstance(model, Sequential) else model.predict_proba(batch)
        if start == 0:
            _check_labels(y, out.shape[1])
        if isinstance(model, Sequential):
            loss, _ = softmax_cross_entropy(out, labels)
        else:
            picked = out[np.arange(len(labels)), labels]
            loss = float(-np.log(np.maximum(picked, np.finfo(out.dtype).tiny)).mean())
        total_loss += loss * len(labels)
        correct += int((out.argmax(axis=1) == labels).sum())
    return total_loss / len(x), correct / len(x)


def _checked_pair(x: Array, y: Array, what: str = "") -> Array:
    """`y` as an array of `x`'s module (NumPy, or CuPy on a GPU), as long as `x`, not empty."""
    y = array_namespace(x).asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{what}{len(x)} images and {len(y)} labels: expected as many, at least one"
        )
    return y


def _check_labels(y: Array, outputs: int, what: str = "") -> None:
    """Labels the model can score, said as such rather than as NumPy's IndexError (or, for a
    negative one, silently the last class)."""
    if not 0 <= int(y.min()) <= int(y.max()) < outputs:
        raise ValueError(f"{what}labels must be in 0..{outputs - 1} (the model's outputs), "
                         f"got {int(y.min())}..{int(y.max())}")  # fmt: skip


F = TypeVar("F", bound=Callable[..., Any])


def quiet_floats(fn: F) -> F:
    """Run `fn` without NumPy's floating-point warnings: a diverging run is reported once, as
    TrainingDiverged or in its losses, and the warnings would only print NumPy's source lines
    before that."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a fresh one a call
            return fn(*args, **kwargs)

    return cast(F, wrapper)


@quiet_floats
def fit(
    model: Classifier,
    optimizer: Optimizer,
    train: tuple[Array, Array],
    *,
    val: tuple[Array, Array] | None = None,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    schedule: Schedule | None = None,
    label_smoothing: float = 0.0,
    augment: Augment | None = None,
    patience: int | None = None,
    restore_best: bool = True,
    callbacks: Sequence[Callback] = (),
    step_callbacks: Sequence[StepCallback] = (),
    state: TrainState | None = None,
    progress: bool | None = None,
    verbose: int = 0,
) -> History:
    """Train for `epochs` passes over `train`, reshuffled each epoch from `rng`.

    With `val`, the epoch with the lowest validation loss (a steadier guide than the accuracy,
    which ties and jumps by single images) is remembered; `patience` epochs
    without improvement stop training, and `restore_best` puts the best weights back at the end.
    `augment` transforms each training batch with `rng`. Pass a `state` (with the rng, model and
    optimizer restored alongside it) to continue an interrupted run exactly where it stopped.
    `progress`: a tqdm bar (None: only on a terminal); `verbose=2` also prints one line per
    epoch (what a log file or a notebook wants; Keras' verbose=2). A FlipAveraged model trains
    its Sequential and is validated with the averaging.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    labels = {what: _checked_pair(*pair, f"{what}: ")
              for what, pair in (("train", train), ("val", val)) if pair is not None}  # fmt: skip
    outputs = unwrap(model).predict_proba(train[0][:1], pixels=False).shape[1]  # no state kept
    for what, y in labels.items():
        _check_labels(y, outputs, f"{what}: ")
    keep_freed_memory()
    st = state if state is not None else TrainState()
    history = st.history
    bar = ProgressBar(len(train[0]), epochs, progress)
    start_time = time.perf_counter() - history.train_seconds
    while st.epoch < epochs and not history.stopped_early and st.stop_requested is None:
        epoch, t0 = st.epoch + 1, time.perf_counter()
        bar.start(epoch, st.seen)
        finished = train_epoch(
            unwrap(model), optimizer, train, st, batch_size=batch_size, rng=rng, schedule=schedule,
            label_smoothing=label_smoothing, augment=augment,
            step_callbacks=[bar.update, *step_callbacks],
        )  # fmt: skip
        bar.close()
        if not finished:  # stopped mid-epoch: the state is left ready to resume
            history.interrupted = True
            break
        record = _finish_epoch(st, model, optimizer, val, restore_best, epoch, len(train[0]))
        record["seconds"] = time.perf_counter() - t0
        history.epochs.append(record)
        if verbose >= 2:
            print(epoch_line(record, epochs, label_smoothing), flush=True)
        # recorded in the state before the callbacks save it: a stopped run stays stopped
        history.stopped_early = patience is not None and epoch - history.best_epoch >= patience
        if any([cb(record) for cb in callbacks]):
            history.stopped_early = True
    history.interrupted = history.interrupted or st.stop_requested is not None
    history.train_seconds = time.perf_counter() - start_time
    if st.best_weights is not None and not history.interrupted:
        _restore(st.best_weights, unwrap(model))
    return history


def train_epoch(
    model: Sequential,
    optimizer: Optimizer,
    train: tuple[Array, Array],
    st: TrainState,
    *,
    batch_size: int,
    rng: np.random.Generator,
    schedule: Schedule | None = None,
    label_smoothing: float = 0.0,
    augment: Augment | None = None,
    step_callbacks: Sequence[StepCallback] = (),
) -> bool:
    """The rest of the current epoch, from batch `st.batch` of the order `st.order` (drawn from
    rng when the epoch starts); True when the epoch is done, False when a stop was requested."""
    x, y = train
    n_batches = -(-len(x) // batch_size)
    if st.order is None:
        st.order = rng.permutation(len(x))
    while st.batch < n_batches and st.stop_requested is None:
        idx = st.order[st.batch * batch_size : (st.batch + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        if schedule is not None:
            optimizer.lr = schedule(optimizer.steps)
        if augment is not None:
            xb = augment(xb, rng)
        logits = model.forward(xb, training=True)
        loss, grad_logits = softmax_cross_entropy(logits, yb, label_smoothing=label_smoothing)
        model.backward(grad_logits)
        if not (math.isfinite(loss) and math.isfinite(float(optimizer.grad.sum()))):
            raise TrainingDiverged(st.epoch + 1, optimizer.steps + 1, f"loss {loss} or a gradient")
        optimizer.step()
        st.batch += 1
        st.loss_sum += loss * len(yb)
        st.correct += int((logits.argmax(axis=1) == yb).sum())
        st.seen += len(yb)
        for step_callback in step_callbacks:
            step_callback(st)
    return st.batch == n_batches


class ProgressBar:
    """A tqdm bar per epoch, counting the whole run's images so its ETA is the run's, with the
    running loss and accuracy (progress=None: on a terminal only); `update` is a step callback.
    Figures come before the bar, which tqdm shrinks first on a narrow terminal."""

    FORMAT = "{desc} {n_fmt}/{total_fmt} img {rate_fmt}, ETA {remaining}{postfix} {bar}"

    def __init__(self, n_samples: int, epochs: int, progress: bool | None) -> None:
        self.n_samples, self.epochs = n_samples, epochs
        self.disable = None if progress is None else not progress
        self._bar: Any = None

    def start(self, epoch: int, seen: int) -> None:
        self._done, self._seen = (epoch - 1) * self.n_samples, seen
        if self.disable:  # no bar: even a disabled one makes tqdm's multiprocessing lock, whose
            return  # semaphores a sweep worker stopped by Ctrl-C leaves behind with a warning
        from tqdm import tqdm  # only training needs it: inference needs numpy alone

        self._bar = tqdm(total=self.epochs * self.n_samples, initial=self._done + seen,
                         desc=f"epoch {epoch}/{self.epochs}", unit=" img", unit_scale=True,
                         bar_format=self.FORMAT, leave=False, disable=self.disable)  # fmt: skip

    def update(self, st: TrainState) -> None:
        if self._bar is None:
            return
        self._bar.update(st.seen - self._seen)
        self._seen = st.seen
        if not self._bar.disable and st.batch % 20 == 0:  # live figures, on a terminal only
            self._bar.set_postfix_str(f"loss {st.loss_sum / st.seen:.3f} "
                                      f"acc {st.correct / st.seen:.3f}", refresh=False)  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def epoch_line(record: dict[str, Any], epochs: int, label_smoothing: float = 0.0) -> str:
    """One epoch as a log line: `epoch  3/28  lr 0.00284  train loss ...`. With label smoothing
    the training loss is the smoothed one (higher than the plain loss validation reports)."""
    width = len(str(epochs))
    loss = "smoothed train loss" if label_smoothing else "train loss"
    line = (
        f"epoch {record['epoch']:{width}d}/{epochs}  lr {record['lr']:.3g}  "
        f"{loss} {record['train_loss']:.4f} acc {record['train_accuracy']:.4f}"
    )
    if "val_loss" in record:
        line += f"  val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.4f}"
    return line + f"  {record.get('seconds', 0.0):.1f}s"


def _finish_epoch(
    st: TrainState,
    model: Classifier,
    optimizer: Optimizer,
    val: tuple[Array, Array] | None,
    restore_best: bool,
    epoch: int,
    n: int,
) -> dict[str, Any]:
    """Close the epoch in `st`: its train metrics, validation and the best-weights bookkeeping."""
    record: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": st.loss_sum / n,
        "train_accuracy": st.correct / n,
        "lr": optimizer.lr,
    }
    st.epoch, st.batch, st.order, st.loss_sum, st.correct, st.seen = epoch, 0, None, 0.0, 0, 0
    if val is None:
        st.history.best_epoch = epoch
        return record
    record["val_loss"], record["val_accuracy"] = evaluate(model, *val)
    if record["val_loss"] < st.best_val_loss:
        st.best_val_loss, st.history.best_epoch = record["val_loss"], epoch
        if restore_best:
            st.best_weights = _snapshot(unwrap(model))
    return record


def _snapshot(model: Sequential) -> Array:
    """The model's flat parameter buffer, then its buffers (BatchNorm's running statistics), as
    one flat copy: last.npz keeps the best epoch's weights in this form."""
    assert model.flat is not None
    buffers = [b.ravel() for b in model.named_buffers().values()]
    return np.concatenate([model.flat, *buffers]) if buffers else model.flat.copy()


def _restore(snapshot: Array, model: Sequential) -> None:
    assert model.flat is not None
    model.flat[...] = snapshot[: model.flat.size]
    offset = model.flat.size
    for b in model.named_buffers().values():
        b[...] = snapshot[offset : offset + b.size].reshape(b.shape)
        offset += b.size
