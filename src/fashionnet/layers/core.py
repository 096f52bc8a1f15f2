"""The layer contract and its registry, the flat parameter buffer, Linear, Dropout, Flatten.

Weights are stored (in_features, out_features) so a dense layer is `x @ weight + bias`.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

from .. import threads

Array = NDArray[Any]


def array_namespace(x: Any) -> ModuleType:
    """The array module of x (numpy, or cupy for GPU arrays): the maths stays swappable."""
    if type(x).__module__.startswith("cupy"):
        return sys.modules["cupy"]
    return np


def column_sums(a: Array) -> Array:
    """a.sum(axis=0) of a 2-D array as a matrix-vector product: 4x faster than NumPy's reduction
    down the columns of a tall array, and more accurate (the BLAS sums in several lanes)."""
    xp = array_namespace(a)
    return xp.ones(len(a), a.dtype) @ a


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


def _tiles(params: Sequence[Parameter], flat: Array | None, attr: str) -> bool:
    """True when the params' arrays are consecutive views covering all of `flat`."""
    if flat is None:
        return False
    offset = 0
    for p in params:
        a = getattr(p, attr)
        if a.base is not flat or not a.flags.c_contiguous:
            return False
        start = (a.__array_interface__["data"][0] - flat.__array_interface__["data"][0]) // (
            flat.itemsize
        )
        if start != offset:
            return False
        offset += a.size
    return offset == flat.size


def _offset(p: Parameter) -> int:
    base = p.data.base
    assert base is not None
    return (p.data.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // (
        base.itemsize
    )


def flat_buffers(params: Sequence[Parameter]) -> tuple[list[Parameter], Array, Array]:
    """(params in buffer order, data buffer, grad buffer) when the params are consecutive views
    covering one flat data buffer and one flat grad buffer; ValueError otherwise."""
    if not params:
        raise ValueError("an optimiser needs at least one parameter")
    base, gbase = params[0].data.base, params[0].grad.base
    ordered = sorted(params, key=_offset) if base is not None else list(params)
    if (
        base is None
        or gbase is None
        or not (_tiles(ordered, base, "data") and _tiles(ordered, gbase, "grad"))
    ):
        raise ValueError(
            "the parameters must be views of one flat buffer: pass a Sequential's parameters(), "
            "or call flatten_parameters(params) on loose ones first"
        )
    return ordered, base, gbase


def flatten_parameters(params: Sequence[Parameter]) -> tuple[Array, Array]:
    """Make params views into one flat data buffer and one flat grad buffer, in the given order
    (a Sequential puts the decayed ones first); return both. Already-flat parameters are left
    as they are."""
    if not params:
        raise ValueError("an optimiser needs at least one parameter")
    base, gbase = params[0].data.base, params[0].grad.base
    if _tiles(params, base, "data") and _tiles(params, gbase, "grad"):
        assert base is not None and gbase is not None
        return base, gbase
    xp = array_namespace(params[0].data)
    dtype = params[0].data.dtype
    if any(p.data.dtype != dtype for p in params):
        raise ValueError("all parameters must share one dtype")
    total = sum(p.data.size for p in params)
    flat, gflat = xp.empty(total, dtype), xp.zeros(total, dtype)
    offset = 0
    for p in params:
        n = p.data.size
        flat[offset : offset + n] = p.data.ravel()
        gflat[offset : offset + n] = p.grad.ravel()
        p.data = flat[offset : offset + n].reshape(p.data.shape)
        p.grad = gflat[offset : offset + n].reshape(p.data.shape)
        offset += n
    return flat, gflat


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


class OnnxGraph(Protocol):
    """What a layer's to_onnx adds its nodes to (export.py builds it; onnx is imported there)."""

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str: ...

    def const(self, array: Array, name: str) -> str: ...


class Layer:
    """The contract every layer follows. Layers without parameters inherit params() -> {}.

    Every public subclass registers itself under its class name, so that the spec
    {"type": "Linear", **config()} builds it again (checkpoints, config.json), and the contract
    test (tests/test_layer_contract.py) checks it: gradients, dtypes, config and state round
    trips, saving and ONNX export, on the instance and input its `example` gives.
    """

    registry: ClassVar[dict[str, type[Layer]]] = {}
    # True for layers whose work is mostly per-image copies and elementwise passes (convolutions):
    # a model holding one runs its passes in threads.region(), every layer splitting its batch
    splits_batch: ClassVar[bool] = False
    # True for layers that treat every image on its own (no batch statistics, no random draws):
    # a model runs consecutive ones around a convolution a few images at a time (model/stretch.py)
    per_image: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):  # shared private bases such as _Pool2D
            return
        taken = Layer.registry.get(cls.__name__)
        if taken is not None and taken.__module__ != cls.__module__:
            raise TypeError(f"a layer named {cls.__name__} exists already ({taken.__module__})")
        Layer.registry[cls.__name__] = cls

    @classmethod
    def from_config(
        cls, config: dict[str, Any], *, rng: np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> Layer:  # fmt: skip
        """The layer config() describes, weights drawn from rng (for constructors taking one)."""
        takes = inspect.signature(cls).parameters
        extra = {k: v for k, v in (("rng", rng), ("dtype", dtype)) if k in takes}
        return cls(**config, **extra)

    def spec(self) -> dict[str, Any]:
        """{"type": class name, **config()}: what a model's config lists per layer."""
        return {"type": type(self).__name__, **self.config()}

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        """A small instance and an input batch for it, for the contract test."""
        return cls.from_config({}, rng=rng, dtype=dtype), rng.normal(size=(3, 4)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        """Add this layer's ONNX nodes, reading tensor `x`; return the output tensor's name."""
        raise ValueError(f"no ONNX export for layer {type(self).__name__}")

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


def layer_class(spec: Any) -> type[Layer]:
    """The registered layer class a spec {"type": name, ...} names."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in Layer.registry:
        raise ValueError(f"unknown layer type {kind!r}")
    return Layer.registry[kind]


def build_layer(spec: dict[str, Any], rng: np.random.Generator | None, dtype: Any) -> Layer:
    """A layer from its spec ({"type": "Linear", **config}), weights drawn from rng."""
    config = {k: v for k, v in spec.items() if k != "type"}
    return layer_class(spec).from_config(config, rng=rng, dtype=dtype)


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
        xp = array_namespace(x)
        out = xp.empty((len(x), self.out_features), xp.result_type(x, self.weight.data))

        def part(rows: slice) -> None:  # one part, the whole batch, unless in threads.region()
            xp.matmul(x[rows], self.weight.data, out=out[rows])  # (batch, out_features)
            if self.bias is not None:
                out[rows] += self.bias.data

        threads.each(len(x), part)
        return out

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dW = x^T g, db = sum_batch g, dx = g W^T."""
        x, g = _cached(self._x, self), grad_out
        xp = array_namespace(x)
        if len(threads.split(len(x), threads.parts())) == 1:
            xp.matmul(x.T, g, out=self.weight.grad)
            if self.bias is not None:
                self.bias.grad[...] = column_sums(g)
            return g @ self.weight.data.T if input_grad else None
        grad = xp.empty_like(x) if input_grad else None

        def part(rows: slice) -> tuple[Array, Array]:
            if grad is not None:
                xp.matmul(g[rows], self.weight.data.T, out=grad[rows])
            return x[rows].T @ g[rows], column_sums(g[rows])

        d_weight, d_bias = (threads.total(p) for p in zip(*threads.each(len(x), part), strict=True))
        self.weight.grad[...] = d_weight
        if self.bias is not None:
            self.bias.grad[...] = d_bias
        return grad

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "init": self.init,
            "bias": self.bias is not None,
        }

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        return cls(4, 5, rng=rng, dtype=dtype), rng.normal(size=(3, 4)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        inputs = [x, graph.const(self.weight.data, f"{prefix}.weight")]
        if self.bias is not None:
            inputs.append(graph.const(self.bias.data, f"{prefix}.bias"))
        return graph.node("Gemm", inputs, f"{prefix}.linear")


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
        # a unit is kept with probability 1 - p (to 2^-53: float64 draws), so the scale is
        # 1 / (1 - p) as in PyTorch; as fast here as masks built from 16 or 32 random bits
        xp = array_namespace(x)
        if x.ndim == 4:  # feature maps: the mask in x's channels-last memory order
            n, c, h, w = x.shape
            drawn = self.rng.random((n, h, w, c)) < 1.0 - self.p
            keep = xp.asarray(drawn).transpose(0, 3, 1, 2)
        else:
            keep = xp.asarray(self.rng.random(x.shape) < 1.0 - self.p)
        # the 1/keep scale is folded into the mask: one multiply in forward, one in backward
        self._mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        """dL/dx = g * mask / (1 - p)."""
        return grad_out if self._mask is None else grad_out * self._mask

    def config(self) -> dict[str, Any]:
        return {"p": self.p}

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        return cls(0.3, rng=rng), rng.normal(size=(3, 40)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        return graph.node("Identity", [x], f"{prefix}.identity")  # inference: no dropout


class Flatten(Layer):
    """(batch, ...) -> (batch, features)."""

    per_image = True

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, grad_out: Array, *, input_grad: bool = True) -> Array | None:
        return grad_out.reshape(self._shape)

    @classmethod
    def example(cls, rng: np.random.Generator, dtype: Any) -> tuple[Layer, Array]:
        return cls(), rng.normal(size=(3, 2, 3, 3)).astype(dtype)

    def to_onnx(self, graph: OnnxGraph, prefix: str, x: str) -> str:
        return graph.node("Flatten", [x], f"{prefix}.flatten", axis=1)
