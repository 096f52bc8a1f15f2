"""Sequential: a stack of layers with forward, backward, parameters in one flat buffer the model
owns, state_dict / load_state_dict, predict, summary and a config."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..layers import (
    Array,
    Layer,
    Parameter,
    array_namespace,
    build_layer,
    flatten_parameters,
    layer_class,
)
from ..losses import softmax
from ..threads import region
from .stretch import Stretch, stretches

# Inference batch: activations of 2048 images stay in cache, and below glibc's mmap threshold
# most temporaries are reused rather than page-faulted in (sizes compared in BENCHMARKS.md).
INFERENCE_BATCH = 2048


class Sequential:
    """Layers applied in order."""

    def __init__(self, layers: Iterable[Layer]) -> None:
        self.layers = list(layers)
        self._stretches: dict[int, Stretch] = {}
        # every parameter and gradient becomes a view of one flat buffer, weight-decayed ones
        # first (an optimiser's weight decay is then one slice); layers keep working on views
        params = sorted(self.parameters(), key=lambda p: not p.decay)  # stable
        self.flat: Array | None = None  # None for a model without parameters
        self.flat_grad: Array | None = None
        if params:
            self.flat, self.flat_grad = flatten_parameters(params)

    def state_dict(self) -> dict[str, Array]:
        """Every parameter and buffer by name ("0.weight", "1.running_mean", ...): the model's
        own arrays, not copies (as in PyTorch)."""
        return {name: p.data for name, p in self.named_parameters().items()} | self.named_buffers()

    def load_state_dict(self, state: dict[str, Array], *, strict: bool = True) -> list[str]:
        """Copy `state`'s arrays into the model's own (views of the flat buffer stay views).

        Names, shapes and dtypes are checked first, and nothing is copied unless all match; with
        strict=False, names missing from `state` are left as they are and returned.
        """
        mine = self.state_dict()
        missing = sorted(set(mine) - set(state))
        unexpected = sorted(set(state) - set(mine))
        if unexpected or (strict and missing):
            raise ValueError(
                f"state does not match the model: missing {missing}, unexpected {unexpected}"
            )
        for name, value in state.items():
            if value.shape != mine[name].shape or value.dtype != mine[name].dtype:
                raise ValueError(
                    f"state {name}: {value.dtype} {value.shape}, the model has "
                    f"{mine[name].dtype} {mine[name].shape}"
                )
        for name, value in state.items():
            mine[name][...] = value
        return missing

    def forward(self, x: Array, *, training: bool = False) -> Array:
        with region(None if self._splits else 1):
            for _, step in self.plan():
                x = step.forward(x, training=training)
        return x

    def backward(self, grad_out: Array) -> None:
        """Set every parameter's .grad, from dL/d(output) down to the first layer with parameters.

        Nothing below that layer has parameters, so its input gradient is never computed.
        """
        first = next((i for i, layer in enumerate(self.layers) if layer.params()), 0)
        with region(None if self._splits else 1):
            for start, step in reversed(self.plan()):
                if isinstance(step, Stretch):
                    if start + len(step.layers) <= first:
                        break
                    g = step.backward(grad_out, first=first - start)
                else:
                    if start < first:
                        break
                    g = step.backward(grad_out, input_grad=start > first)
                if g is not None:
                    grad_out = g

    def plan(self) -> list[tuple[int, Layer | Stretch]]:
        """What forward runs, in order, as (index of its first layer, layer or Stretch): runs of
        per-image layers around a convolution are grouped into one Stretch (model/stretch.py)."""
        plan: list[tuple[int, Layer | Stretch]] = []
        runs = dict(stretches(self.layers))
        i = 0
        while i < len(self.layers):
            if i in runs:
                layers = self.layers[i : runs[i]]
                known = self._stretches.get(i)
                if known is None or known.layers != layers:  # built once, kept across steps
                    known = self._stretches[i] = Stretch(layers)
                plan.append((i, known))
                i = runs[i]
            else:
                plan.append((i, self.layers[i]))
                i += 1
        return plan

    @property
    def _splits(self) -> bool:
        """Whether a layer splits its batch over threads (threads.py): convolutions do."""
        return any(layer.splits_batch for layer in self.layers)

    def named_parameters(self) -> dict[str, Parameter]:
        """{'0.weight': Parameter, '0.bias': ..., '3.weight': ...} in layer order."""
        return {
            f"{i}.{name}": p
            for i, layer in enumerate(self.layers)
            for name, p in layer.params().items()
        }

    def named_buffers(self) -> dict[str, Array]:
        """{'1.running_mean': array, ...}: saved with the model, never trained."""
        return {
            f"{i}.{name}": b
            for i, layer in enumerate(self.layers)
            for name, b in layer.buffers().items()
        }

    def parameters(self) -> list[Parameter]:
        return list(self.named_parameters().values())

    def n_parameters(self) -> int:
        return sum(p.data.size for p in self.parameters())

    def predict_proba(
        self, x: Array, *, batch_size: int = INFERENCE_BATCH, pixels: bool = True
    ) -> Array:
        """Class probabilities (n, n_classes), evaluated in large batches without caching.
        `pixels=False` lifts the 0..1 check for inputs that are not images."""
        x = self._checked(x, pixels)
        parts = [softmax(self._forward_checked(x[i : i + batch_size]))
                 for i in range(0, len(x), batch_size)]  # fmt: skip
        return parts[0] if len(parts) == 1 else array_namespace(x).concatenate(parts)

    def predict(self, x: Array, *, batch_size: int = INFERENCE_BATCH, pixels: bool = True) -> Array:
        """Predicted class indices (n,)."""
        x = self._checked(x, pixels)
        parts = [self._forward_checked(x[i : i + batch_size]).argmax(axis=1)  # logits rank as
                 for i in range(0, len(x), batch_size)]  # probabilities do  # fmt: skip
        return array_namespace(x).concatenate(parts)

    @staticmethod
    def _checked(x: Array, pixels: bool) -> Array:
        """Inputs as predict takes them, floats, (n, features) or (n, h, w); what the model would
        silently get wrong (uint8 images, pixels 0..255 as floats) is a ValueError that says how
        to convert."""
        if len(x) == 0:
            raise ValueError("predict needs at least one sample")
        if x.dtype.kind != "f":
            raise ValueError(
                f"predict takes float pixels 0..1, got {x.dtype} values: convert images with "
                "fashionnet.to_float(images), which divides by 255"
            )
        if pixels and _looks_like_raw_pixels(x):
            raise ValueError(
                f"predict takes pixels 0..1, got whole numbers up to {float(x.max()):g}: divide "
                "by 255 (fashionnet.to_float(images) does)"
            )
        return x.reshape(len(x), -1) if x.ndim == 3 else x

    def _forward_checked(self, x: Array) -> Array:
        try:
            return self.forward(x)
        except ValueError as e:  # a matmul or reshape of the wrong size
            raise ValueError(
                f"inputs of shape {x.shape[1:]} per sample do not fit this model ({e})"
            ) from None

    def config(self) -> dict[str, Any]:
        return {"layers": [layer.spec() for layer in self.layers]}

    @staticmethod
    def param_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """{"0.weight": (784, 256), ...}: parameter and buffer shapes, without building it."""
        return {
            f"{i}.{name}": shape
            for i, spec in enumerate(config["layers"])
            for name, shape in layer_class(spec).param_shapes(spec).items()
        }

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        *,
        rng: np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> Sequential:
        """Rebuild the architecture (weights freshly initialised from rng)."""
        return cls(build_layer(spec, rng, dtype) for spec in config["layers"])

    def summary(self, n_features: int) -> str:
        """Per layer its output shape and parameter count, then the totals, as Keras prints a
        model.summary(). Non-trainable parameters are buffers (BatchNorm's running statistics).
        The shapes come from one forward pass of a zero image with `n_features` pixels."""
        width = (34, 26, 12)
        rows = [f"{'Layer (type)':<{width[0]}}{'Output Shape':<{width[1]}}{'Param #':>{width[2]}}"]
        x = np.zeros((1, n_features), np.float32)
        for i, layer in enumerate(self.layers):
            x = layer.forward(x)
            n = sum(p.data.size for p in layer.params().values())
            shape = "(None, " + ", ".join(str(d) for d in x.shape[1:]) + ")"
            rows.append(f"{f'{i} ({type(layer).__name__})':<{width[0]}}{shape:<{width[1]}}"
                        f"{n:>{width[2]},}")  # fmt: skip
        trainable = self.n_parameters()
        frozen = sum(b.size for b in self.named_buffers().values())
        line, double = "_" * sum(width), "=" * sum(width)
        return "\n".join([
            line, *rows[:1], double, *rows[1:], double,
            f"Total params: {trainable + frozen:,}", f"Trainable params: {trainable:,}",
            f"Non-trainable params: {frozen:,}",
            f"Mult-adds per image (M): {self.mult_adds(n_features) / 1e6:.2f}", line,
        ])  # fmt: skip

    def mult_adds(self, n_features: int) -> int:
        """Multiply-adds of one image's pass through the layers' products (convolutions and
        dense layers), from one forward pass of a zero image with `n_features` pixels."""
        x, total = np.zeros((1, n_features), np.float32), 0
        for layer in self.layers:
            x, before = layer.forward(x), x
            total += layer.mult_adds(before, x)
        return total

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"


class FlipAveraged:
    """Test-time augmentation around a Sequential: class probabilities are the mean of those of
    several views of each square image. `mode` "flip": the image and its mirror image; "flip-shift":
    both, as they are and moved one pixel up, down, left and right (10 views, five times the
    work), as training's shift of up to one pixel moved them. Training, weights and files are the
    wrapped model's; `fit` trains `model` and measures validation through the wrapper."""

    def __init__(self, model: Sequential, mode: str = "flip") -> None:
        if mode not in TTA_MODES:
            raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}; got {mode!r}")
        self.model, self.mode = model, mode

    def two_views(self) -> FlipAveraged:
        """The image and its mirror alone: what a run validates each epoch through (10 views
        would add a fifth to the `cnn` preset's training time)."""
        return self if self.mode == "flip" else FlipAveraged(self.model)

    def views(self, x: Array) -> list[Array]:
        """The flat square images each prediction averages over, `x` first, its mirror second."""
        both = [x, mirror(x)]
        if self.mode == "flip":
            return both
        return both + [shifted(v, dy, dx) for dy, dx in ONE_PIXEL for v in both]

    @property
    def n_views(self) -> int:
        """How many views each prediction averages (counted from views(), so never apart)."""
        return len(self.views(np.zeros((1, 1), np.float32)))

    def predict_proba(
        self, x: Array, *, batch_size: int = INFERENCE_BATCH, pixels: bool = True
    ) -> Array:
        x = x.reshape(len(x), -1) if x.ndim == 3 else x
        xp, n_views = array_namespace(x), self.n_views
        step = max(1, batch_size // n_views)
        parts = []
        for i in range(0, len(x), step):  # each image beside its other views: one pass
            xb = x[i : i + step]
            probs = self.model.predict_proba(
                xp.concatenate(self.views(xb)), batch_size=batch_size, pixels=pixels
            )
            mean = probs[: len(xb)]
            for v in range(1, n_views):
                mean += probs[v * len(xb) : (v + 1) * len(xb)]
            mean /= mean.dtype.type(n_views)
            parts.append(mean)
        if not parts:
            return self.model.predict_proba(x, batch_size=batch_size, pixels=pixels)
        return parts[0] if len(parts) == 1 else xp.concatenate(parts)

    def predict(self, x: Array, *, batch_size: int = INFERENCE_BATCH, pixels: bool = True) -> Array:
        return self.predict_proba(x, batch_size=batch_size, pixels=pixels).argmax(axis=1)

    def config(self) -> dict[str, Any]:
        return {**self.model.config(), "tta": self.mode}

    def __repr__(self) -> str:
        mode = "" if self.mode == "flip" else f", mode={self.mode!r}"
        return f"FlipAveraged({self.model!r}{mode})"


def _looks_like_raw_pixels(x: Array) -> bool:
    """Floats that are whole numbers from 0 to over 1: 0..255 pixels cast without scaling (real
    features, standardised or not, are not all whole numbers)."""
    xp = array_namespace(x)
    return bool(x.max() > 1.5 and x.min() >= 0 and xp.all(x == xp.round(x)))


# what predicts: a Sequential, or one wrapped for test-time augmentation
Classifier = Sequential | FlipAveraged
TTA_MODES = ("flip", "flip-shift")
# the moves (rows, columns) of "flip-shift"'s views besides the unmoved ones: up, down, left, right
ONE_PIXEL = ((-1, 0), (1, 0), (0, -1), (0, 1))


def unwrap(model: Classifier) -> Sequential:
    """The Sequential that holds the layers and weights."""
    return model.model if isinstance(model, FlipAveraged) else model


def with_tta(model: Classifier, tta: str | None) -> Classifier:
    """`model`'s layers and weights (the same objects, not copies) predicting through other
    views: `tta` one of TTA_MODES, or None for each image alone."""
    inner = unwrap(model)
    return inner if tta is None else FlipAveraged(inner, tta)


def tta_of(model: Classifier) -> str | None:
    """The views `model` averages over: a TTA_MODES entry, or None (each image alone)."""
    return model.mode if isinstance(model, FlipAveraged) else None


def model_from_config(
    config: dict[str, Any], *, rng: np.random.Generator | None = None, dtype: Any = np.float32
) -> Classifier:
    """A model's config() back to the model: the layers, wrapped when the config says "tta"."""
    tta = config.get("tta")
    if tta is not None and tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)} or None; got {tta!r}")
    model = Sequential.from_config(config, rng=rng, dtype=dtype)
    return FlipAveraged(model, tta) if tta is not None else model


def square_side(features: int) -> int:
    """The side of square images of `features` pixels: the only images views are made of."""
    side = math.isqrt(features)
    if side * side != features:
        raise ValueError(f"averaging views needs square images; got {features} pixels per image")
    return side


def mirror(x: Array) -> Array:
    """Flat square images (n, side * side) mirrored left to right."""
    n, features = x.shape
    side = square_side(features)
    return x.reshape(n, side, side)[:, :, ::-1].reshape(n, features)


def shifted(x: Array, dy: int, dx: int) -> Array:
    """Flat square images (n, side * side) moved dy pixels down and dx right (negative: up,
    left), the rows and columns moved in from outside zero, as training's shift fills them."""
    n, features = x.shape
    side = square_side(features)
    square, out = x.reshape(n, side, side), array_namespace(x).zeros((n, side, side), x.dtype)
    rows, from_rows = slice(max(dy, 0), side + min(dy, 0)), slice(max(-dy, 0), side - max(dy, 0))
    cols, from_cols = slice(max(dx, 0), side + min(dx, 0)), slice(max(-dx, 0), side - max(dx, 0))
    out[:, rows, cols] = square[:, from_rows, from_cols]
    return out.reshape(n, features)
