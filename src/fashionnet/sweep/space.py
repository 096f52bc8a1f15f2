"""What a sweep may vary: `NAME=KIND:LOW:HIGH` specs over RunConfig's fields, the same typed
settings `fashionnet train` takes, checked with the same rules before any trial starts.

    lr=logfloat:1e-4:1e-2      dropout=float:0:0.5      epochs=int:10:40
    optimizer=choice:adam,adamw,sgd      hidden=choice:256,128|512,256|1024

Choices are split by commas; for a setting whose value has commas itself (hidden, stages) the
choices are split by `|`. A spec file (`--spec sweep.toml`) holds the same in TOML:

    preset = "mlp"
    trials = 60
    [params]
    lr = "logfloat:1e-4:1e-2"
    hidden = "choice:256,128|512,256"
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fsutil import open_regular
from ..config import (
    FIELD_TYPES,
    PRESETS,
    ConfigError,
    base_type,
    check_field,
    parse_setting,
    show_setting,
)

KINDS = ("float", "logfloat", "int", "choice")
MAX_SPEC_BYTES = 1 << 20  # a spec is a few hundred bytes; a link to /dev/zero never ends
NOT_SWEPT = {"preset", "data", "limit", "checkpoint_every"}  # the run's frame, not its recipe
SPEC_KEYS = {"preset", "trials", "metric", "prune", "seed", "workers", "timeout", "params",
             "set"}  # fmt: skip
METRICS = ("val_accuracy", "val_loss")
PRUNE = ("median", "halving", "none")


class SpecError(ValueError):
    """A sweep specification that cannot be run: one line naming what is wrong."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value Optuna's trial picks for this setting."""
        if self.kind == "choice":
            index = trial.suggest_categorical(self.name, list(range(len(self.choices))))
            return self.choices[index]
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "logfloat")

    def text(self) -> str:
        if self.kind == "choice":
            sep = "|" if isinstance(self.choices[0], tuple) else ","
            return f"{self.name}=choice:" + sep.join(show_setting(c) for c in self.choices)
        return f"{self.name}={self.kind}:{self.low:g}:{self.high:g}"


def parse_param(text: str) -> Param:
    """`NAME=KIND:LOW:HIGH` or `NAME=choice:a,b,c` -> a checked Param."""
    name, eq, rest = text.partition("=")
    name = name.strip().replace("-", "_")
    kind, _, bounds = rest.partition(":")
    if not eq or not name or kind not in KINDS:
        raise SpecError(f"--param {text!r}: expected NAME=KIND:LOW:HIGH or NAME=choice:a,b "
                        f"(KIND: {', '.join(KINDS)})")  # fmt: skip
    if name not in FIELD_TYPES or name in NOT_SWEPT:
        raise SpecError(f"--param {text!r}: {name!r} is not a setting a sweep can vary "
                        "(see fashionnet train --help)")  # fmt: skip
    try:
        if kind == "choice":
            return _choice(name, bounds, text)
        return _range(name, kind, bounds, text)
    except ConfigError as e:
        raise SpecError(f"--param {text!r}: {e.name} {e.message}") from None


def _choice(name: str, bounds: str, text: str) -> Param:
    tuple_valued = base_type(FIELD_TYPES[name]) not in (int, float, str, bool)
    parts = bounds.split("|") if tuple_valued else bounds.split(",")
    values = tuple(parse_setting(name, p.strip()) for p in parts if p.strip())
    if not values:
        raise SpecError(f"--param {text!r}: no choices")
    return Param(name, "choice", choices=values)


def _range(name: str, kind: str, bounds: str, text: str) -> Param:
    base = base_type(FIELD_TYPES[name])
    pieces = bounds.split(":")
    if len(pieces) != 2:
        raise SpecError(f"--param {text!r}: expected {kind}:LOW:HIGH")
    if kind == "int" and base is not int:
        raise SpecError(f"--param {text!r}: {name} is not an integer setting; use float or choice")
    if kind in ("float", "logfloat") and base is not float:
        raise SpecError(f"--param {text!r}: {name} is not a number setting; use "
                        f"{'int' if base is int else 'choice'}")  # fmt: skip
    try:
        low, high = (int(p) if kind == "int" else float(p) for p in pieces)
    except ValueError:
        raise SpecError(f"--param {text!r}: LOW and HIGH must be "
                        f"{'integers' if kind == 'int' else 'numbers'}") from None  # fmt: skip
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SpecError(f"--param {text!r}: LOW and HIGH must be finite")
    if low > high:
        raise SpecError(f"--param {text!r}: LOW {low:g} is above HIGH {high:g}")
    if kind == "logfloat" and low <= 0:
        raise SpecError(f"--param {text!r}: a log range must stay above 0, got LOW {low:g}")
    check_field(name, low)  # both ends within the setting's own range
    check_field(name, high)
    return Param(name, kind, float(low), float(high))


def load_spec(path: Path) -> dict[str, Any]:
    """A TOML sweep spec: its keys as the command's flags would give them, params parsed."""
    try:
        with open_regular(path) as f:  # not a FIFO's open() that waits for a writer
            raw = f.read(MAX_SPEC_BYTES + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: over {MAX_SPEC_BYTES:,} bytes, not a sweep spec")
        spec = tomllib.loads(raw.decode())
    except OSError as e:
        raise SpecError(f"{path}: cannot read ({e.strerror or e})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: not TOML ({e})") from None
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise SpecError(
            f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(SPEC_KEYS))})"
        )
    for key, value in spec.items():  # held to what the command's flags accept
        expected = _SCALARS.get(key)
        if expected is not None and not expected[0](value):
            raise SpecError(f"{path}: {key} must be {expected[1]}, got {value!r}")
    params = spec.get("params", {})
    if not isinstance(params, dict):
        raise SpecError(f'{path}: [params] must be a table of NAME = "KIND:LOW:HIGH"')
    spec["params"] = [parse_param(f"{k}={v}") for k, v in params.items()]
    fixed = spec.get("set", {})
    if not isinstance(fixed, dict):
        raise SpecError(f"{path}: [set] must be a table of settings fixed for every trial")
    try:
        spec["set"] = {k: parse_setting(k, v if isinstance(v, str) else _toml_text(v))
                       for k, v in fixed.items()}  # fmt: skip
    except ConfigError as e:
        raise SpecError(f"{path}: [set] {e.name}: {e.message}") from None
    return spec


def _integer(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _one_of(choices: Any) -> tuple[Any, str]:
    return (lambda v: isinstance(v, str) and v in choices), "one of " + ", ".join(choices)


_SCALARS: dict[str, tuple[Any, str]] = {
    "trials": (lambda v: _integer(v, 1), "a positive integer"),
    "workers": (lambda v: _integer(v, 1), "a positive integer"),
    "seed": (lambda v: _integer(v, 0), "an integer, 0 or more"),
    "timeout": (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf,
        "a positive number of minutes",
    ),
    "preset": _one_of(PRESETS),
    "metric": _one_of(METRICS),
    "prune": _one_of(PRUNE),
}


def _toml_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
