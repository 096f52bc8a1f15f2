"""A run that starts from a trained model's weights (fine-tuning) instead of random ones.

A network trained on Fashion-MNIST already tells a sole from a sleeve; a few hundred photos of
a user's own classes train further from it than from random weights. The run keeps the model's
layers (its architecture settings are the model's) and copies every weight; the last layer gets
a column per class of the new data, copied from the model's column of the class of the same
name (T-shirt_top finds T-shirt/top, as image folders do) and drawn afresh for a class the model
did not have. The rest of the recipe (optimiser, schedule, epochs, augmentation) is a preset's.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .calibrate import temperature_of
from .checkpoint import CheckpointError, load_model_with_metadata
from .config import PRESETS, ConfigError, RunConfig, preset, replace, show_setting
from .data import class_of
from .layers import Layer, Linear
from .model import Classifier, unwrap

# the settings that decide a network's layers and their shapes: a run from a model has the model's
ARCH_FIELDS = ("arch", "hidden", "stages", "activation", "batch_norm")


@dataclass(frozen=True)
class Source:
    """A trained model to start from, with what its file says about it."""

    path: Path
    model: Classifier
    config: RunConfig
    class_names: tuple[str, ...]
    image_shape: tuple[int, ...]
    temperature: float = 1.0  # its last layer holds the trained weights divided by this

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def read_source(where: str | os.PathLike[str]) -> Source:
    """The model in a model file or a run folder; what is wrong with it is a ConfigError of the
    from_model setting (one line: the file and the problem)."""
    path = Path(where)
    path = path / "model.npz" if path.is_dir() else path
    try:
        model, meta = load_model_with_metadata(path)
    except CheckpointError as e:
        raise ConfigError("from_model", str(e)) from None
    except OSError as e:  # a folder without model.npz, a file that vanished
        raise ConfigError("from_model", f"{path}: {e.strerror or e}") from None
    if not isinstance(meta.get("config"), dict):
        raise ConfigError("from_model", f"{path}: holds no run settings (saved outside fashionnet "
                                        "train), so its layers cannot be rebuilt")  # fmt: skip
    try:
        config = RunConfig.from_json(meta["config"])
    except ConfigError as e:
        raise ConfigError("from_model", f"{path}: its run settings are unreadable ({e})") from None
    names = tuple(meta.get("class_names", ()))
    shape = tuple(meta.get("image_shape", (28, 28)))
    temperature = temperature_of(meta.get("calibration")) or 1.0  # 1: not calibrated
    return Source(path, model, config, names, shape, temperature)


def settings_from(
    where: str | os.PathLike[str], preset: str | None = None, **changes: Any
) -> RunConfig:
    """A run's settings to fine-tune the model in `where`: `preset`'s recipe (by default the
    preset the model was trained with), the model's layers, then `changes`. A change to the
    layers the model has is a ConfigError naming the setting."""
    source = read_source(where)
    name = preset if preset is not None else source.config.preset
    if name not in PRESETS:
        raise ConfigError("preset", f"must be one of {', '.join(PRESETS)}, got {name!r}")
    layers = {k: getattr(source.config, k) for k in ARCH_FIELDS}
    for key, value in changes.items():
        if key in layers and value != layers[key]:
            raise ConfigError(key, f"{show_setting(value)}: the model {source.path} has "
                                   f"{show_setting(layers[key])}, and a run from it keeps its "
                                   "layers")  # fmt: skip
    return replace(PRESETS[name], **{**layers, **changes, "from_model": str(where)})


def run_settings(preset_name: str | None, **changes: Any) -> RunConfig:
    """A new run's settings, as `train` and a sweep's trials make them: the preset (by default
    mlp) with `changes`; with a from_model among them, settings_from that model."""
    if changes.get("from_model"):
        return settings_from(changes.pop("from_model"), preset_name, **changes)
    return preset(preset_name or "mlp", **changes)


def start_from(where: str, model: Classifier, class_names: tuple[str, ...],
               image_shape: tuple[int, ...]) -> dict[str, Any]:  # fmt: skip
    """Load the model in `where` into a run's `model` (load_weights); what the run records of
    it: the file, its SHA-256 and the classes whose last-layer column it gave."""
    source = read_source(where)
    kept = load_weights(model, source, class_names, image_shape)
    return {"path": str(source.path), "sha256": source.sha256(), "classes_kept": kept}


def _stateful(model: Classifier) -> list[Layer]:
    """The layers that hold weights or running statistics, in order."""
    return [layer for layer in unwrap(model).layers if layer.params() or layer.buffers()]


def _arrays(layer: Layer) -> dict[str, Any]:
    return {name: p.data for name, p in layer.params().items()} | layer.buffers()


def load_weights(model: Classifier, source: Source, class_names: tuple[str, ...],
                 image_shape: tuple[int, ...]) -> list[str]:  # fmt: skip
    """Copy the source's weights into `model` (built by the run from the same settings); return
    the classes whose last-layer column came from the source. Nothing is copied unless every
    layer fits. The last layer's columns are taken as trained: the source's temperature comes
    back out of them (the run fits its own when it ends)."""
    where = source.path
    if tuple(image_shape) != source.image_shape:
        shown = "x".join(map(str, source.image_shape))
        raise ConfigError("from_model", f"{where}: made for {shown} images, and this data's are "
                                        f"{'x'.join(map(str, image_shape))}")  # fmt: skip
    mine, theirs = _stateful(model), _stateful(source.model)
    kinds = [type(layer).__name__ for layer in mine]
    head, old_head = (mine[-1], theirs[-1]) if mine and theirs else (None, None)
    if (kinds != [type(layer).__name__ for layer in theirs] or not isinstance(head, Linear)
            or not isinstance(old_head, Linear)):  # fmt: skip
        raise ConfigError("from_model", f"{where}: its layers are not this run's "
                                        f"({architecture_of(source.config)})")  # fmt: skip
    for layer, old in zip(mine[:-1], theirs[:-1], strict=True):
        new_arrays, old_arrays = _arrays(layer), _arrays(old)
        shapes = {k: v.shape for k, v in new_arrays.items()}
        if shapes != {k: v.shape for k, v in old_arrays.items()}:
            raise ConfigError("from_model", f"{where}: its {type(old).__name__} layer has "
                                            "other shapes than this run's")  # fmt: skip
    if head.in_features != old_head.in_features:
        raise ConfigError("from_model", f"{where}: its last layer reads {old_head.in_features} "
                                        f"features, this run's {head.in_features}")  # fmt: skip
    for layer, old in zip(mine[:-1], theirs[:-1], strict=True):
        old_arrays = _arrays(old)
        for name, array in _arrays(layer).items():
            array[...] = old_arrays[name]  # in place: the flat buffer's views stay views
    kept, t = [], head.weight.data.dtype.type(source.temperature)
    for j, i in _matching_classes(class_names, source.class_names).items():
        head.weight.data[:, j] = old_head.weight.data[:, i] * t
        if head.bias is not None and old_head.bias is not None:
            head.bias.data[j] = old_head.bias.data[i] * t
        kept.append(class_names[j])
    return kept


def _matching_classes(new: tuple[str, ...], old: tuple[str, ...]) -> dict[int, int]:
    """{new class index: the source's index} for the classes both have (data.class_of)."""
    found = {j: class_of(name, old) for j, name in enumerate(new)}
    return {j: i for j, i in found.items() if i is not None}


def architecture_of(config: RunConfig) -> str:
    """`cnn, stages 32/64/128, hidden 256`: the settings that make a network's layers."""
    return ", ".join(f"{k} {show_setting(getattr(config, k))}" for k in ARCH_FIELDS)


__all__ = [
    "ARCH_FIELDS",
    "Source",
    "load_weights",
    "read_source",
    "run_settings",
    "settings_from",
    "start_from",
]
