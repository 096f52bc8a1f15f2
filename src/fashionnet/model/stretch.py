"""Runs of per-image layers, executed depth first: a few images at a time through all of them.

Layer by layer, a convolutional network reads and writes the whole batch's feature maps at every
step: at batch 128 one 28x28x32 activation is 12.8 MB, several times a core's cache, so each
ReLU, pooling or im2col pass goes out to memory and back. Layers that treat every image on its
own (`Layer.per_image`: convolutions, activations, pooling, reshapes) need not wait for the whole
batch. A Stretch runs a chunk of images through all of its layers while the chunk's activations
are still in cache, and each thread (threads.py) takes its own part of the batch, chunk after
chunk: one hand-over per pass instead of one per layer.

Layers keep what backward needs in `_` attributes (STYLE.md), so the Stretch saves each chunk's
after its forward and puts them back before its backward, on a copy of each layer per thread.
The copies share the weights and have gradient arrays of their own, summed over chunks and then
over threads in part order: bit-identical results for a given thread count.

A ReLU just before a max-pool runs after it instead (`run_order`): the same outputs and gradients,
with the ReLU's two passes over a quarter of the values behind 2x2 pooling. A convolution and the
2x2 max-pool then after it run as one step (layers/convpool.py), whose pooling reads contiguous
blocks.
"""

from __future__ import annotations

import copy
from typing import Any

from .. import threads
from ..layers import Array, Conv2D, Layer, MaxPool2D, Parameter, ReLU, array_namespace
from ..layers.convpool import ConvPool

# a chunk's largest activation at most this: with the layers' own temporaries it stays in a
# core's cache (sizes compared in BENCHMARKS.md)
CHUNK_BYTES = 1 << 22

_Saved = list[tuple[int, int, list[dict[str, Any]]]]  # (first image, end, each layer's cache)


def stretches(layers: list[Layer]) -> list[tuple[int, int]]:
    """(start, stop) of every run of two or more per-image layers that holds a convolution."""
    runs, start = [], None
    for i, layer in enumerate([*layers, None]):
        if layer is not None and layer.per_image:
            start = i if start is None else start
            continue
        if (
            start is not None
            and i - start >= 2
            and any(isinstance(inner, Conv2D) for inner in layers[start:i])
        ):
            runs.append((start, i))
        start = None
    return runs


def run_order(layers: list[Layer]) -> list[Layer]:
    """The layers in the order a Stretch runs them: a ReLU that feeds a max-pool moves after it.

    ReLU is monotone, so relu(max(window)) == max(relu(window)) exactly. Backward, both orders send
    a window's gradient to its largest input when that is positive (ties go to the same first
    one) and give every input nothing when it is not. Only layers without parameters move, so
    the parameters keep their order.
    """
    order = list(layers)
    for i in range(len(order) - 1):
        if type(order[i]) is ReLU and type(order[i + 1]) is MaxPool2D:  # not subclasses
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


def _twin(layer: Layer) -> Layer:
    """A shallow copy with the same weights and gradient arrays of its own."""
    twin = copy.copy(layer)
    for name, value in vars(layer).items():
        if isinstance(value, Parameter):
            setattr(twin, name, Parameter(value.data))
    return twin


def _steps(layers: list[Layer]) -> list[tuple[int, Layer | ConvPool]]:
    """(index of its first layer, what runs it): a layer, or a convolution and its pooling."""
    steps: list[tuple[int, Layer | ConvPool]] = []
    i = 0
    while i < len(layers):
        fused = ConvPool.of(*layers[i : i + 2])
        steps.append((i, fused or layers[i]))
        i += 2 if fused else 1
    return steps


def _cache(layer: Layer) -> dict[str, Any]:
    return {k: v for k, v in vars(layer).items() if k.startswith("_")}


class Stretch:
    """Layers that each treat every image on its own, run chunk by chunk, part by part."""

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers  # as the model lists them
        self.order = run_order(layers)  # as they run (profile_step.py names these)
        self._shapes: dict[tuple[Any, ...], tuple[int, Array]] = {}
        self._twins: dict[int, list[Layer]] = {}
        self._saved: dict[int, _Saved] = {}
        self._x: Array | None = None

    def _probe(self, x: Array) -> tuple[int, Array]:
        """(images per chunk, one image's output): one image through the layers, once per
        input shape."""
        key = (x.shape[1:], x.dtype.str, x.strides[1:])
        if key not in self._shapes:
            h, largest = x[:1], x[:1].nbytes
            for layer in self.order:
                h = layer.forward(h)
                largest = max(largest, h.nbytes)
            self._shapes[key] = (max(1, CHUNK_BYTES // largest), h)
        return self._shapes[key]

    def forward(self, x: Array, *, training: bool = False) -> Array:
        step, sample = self._probe(x)
        xp = array_namespace(x)
        out = xp.empty_like(sample, shape=(len(x), *sample.shape[1:]))  # in sample's memory order
        self._twins, self._saved, self._x = {}, {}, (x if training else None)

        def part(images: slice) -> None:
            twins = [_twin(layer) for layer in self.order]  # caches of their own, per thread
            steps = _steps(twins)
            saved: _Saved = []
            with threads.single():
                for c0 in range(images.start, images.stop, step):
                    c1 = min(c0 + step, images.stop)
                    h = x[c0:c1]
                    for _, run in steps:
                        h = run.forward(h, training=training)
                    out[c0:c1] = h
                    if training:
                        saved.append((c0, c1, [_cache(layer) for layer in twins]))
            if training:
                self._twins[images.start], self._saved[images.start] = twins, saved

        threads.each(len(x), part)
        return out

    def backward(self, grad_out: Array, *, first: int) -> Array | None:
        """Every layer's parameter gradients from dL/d(output); layers below `first` (an index
        into this stretch, negative for none) are skipped, and the input gradient is returned
        only when every layer's is computed (first < 0), as Sequential.backward does."""
        if self._x is None:
            raise RuntimeError("Sequential.backward needs forward(x, training=True) first")
        x, g = self._x, grad_out
        grad = array_namespace(x).empty_like(x) if first < 0 else None
        lowest = max(first, 0)

        def part(images: slice) -> list[Array]:
            twins = self._twins[images.start]
            steps = _steps(twins)[::-1]
            params = [p for layer in twins for p in layer.params().values()]
            sums = [array_namespace(p.grad).zeros_like(p.grad) for p in params]
            with threads.single():
                for c0, c1, caches in self._saved[images.start]:
                    for layer, cache in zip(twins, caches, strict=True):
                        vars(layer).update(cache)
                    h = g[c0:c1]
                    for i, run in steps:
                        if i < lowest:
                            break
                        h_in = run.backward(h, input_grad=i > first)
                        h = h if h_in is None else h_in
                    if grad is not None:
                        grad[c0:c1] = h
                    for total, p in zip(sums, params, strict=True):
                        total += p.grad
            return sums

        sums = threads.summed(len(x), part)
        params = [p for layer in self.order for p in layer.params().values()]
        for p, total in zip(params, sums, strict=True):
            p.grad[...] = total
        self._twins, self._saved = {}, {}
        return grad
