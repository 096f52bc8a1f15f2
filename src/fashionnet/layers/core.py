"""The layer contract, dense layers, activations, dropout, flatten.

Weights are stored (in_features, out_features) so a dense layer is `x @ weight + bias`.
"""

from __future__ import annotations

import math
import sys
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]


def array_namespace(x: Any) -> ModuleType:
    """The array module of x (numpy, or cupy for GPU arrays): the maths stays swappable."""
    if type(x).__module__.startswith("cupy"):
        return sys.modules["cupy"]
    return np


def _cached(value: Array | None, layer: Layer) -> Array:
    """What forward(training=True) stored for backward; a clear error when it was not called."""
    if value is None:
        raise RuntimeError(f"{type(layer).__name__}.backward needs forward(x, training=True) first")
    return value


class Parameter:
    """A trainable array and its gradient; `decay` says whether weight decay applies to it."""

    __slots__ = ("data", "decay", "grad")

    def __init__(self, data: Array, *, decay: bool = True) -> None:
        self.data = data
        self.grad = array_namespace(data).zeros_like(data)
        self.decay = decay

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}, decay={self.decay})"


INITS = ("he", "glorot", "uniform", "torch")


def init_weight(
    init: str, fan_in: int, fan_out: int, shape: tuple[int, ...], rng: np.random.Generator
) -> Array:
    """float64 initial weights; callers cast. 'uniform' is the notebook's U(-0.5, 0.5)."""
    if init == "he":  # He et al. 2015: keeps ReLU activations' variance constant
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    if init == "glorot":  # Glorot & Bengio 2010, uniform variant
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape)
    if init == "uniform":
        return rng.uniform(-0.5, 0.5, size=shape)
    if init == "torch":  # PyTorch's Linear/Conv default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        limit = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-limit, limit, size=shape)
    raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")


class Layer:
    """The contract every layer follows. Layers without parameters inherit params() -> {}."""

    def params(self) -> dict[str, Parameter]:
        return {}

    def buffers(self) -> dict[str, Array]:
        """State that is saved with the model but not trained (BatchNorm's running statistics)."""
        return {}

    def forward(self, x: Array, *, training: bool = False) -> Array:
        raise NotImplementedError

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """Return dL/dx (None when input_grad is False) and set each parameter's .grad."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments: type(self)(**config()) rebuilds the layer's shape."""
        return {}

    @classmethod
    def param_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Parameter and buffer shapes of a layer built from `config`, without building it."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Linear(Layer):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rng: np.random.Generator | None = None,
        init: str = "he",
        bias: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear sizes must be positive, got {in_features}, {out_features}")
        rng = rng if rng is not None else np.random.default_rng(0)
        self.in_features, self.out_features, self.init = in_features, out_features, init
        w = init_weight(init, in_features, out_features, (in_features, out_features), rng)
        self.weight = Parameter(w.astype(dtype))
        self.bias: Parameter | None = None
        if bias:
            b = (
                rng.uniform(-0.5, 0.5, out_features)
                if init == "uniform"
                else np.zeros(out_features)
            )
            self.bias = Parameter(b.astype(dtype), decay=False)
        self._x: Array | None = None

    def params(self) -> dict[str, Parameter]:
        return {"weight": self.weight} | ({"bias": self.bias} if self.bias else {})

    @classmethod
    def param_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        n_in, n_out = int(config["in_features"]), int(config["out_features"])
        return {"weight": (n_in, n_out)} | ({"bias": (n_out,)} if config.get("bias", True) else {})

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._x = x if training else None
        out = x @ self.weight.data  # (batch, out_features)
        if self.bias is not None:
            out += self.bias.data
        return out

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dW = x^T g, db = sum_batch g, dx = g W^T."""
        x = _cached(self._x, self)
        array_namespace(x).matmul(x.T, grad_out, out=self.weight.grad)
        if self.bias is not None:
            grad_out.sum(axis=0, out=self.bias.grad)
        return grad_out @ self.weight.data.T if input_grad else None

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "init": self.init,
            "bias": self.bias is not None,
        }


class ReLU(Layer):
    _out: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        out = array_namespace(x).maximum(x, 0)
        self._out = out if training else None  # out > 0 exactly where x > 0
        return out

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * 1[x > 0]."""
        # dtype= multiplies by the mask without converting it to floats first (2x faster)
        return array_namespace(grad_out).multiply(
            grad_out, _cached(self._out, self) > 0, dtype=grad_out.dtype
        )


class LeakyReLU(Layer):
    def __init__(self, negative_slope: float = 0.01) -> None:
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"LeakyReLU negative_slope must be in [0, 1), got {negative_slope!r}")
        self.negative_slope = negative_slope
        self._slope: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        xp = array_namespace(x)
        slope = xp.where(x > 0, x.dtype.type(1), x.dtype.type(self.negative_slope))
        self._slope = slope if training else None
        return x * slope

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * (1 if x > 0 else slope)."""
        return grad_out * _cached(self._slope, self)

    def config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class Tanh(Layer):
    _out: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        out = array_namespace(x).tanh(x)
        self._out = out if training else None
        return out

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * (1 - tanh(x)^2)."""
        out = _cached(self._out, self)
        return grad_out * (1 - out * out)


class Sigmoid(Layer):
    _out: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        xp = array_namespace(x)
        # 0.5 * (1 + tanh(x/2)) is sigmoid without exp overflow for large |x|
        out = 0.5 * (1 + xp.tanh(0.5 * x))
        self._out = out if training else None
        return out

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * s * (1 - s)."""
        out = _cached(self._out, self)
        return grad_out * out * (1 - out)


class Dropout(Layer):
    """Inverted dropout: in training, zero units with probability p and scale the rest by 1/(1-p).

    The mask comes from `rng`, which must be given before training (the model's generator).
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout p must be in [0, 1), got {p!r}")
        self.p, self.rng = p, rng
        self._mask: Array | None = None

    def forward(self, x: Array, *, training: bool = False) -> Array:
        if not training or self.p == 0.0:
            self._mask = None
            return x
        if self.rng is None:
            raise RuntimeError("Dropout needs an rng to train: Dropout(p, rng=generator)")
        # 16 random bits per unit, taken straight from the bit generator (8x faster than
        # rng.random); a unit is kept when its bits fall below keep * 2^16
        threshold = max(1, round((1.0 - self.p) * 65536))
        bits = self.rng.bit_generator.random_raw(-(-x.size // 4)).view(np.uint16)[: x.size]
        xp = array_namespace(x)
        if x.ndim == 4:  # feature maps: the mask in x's channels-last memory order
            n, c, h, w = x.shape
            keep = xp.asarray(bits.reshape(n, h, w, c) < threshold).transpose(0, 3, 1, 2)
        else:
            keep = xp.asarray(bits.reshape(x.shape) < threshold)
        # the 1/keep scale is folded into the mask: one multiply in forward, one in backward
        self._mask = keep * x.dtype.type(65536 / threshold)
        return x * self._mask

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * mask / (1 - p)."""
        return grad_out if self._mask is None else grad_out * self._mask

    def config(self) -> dict[str, Any]:
        return {"p": self.p}


class Flatten(Layer):
    """(batch, ...) -> (batch, features)."""

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        return grad_out.reshape(self._shape)
