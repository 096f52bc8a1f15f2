"""Running a sweep: the study in its storage (DIR/study.db unless told otherwise), trials on local
worker processes or as tasks on a Dask cluster, and a line per finished trial meanwhile.

A sweep started again continues its study: it runs until the study holds the requested number
of finished (complete or pruned) trials. Trials a killed sweep left running are marked failed
and their values queued again, so a kill -9 costs the trial in flight and nothing is counted
twice.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from .._text import shown
from .space import SpecError
from .trial import (
    Sweep,
    counts,
    run_one_trial,
    run_trials,
    state_of,
    sweep_from_json,
    sweep_to_json,
)


def storage_of(url: str) -> Any:
    """Optuna's RDB storage; SQLite waits for its lock instead of failing at once, since every
    worker writes to the same file. SpecError, naming the URL without its password, when it
    cannot be opened: a URL that does not parse, a driver not installed, a file that is not a
    database, a server that does not answer."""
    import optuna
    import sqlalchemy.exc

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except ImportError:  # optuna's own message names no driver
        reason = "its database driver is not installed (PostgreSQL: psycopg2, MySQL: PyMySQL)"
    except sqlalchemy.exc.SQLAlchemyError as e:  # the driver's own error, without the links
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
    raise SpecError(f"{_masked(url)}: {reason}")


def _masked(url: str) -> str:
    """A storage URL as it may be printed: its password masked."""
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:  # does not parse: nothing in it is known to be secret
        return url


def open_study(sweep: Sweep) -> Any:
    """The sweep's study, created or continued; a continued one must be the same search."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=sweep.study, storage=storage_of(sweep.storage),
                                direction=sweep.direction,  # type: ignore[arg-type]
                                load_if_exists=True)  # fmt: skip
    defined = {"preset": sweep.preset, "metric": sweep.metric,
               "params": [p.text() for p in sweep.params]}  # fmt: skip
    before = study.user_attrs.get("sweep")
    if before is None:
        study.set_user_attr("sweep", defined)
    elif before != defined:
        raise SpecError(f"{sweep.folder}: holds a different sweep ({before}); continue it with "
                        "the same preset, metric and --param, or use a new --out")  # fmt: skip
    return study


def recover(study: Any, *, retry: bool = True) -> list[int]:
    """Trials still marked running when nothing runs them (a sweep that was killed, a Dask
    worker that died): failed, and with `retry` their values queued again (Dask has already
    run a lost trial's task again, so it passes retry=False)."""
    from optuna.trial import TrialState

    lost = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in lost:
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        if retry:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return [t.number for t in lost]


def finished(study: Any) -> int:
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the sweep process dies, even by kill -9, so no
    orphan keeps writing to the study."""
    with contextlib.suppress(OSError):  # not Linux: the parent's finally still stops them
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker(sweep_json: str, worker: int, timeout: float | None) -> None:
    import sqlalchemy.exc

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        run_trials(sweep_from_json(sweep_json), worker, timeout)
    except (OSError, MemoryError, ValueError, sqlalchemy.exc.OperationalError) as e:
        # what `fashionnet` says in one line (a full disk, data gone or damaged, a database
        # that fails), where a worker process would print a traceback
        _warn(f"worker {worker} stopped: {_reason(e)}")
        sys.exit(1)


def _warn(line: str) -> None:
    print(f"fashionnet sweep: {shown(line)}", file=sys.stderr, flush=True)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename is not None else e.strerror
    if isinstance(e, MemoryError):
        return "out of memory"
    text = str(getattr(e, "orig", None) or e)  # a database error: the driver's words, no SQL
    return text.splitlines()[0] if text else type(e).__name__


def run_local(sweep: Sweep, workers: int, timeout: float | None, show: Callable[[], None]) -> int:
    """`workers` processes, each running trials until the study is done; returns how many
    failed."""
    context = multiprocessing.get_context("spawn")  # fresh interpreters: one BLAS thread each
    text = sweep_to_json(sweep)
    procs = [context.Process(target=_worker, args=(text, i, timeout), daemon=True)
             for i in range(workers)]  # fmt: skip
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=1.0)  # (the live table's refresh; nothing is decided by it)
            show()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    show()
    return sum(p.exitcode not in (0, None) for p in procs)


def connect(address: str) -> Any:
    """A Dask client, or one line saying no scheduler answers (before any trial starts)."""
    try:
        from distributed import Client
    except ImportError:
        raise SpecError("--dask needs the dask extra: pip install 'fashionnet[dask]'") from None
    try:
        return Client(address, timeout="10s")  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as e:
        raise SpecError(f"--dask {address}: no Dask scheduler answers ({e})") from None


def run_dask(
    sweep: Sweep, client: Any, study: Any, show: Callable[[], None], timeout: float | None
) -> int:
    """Every trial a task on the cluster, sent in waves of twice the workers, so the TPE
    sampler learns from finished trials and `timeout` (seconds) is checked between waves. A
    worker that dies loses its trial (Dask runs the task again elsewhere, as a new trial) and
    the sweep goes on. Returns the tasks that failed."""
    from distributed import as_completed

    text, failed, wave = sweep_to_json(sweep), 0, 0
    deadline = None if timeout is None else time.monotonic() + timeout
    while (left := sweep.total - finished(study)) > 0:
        if deadline is not None and time.monotonic() > deadline:
            break
        size = min(left, 2 * max(1, len(client.scheduler_info().get("workers", {}))))
        futures = [client.submit(run_one_trial, text, wave * 1000 + i, pure=False,
                                 key=f"fashionnet-trial-{wave}-{i}")
                   for i in range(size)]  # fmt: skip
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            try:
                future.result()
            except Exception as e:
                failed += 1
                _warn(f"a trial failed on the cluster ({type(e).__name__}: {e})")
            show()
        recover(study, retry=False)  # every task of the wave has ended
        wave += 1
        if failed > 3 * sweep.total:
            raise SpecError(f"{failed} trials failed on the cluster; see the messages above")
    return failed


class Table:
    """The live view: a line per trial as it finishes (trial, state, metric, epochs, seconds,
    values), the same on a terminal and in a log."""

    def __init__(self, study: Any, sweep: Sweep) -> None:
        self.study, self.sweep, self.shown = study, sweep, set[int]()
        self.start = time.perf_counter()
        names = " ".join(p.name for p in sweep.params)
        print(f"trial  state     {sweep.metric:>12}  epochs  seconds  {names}", flush=True)

    def __call__(self) -> None:
        for t in self.study.get_trials(deepcopy=False):
            if t.number in self.shown or t.state.name not in ("COMPLETE", "PRUNED", "FAIL"):
                continue
            self.shown.add(t.number)
            value = f"{t.value:.4f}" if t.value is not None else (
                f"{t.intermediate_values[max(t.intermediate_values)]:.4f}"
                if t.intermediate_values else "-")  # fmt: skip
            values = " ".join(_shown(self.sweep, n, v) for n, v in t.params.items())
            print(f"{t.number:5d}  {state_of(t):8s}  {value:>12}  "
                  f"{t.user_attrs.get('epochs', '-'):>6}  "
                  f"{t.user_attrs.get('seconds', 0.0):7.1f}  {values}", flush=True)  # fmt: skip


def _shown(sweep: Sweep, name: str, value: Any) -> str:
    from ..config import show_setting

    param = next(p for p in sweep.params if p.name == name)
    if param.kind == "choice":
        return f"{name}={show_setting(param.choices[int(value)])}"
    return f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
