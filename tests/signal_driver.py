"""Run `fashionnet ARGS...` in this process and signal this process at an exact point of training.

    python signal_driver.py SIGNAL STEP PHASE -- ARGS...

PHASE says where the signal lands, counted in optimizer steps, so it lands there on any machine
however fast or loaded (test_resume places every kill with it, never with a sleep):

- start:   before the first step (the run folder has its config, no checkpoint yet);
- step:    right after step STEP (and after any checkpoint that step wrote);
- write:   inside the first checkpoint write after step STEP, its bytes written, not yet fsynced;
- fsync:   the same write, fsynced, not yet renamed over the old file;
- replace: the same write, renamed, its folder not yet fsynced.

It prints nothing of its own; stdout and stderr are fashionnet's.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from fashionnet import runs
from fashionnet.cli import main

PHASES = ("start", "step", "write", "fsync", "replace")


def arm(signum: int, at_step: int, phase: str) -> None:
    taken = {"steps": 0}  # optimizer steps done so far, seen from the step callback

    def fire() -> None:
        os.kill(os.getpid(), signum)

    real_fit = runs.fit

    def fit(model: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        def after_step(state: Any) -> None:
            taken["steps"] = optimizer.steps
            if phase == "step" and optimizer.steps == at_step:
                fire()

        if phase == "start":
            fire()
        kwargs["step_callbacks"] = [*kwargs.get("step_callbacks", []), after_step]
        return real_fit(model, optimizer, *args, **kwargs)

    runs.fit = fit
    # atomic_write calls os.fsync on the temp file, os.replace, then os.fsync on the folder
    real_fsync, real_replace = os.fsync, os.replace
    fired = {"done": False}

    def armed() -> bool:
        due = taken["steps"] >= at_step and not fired["done"]
        fired["done"] = fired["done"] or due
        return due

    def fsync(fd: int) -> None:
        if phase == "write" and armed():
            fire()
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        if phase == "fsync" and armed():
            fire()
        real_replace(src, dst)
        if phase == "replace" and armed():
            fire()

    os.fsync, os.replace = fsync, replace  # type: ignore[assignment]


if __name__ == "__main__":
    name, step, phase, dashes, *args = sys.argv[1:]
    assert phase in PHASES and dashes == "--", sys.argv
    arm(signal.Signals[name].value, int(step), phase)
    sys.exit(main(args))
