"""RunConfig: presets, validation naming field and value, JSON round-trip, older files, flags."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fashionnet.cli import build_parser
from fashionnet.config import FIELD_TYPES, PRESETS, ConfigError, RunConfig, preset, replace

# config.json files as the dict-based config wrote them (the recorded runs of docs/runs, before
# RunConfig): they must keep reading as their presets
LEGACY = Path(__file__).resolve().parent / "data" / "legacy-config"


def test_the_default_preset_is_the_base_recipe_with_what_the_sweep_found():
    # RunConfig()'s defaults are what config.json files before RunConfig meant (the mlp recipe
    # of then); the mlp preset changes only what docs/sweeps/mlp.toml searched, and calibrates
    # its probabilities as every preset does
    base, mlp = RunConfig(), PRESETS["mlp"]
    changed = {f for f in FIELD_TYPES if getattr(base, f) != getattr(mlp, f)}
    assert changed == {"hidden", "dropout", "input_dropout", "lr", "weight_decay",
                       "label_smoothing", "calibrate"}  # fmt: skip
    assert all(c.calibrate for c in PRESETS.values())
    assert preset("mlp") == mlp and base.preset == "mlp"
    assert {name for name, c in PRESETS.items() if c.preset == name} == set(PRESETS)


@pytest.mark.parametrize("name", list(PRESETS))
def test_json_round_trip(name):
    config = PRESETS[name]
    text = json.dumps(config.to_json())
    assert RunConfig.from_json(json.loads(text)) == config


@pytest.mark.parametrize("run", ["mlp", "cnn", "cnn-small"])
def test_config_json_written_before_runconfig_reads_as_its_preset(run):
    # these files were written by the dict-based config (an "augment" object, fewer keys)
    old = json.loads((LEGACY / f"{run}.json").read_text())
    assert "augment" in old
    # the mlp and cnn presets have changed since: these files mean the recipes of then
    then = {
        "mlp": RunConfig(),
        "cnn": dataclasses.replace(PRESETS["cnn"], stages=((32,), (64, 64), (128,)), dropout=0.25,
                                   shift=2, epochs=13, label_smoothing=0.0, optimizer="adamw",
                                   lr=0.003, weight_decay=0.05, batch_size=128, tta="flip"),
    }.get(run, PRESETS[run])  # fmt: skip
    # they name val_size 5000, what the default (none: a tenth, at most 5000) holds out of 60,000,
    # and their runs did not calibrate (the presets do now)
    assert RunConfig.from_json(old) == dataclasses.replace(then, val_size=5000, calibrate=False)


def test_an_old_seed_config_keeps_its_old_meaning():
    # the seed preset's file had no batch_norm, augment or cycle_epochs key: all off
    old = {"preset": "seed", "val_size": 5000, "seed": 0, "patience": None, "limit": None,
           "checkpoint_every": None, "hidden": [10], "activation": "relu", "init": "uniform",
           "dropout": 0.0, "optimizer": "adam", "lr": 3e-3, "weight_decay": 1e-4,
           "schedule": "cosine", "warmup_epochs": 0, "epochs": 40, "batch_size": 256,
           "label_smoothing": 0.0}  # fmt: skip
    assert RunConfig.from_json(old) == dataclasses.replace(PRESETS["seed"], val_size=5000,
                                                           calibrate=False)  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0}, "lr must be in (0, 10], got 0"),
        ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
        ({"batch_size": "256"}, "batch_size must be an integer, got '256'"),
        ({"batch_size": True}, "batch_size must be an integer, got True"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"hidden": (256, 0)}, "hidden must hold positive integers"),
        ({"hidden": [256]}, "hidden must be a list of integers"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam, adamw, got 'rmsprop'"),
        ({"flip": 1}, "flip must be true or false, got 1"),
        ({"lr": float("nan")}, "lr must be a number, got nan"),
        ({"arch": "cnn", "stages": ()}, "stages must name at least one stage"),
        ({"cycle_epochs": None}, "cycle_epochs must be given for schedule restarts"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
    ],
)
def test_validation_names_the_field_and_the_value(changes, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        dataclasses.replace(PRESETS["mlp"], **changes)


def test_a_new_schedule_brings_its_own_cycle_length():
    assert replace(PRESETS["mlp"], schedule="cosine").cycle_epochs is None
    assert replace(PRESETS["cnn"], schedule="restarts").cycle_epochs == 4
    assert replace(PRESETS["cnn"], schedule="restarts", cycle_epochs=2).cycle_epochs == 2
    with pytest.raises(ConfigError, match="cycle_epochs needs schedule restarts, not cosine"):
        replace(PRESETS["mlp"], schedule="cosine", cycle_epochs=2)


def test_config_json_must_be_complete_and_known():
    complete = PRESETS["mlp"].to_json()
    with pytest.raises(ConfigError, match=r"^batch_size is missing"):
        RunConfig.from_json({k: v for k, v in complete.items() if k != "batch_size"})
    with pytest.raises(ConfigError, match=r"^learning_rate is not a setting"):
        RunConfig.from_json({**complete, "learning_rate": 0.1})
    with pytest.raises(ConfigError, match="must be a JSON object"):
        RunConfig.from_json([1, 2])


def test_every_field_is_a_train_flag_with_help_and_default():
    parser = build_parser()
    train = next(
        a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "train"
    )[1]
    flags = {opt: action for action in train._actions for opt in action.option_strings}
    for f in dataclasses.fields(RunConfig):
        if f.name == "preset":
            continue
        action = flags[f"--{f.name.replace('_', '-')}"]
        assert f.metadata["help"] in action.help and "default: from --preset" in action.help


def test_floats_given_as_integers_are_stored_as_floats():
    config = replace(PRESETS["mlp"], weight_decay=0)
    assert type(config.weight_decay) is float and config.to_json()["weight_decay"] == 0.0


def test_a_field_added_later_is_optional_in_older_files_and_reaches_the_optimiser(tmp_path):
    from fashionnet.runs import build_training

    before_beta2 = {k: v for k, v in PRESETS["mlp"].to_json().items() if k != "beta2"}
    assert RunConfig.from_json(before_beta2).beta2 == 0.999  # what those runs used
    _, optimizer, _ = build_training(replace(PRESETS["mlp"], beta2=0.99), 784, 10, 1000,
                                     np.random.default_rng(0))  # fmt: skip
    assert optimizer.beta2 == 0.99
    with pytest.raises(ConfigError, match=r"^beta2 must be in \[0, 1\)"):
        replace(PRESETS["mlp"], beta2=1.0)
