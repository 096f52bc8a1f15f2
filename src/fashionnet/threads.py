"""Threads for the work NumPy runs on one core: a batch split into parts, a part per thread.

The BLAS multiplies a matrix on every core, but the rest of a convolutional network's step
(im2col and col2im copies, pooling, BatchNorm, ReLU) is elementwise work that NumPy runs on the
calling thread, and on a CNN it is most of the step. NumPy releases the GIL inside those loops,
so layers split their batch into contiguous parts and run one part per thread, each part doing
its own matrix multiplies with a single-threaded BLAS (two callers each asking the BLAS for every
core only fight over them).

A model whose layers split their batch (`Layer.splits_batch`) runs each forward and backward pass
inside `region()`: the BLAS is held at one thread and `each` splits into `count()` parts. Outside a
region `each` runs its function once over the whole batch, so a dense network keeps the BLAS's own
threads (what suits it) and nothing changes for it.

`count()`: FASHIONNET_THREADS when set, else the BLAS's thread count (OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS or the number of cores), so one setting still governs both. Parts are fixed by
the batch size and the count alone, and partial sums are added in part order: the same count
gives bit-identical results, run after run; a different count may differ in the last bits.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

A = TypeVar("A")
T = TypeVar("T")

ENV = "FASHIONNET_THREADS"
MIN_PART = 4  # images (rows) per part at least: less costs more to hand over than it saves
# the work a call must have to be split, in values an elementwise pass touches: handing a part
# to a pool thread and taking it back costs about 60 us, a ReLU over 160,000 values (2.8 a ns),
# and splitting pays when each part saves more than that
MIN_WORK = 1 << 18
# a matrix product's multiply-adds per such value: one core runs 50-100 a ns on these shapes,
# 18-36 times as many; 16 makes a product split a little early rather than late
MADDS_PER_VALUE = 16

_local = threading.local()  # .parts: how many parts `each` splits into on this thread now
_lock = threading.Lock()
_inside = 0  # regions open in any thread; the first one in holds the BLAS at one thread
_restore: Any = None
_pool: tuple[int, Executor] | None = None


@functools.cache
def _blas() -> Any:
    """threadpoolctl's controller of the BLAS libraries NumPy loaded."""
    from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

    return ThreadpoolController().select(user_api="blas")


def from_env() -> int | None:
    """FASHIONNET_THREADS as a number, None when unset; ValueError naming it when malformed."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{ENV} must be a whole number >= 1, got {text!r}")
    return value


def count() -> int:
    """Threads a CNN step uses: FASHIONNET_THREADS, else the BLAS's thread count."""
    value = from_env()
    if value is not None:
        return value
    if getattr(_local, "parts", 1) > 1:  # inside a region, which holds the BLAS at one thread
        return int(_local.parts)
    counts = [info["num_threads"] for info in _blas().info()]
    return max(1, min(counts, default=1))


@contextmanager
def region(parts: int | None = None) -> Iterator[None]:
    """Within: `each` splits into `parts` (default `count()`), the BLAS runs on one thread."""
    global _inside, _restore
    parts = count() if parts is None else parts
    if parts <= 1:
        yield
        return
    outer = getattr(_local, "parts", 1)
    with _lock:
        if _inside == 0:
            _restore = _blas().limit(limits=1)
        _inside += 1
    _local.parts = parts
    try:
        yield
    finally:
        _local.parts = outer
        with _lock:
            _inside -= 1
            if _inside == 0:
                _restore.restore_original_limits()
                _restore = None


@contextmanager
def single() -> Iterator[None]:
    """Within: `each` on this thread runs its function once, unsplit (a part's own work)."""
    outer = parts()
    _local.parts = 1
    try:
        yield
    finally:
        _local.parts = outer


def split(n: int, parts: int) -> list[slice]:
    """range(n) in `parts` contiguous slices as equal as possible (fewer for a small n)."""
    parts = max(1, min(parts, n // MIN_PART))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: start with a new pool and lock."""
    global _pool, _lock, _inside, _restore
    _pool, _lock, _inside, _restore = None, threading.Lock(), 0, None


os.register_at_fork(after_in_child=_forget_after_fork)


def _executor(workers: int) -> Executor:
    """A pool of at least `workers` threads. It only grows: a small batch splits into fewer
    parts than a large one, and replacing the pool at each change (a server's batches of every
    size) would start and stop threads all the time; idle threads cost nothing."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] < workers:
            if _pool is not None:
                _pool[1].shutdown(wait=False)
            _pool = (workers, ThreadPoolExecutor(workers, thread_name_prefix="fashionnet"))
        return _pool[1]


def parts() -> int:
    """How many parts `each` splits a batch into on this thread now (1 outside a region)."""
    return int(getattr(_local, "parts", 1))


def plan(n: int, work: int | None = None) -> list[slice]:
    """The parts `each` splits range(n) into now: one when `work` (the values an elementwise call
    touches, a product's multiply-adds / MADDS_PER_VALUE; None for plenty) is under MIN_WORK."""
    return split(n, parts() if work is None or work >= MIN_WORK else 1)


def each(n: int, fn: Callable[[slice], T], work: int | None = None) -> list[T]:
    """fn(part) for the parts of range(n) (`plan`), the first on this thread, in part order."""
    slices = plan(n, work)
    if len(slices) == 1:
        return [fn(slices[0])]
    futures = [_executor(len(slices) - 1).submit(fn, s) for s in slices[1:]]
    first = fn(slices[0])
    return [first, *(f.result() for f in futures)]


def map_ordered(fn: Callable[[A], T], items: Sequence[A], workers: int | None = None) -> list[T]:
    """[fn(item) for item in items] on `workers` (default `count()`) threads of their own, for
    work that is many independent calls (decoding pictures: Pillow and NumPy release the GIL;
    fetching them, which mostly waits). The first exception in item order is raised; calls not
    yet started are dropped then, and on a Ctrl-C."""
    workers = min(workers or count(), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    pool = ThreadPoolExecutor(workers, thread_name_prefix="fashionnet-map")
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def summed(n: int, fn: Callable[[slice], Any], work: int | None = None) -> Any:
    """fn(part) for the parts of range(n) (as `each`), the partial sums added in part order: one
    array, or a list of them when fn returns a tuple or list (added entry by entry)."""
    results = each(n, fn, work)
    if isinstance(results[0], tuple | list):
        return [_total(entry) for entry in zip(*results, strict=True)]
    return _total(results)


def _total(parts: Iterable[Any]) -> Any:
    return functools.reduce(lambda a, b: a + b, parts)
