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


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "step": step_decay,
    "cosine": cosine,
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
    return partial(SCHEDULES[name], **args)
