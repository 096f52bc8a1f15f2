"""Where one training step's time goes: `python benchmarks/profile_step.py [--hidden 256,128]`.

Times each part of a step of the MLP (batch 128, float32, Adam) in isolation, many times over,
and prints a table: batch gathering, each layer's forward and backward, the loss, the optimiser.
The matrix-multiply share is what the BLAS does; the rest is overhead fashionnet controls.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from fashionnet.losses import softmax_cross_entropy
from fashionnet.model import mlp
from fashionnet.optim import Adam
from fashionnet.train import keep_freed_memory


def timeit(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of fn over `repeats` runs, after a warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="256,128")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batch-norm", action="store_true")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--cnn", action="store_true", help="the small CNN of benchmarks/run.py")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    hidden = [int(h) for h in args.hidden.split(",")]
    if args.cnn:
        from run import small_cnn  # benchmarks/run.py, beside this script

        model = small_cnn(rng)
        title = "small CNN conv32-pool-conv64-pool-fc128"
    else:
        model = mlp(784, hidden, 10, rng=rng, dropout=args.dropout, batch_norm=args.batch_norm)
        title = f"MLP 784-{args.hidden}-10"
    keep_freed_memory()  # as fit() does
    opt = Adam(model.parameters(), lr=1e-3)
    x = rng.random((60000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 60000)
    idx = rng.permutation(60000)[: args.batch_size]
    xb, yb = x[idx], y[idx]

    rows: list[tuple[str, float]] = [
        ("gather batch x[idx], y[idx]", timeit(lambda: (x[idx], y[idx]), args.repeats))
    ]
    h = xb
    inputs = []
    for i, layer in enumerate(model.layers):
        inputs.append(h)
        forward = partial(layer.forward, h, training=True)
        rows.append((f"forward  {i}: {layer!r}", timeit(forward, args.repeats)))
        h = forward()
    loss = partial(softmax_cross_entropy, h, yb)
    rows.append(("loss (softmax cross-entropy)", timeit(loss, args.repeats)))
    _, g = loss()
    for i in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[i]
        layer.forward(inputs[i], training=True)
        backward = partial(layer.backward, g, input_grad=i > 0)
        rows.append((f"backward {i}: {layer!r}", timeit(backward, args.repeats)))
        out = backward()
        if out is not None:
            g = out
    rows.append(
        (f"optimizer Adam over {opt.data.size:,} parameters", timeit(opt.step, args.repeats))
    )
    total = sum(t for _, t in rows)
    print(f"{title}, batch {args.batch_size}, dropout {args.dropout}, "
          f"BatchNorm {args.batch_norm}: {total * 1e3:.3f} ms per step")  # fmt: skip
    print("| part | ms | share |\n|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:.3f} | {t / total:.0%} |")


if __name__ == "__main__":
    main()
