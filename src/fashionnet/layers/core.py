"""The layer contract and its registry, the flat parameter buffer, weight initialisation."""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

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

    def mult_adds(self, x: Array, out: Array) -> int:
        """Multiply-adds of the layer's products for one sample `x` whose output is `out`: what
        a model summary counts as its cost (elementwise passes, pooling and the like: 0)."""
        return 0

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
