"""Optimisers over one flat buffer: every parameter and gradient is a view into it.

An update is then a handful of vectorised in-place operations on whole arrays, whatever the
number of layers. The buffer belongs to the model (Sequential lays it out, or
`flatten_parameters` for loose parameters); an optimiser only checks it and never moves a
parameter. Parameters with decay=True come first, so weight decay touches the slice
`[:n_decay]` and never the biases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .layers import Array, Parameter, array_namespace, flat_buffers, flatten_parameters

# Every FLUSH_EVERY steps the moments' subnormal values become 0. A moment whose gradient stays
# 0 (the weights of a ReLU unit that died) decays by beta each step into float32's subnormal
# range and stays there (0.9 x the smallest subnormal rounds back to it); x86 runs arithmetic on
# subnormals many times slower: an Adam step of the 784-256-128-10 MLP on Fashion-MNIST went from
# 0.54 to 2.1 ms over 8 epochs as 8% of m became subnormal (BENCHMARKS.md). 0 is what such a
# value stands for: an update of 1e-38 / sqrt(v) moves no weight by a bit.
FLUSH_EVERY = 50


class Optimizer:
    """Base: owns the flat views, the step count and the learning rate (set by the schedule)."""

    def __init__(self, params: Sequence[Parameter], *, lr: float, weight_decay: float) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        ordered, self.data, self.grad = flat_buffers(params)
        self.params = ordered
        self.n_decay = sum(p.data.size for p in ordered if p.decay)
        if not all(p.decay for p in ordered[: sum(p.decay for p in ordered)]):
            raise ValueError(
                "the parameters with weight decay must come first in their flat buffer: "
                "build the model (or flatten_parameters) after setting Parameter.decay"
            )
        self.lr, self.weight_decay = lr, weight_decay
        self.steps = 0
        self._tmp = array_namespace(self.data).empty_like(self.data)

    def step(self) -> None:
        raise NotImplementedError

    def _flush_subnormals(self) -> None:
        """Every FLUSH_EVERY steps: the state arrays' subnormal values -> 0 (see above)."""
        if self.steps % FLUSH_EVERY:
            return
        tmp = self._tmp
        xp = array_namespace(tmp)
        for state in self.state_arrays().values():
            xp.abs(state, out=tmp)
            state[tmp < xp.finfo(tmp.dtype).tiny] = 0

    def _add_l2(self) -> None:
        """Coupled L2: g += weight_decay * w on the decayed slice (the gradient of wd/2 * |w|^2)."""
        if self.weight_decay:
            d = self.n_decay
            tmp = self._tmp[:d]
            array_namespace(tmp).multiply(self.data[:d], self.weight_decay, out=tmp)
            self.grad[:d] += tmp

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def state_arrays(self) -> dict[str, Array]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly: type, hyperparameters, step and moments."""
        return {
            "type": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "steps": self.steps,
            "arrays": {k: v.copy() for k, v in self.state_arrays().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["type"] != type(self).__name__:
            raise ValueError(f"state is for {state['type']}, not {type(self).__name__}")
        for k, v in state["hyperparameters"].items():
            setattr(self, k, v)
        self.steps = int(state["steps"])
        mine = self.state_arrays()
        if set(mine) != set(state["arrays"]):
            raise ValueError(
                f"optimiser state arrays {sorted(state['arrays'])}, expected {sorted(mine)}"
            )
        for k, v in state["arrays"].items():
            if v.shape != mine[k].shape:
                raise ValueError(
                    f"optimiser state {k!r} has shape {v.shape}, expected {mine[k].shape}"
                )
            mine[k][...] = v


class SGD(Optimizer):
    """w -= lr * v, v = momentum * v + g (PyTorch's form); Nesterov uses g + momentum * v."""

    def __init__(
        self,
        params: Sequence[Parameter],
        *,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov
        self.velocity = array_namespace(self.data).zeros_like(self.data)

    def step(self) -> None:
        self._add_l2()
        g, v, tmp = self.grad, self.velocity, self._tmp
        xp = array_namespace(g)
        if self.momentum:
            if self.steps == 0:
                v[...] = g
            else:
                v *= self.momentum
                v += g
            if self.nesterov:
                xp.multiply(v, self.momentum, out=tmp)
                tmp += g
                g = tmp
            else:
                g = v
        xp.multiply(g, -self.lr, out=self._tmp)
        self.data += self._tmp
        self.steps += 1
        self._flush_subnormals()

    def hyperparameters(self) -> dict[str, Any]:
        return super().hyperparameters() | {"momentum": self.momentum, "nesterov": self.nesterov}

    def state_arrays(self) -> dict[str, Array]:
        return {"velocity": self.velocity} if self.momentum else {}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with coupled L2 weight decay, as torch.optim.Adam."""

    decoupled = False

    def __init__(
        self,
        params: Sequence[Parameter],
        *,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        xp = array_namespace(self.data)
        self.m, self.v = xp.zeros_like(self.data), xp.zeros_like(self.data)

    def step(self) -> None:
        """Ten passes over the flat buffer: m and v are kept without their (1 - beta) factors
        (m' = b1 m' + g, v' = b2 v' + g^2), which are folded into the step size and eps.

        m = (1-b1) m', v = (1-b2) v';  w -= lr * (m / bc1) / (sqrt(v / bc2) + eps)
          = lr (1-b1)/bc1 / sqrt((1-b2)/bc2) * m' / (sqrt(v') + eps / sqrt((1-b2)/bc2))
        """
        if self.decoupled:  # AdamW: w -= lr * wd * w, outside the adaptive scaling
            d = self.n_decay
            self.data[:d] *= 1 - self.lr * self.weight_decay
        else:
            self._add_l2()
        self.steps += 1
        g, m, v, tmp = self.grad, self.m, self.v, self._tmp
        xp = array_namespace(g)
        b1, b2 = self.beta1, self.beta2
        m *= b1
        m += g
        v *= b2
        xp.multiply(g, g, out=tmp)
        v += tmp
        bc1, bc2 = 1 - b1**self.steps, 1 - b2**self.steps
        v_scale = math.sqrt((1 - b2) / bc2)
        xp.sqrt(v, out=tmp)
        tmp += self.eps / v_scale
        xp.divide(m, tmp, out=tmp)
        tmp *= -self.lr * (1 - b1) / bc1 / v_scale
        self.data += tmp
        self._flush_subnormals()

    def hyperparameters(self) -> dict[str, Any]:
        return super().hyperparameters() | {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
        }

    def state_arrays(self) -> dict[str, Array]:
        return {"m": self.m, "v": self.v}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as torch.optim.AdamW."""

    decoupled = True

    def __init__(
        self,
        params: Sequence[Parameter],
        *,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(
            params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay
        )


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(name: str, params: Sequence[Parameter], **kwargs: Any) -> Optimizer:
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}"
        ) from None
    return cls(params, **kwargs)


__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "flatten_parameters", "make_optimizer"]
