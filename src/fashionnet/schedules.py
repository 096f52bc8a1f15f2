"""Learning-rate schedules: pure functions of the step, rebuilt from a JSON-safe config."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

Schedule = Callable[[int], float]


def constant(step: int, *, lr: float) -> float:
    return lr


def step_decay(step: int, *, lr: float, step_size: int, gamma: float = 0.1) -> float:
    """lr * gamma^(step // step_size)."""
    return lr * gamma ** (step // step_size)


def cosine(
    step: int, *, lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0
) -> float:
    """Linear warmup to lr over warmup_steps, then half a cosine down to min_lr at total_steps."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def cosine_restarts(
    step: int,
    *,
    lr: float,
    total_steps: int,
    cycle_steps: int,
    mult: int = 2,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
) -> float:
    """Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017).

    Half-cosine cycles from lr to min_lr, the first `cycle_steps` long and each next one `mult`
    times longer. A cycle is the last when the next one would not fit before total_steps; the
    last runs to total_steps, so a run always ends annealed. The end of every cycle is a good
    model (the first after a few epochs); the long last cycle gives the final accuracy.
    """
    if step < warmup_steps:  # the same linear warmup as cosine's
        return cosine(step, lr=lr, total_steps=total_steps, warmup_steps=warmup_steps)
    start, length = warmup_steps, cycle_steps
    while start + length * (1 + mult) <= total_steps and step >= start + length:
        start, length = start + length, length * mult
    if start + length * (1 + mult) > total_steps:  # the last cycle
        length = total_steps - start
    return cosine(step - start, lr=lr, total_steps=length, min_lr=min_lr)


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "step": step_decay,
    "cosine": cosine,
    "restarts": cosine_restarts,
}


def make_schedule(config: dict[str, Any]) -> Schedule:
    """{'name': 'cosine', 'lr': 1e-3, 'total_steps': 4000} -> step -> lr."""
    args = dict(config)
    name = args.pop("name", "constant")
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {name!r}")
    if args.get("lr", 0) <= 0:
        raise ValueError(f"schedule lr must be positive, got {args.get('lr')!r}")
    if name == "step" and args.get("step_size", 0) < 1:
        raise ValueError(f"step schedule needs step_size >= 1, got {args.get('step_size')!r}")
    if name == "restarts" and (args.get("cycle_steps", 0) < 1 or args.get("mult", 2) < 1):
        raise ValueError(
            "restarts schedule needs cycle_steps >= 1 and mult >= 1, got "
            f"{args.get('cycle_steps')!r} and {args.get('mult', 2)!r}"
        )
    return partial(SCHEDULES[name], **args)
