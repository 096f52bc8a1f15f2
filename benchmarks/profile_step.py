"""Where one training step's time goes: `python benchmarks/profile_step.py [--hidden 256,128]`.

Times each part of real training steps of the MLP (batch 128, float32, Adam), of the small
CNN with --cnn, or of a preset's network and optimiser with --preset NAME (its batch size unless
--batch-size says), and prints a table of medians: batch gathering, each layer's forward and
backward, the loss, the optimiser. The thread count is the BLAS's, or FASHIONNET_THREADS.
The matrix-multiply share is what the BLAS does; the rest is overhead fashionnet controls.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fashionnet import threads
from fashionnet.config import preset, show_setting
from fashionnet.losses import softmax_cross_entropy
from fashionnet.model import mlp, unwrap
from fashionnet.model.stretch import Stretch
from fashionnet.optim import Adam, Optimizer
from fashionnet.runs import build_training
from fashionnet.train import keep_freed_memory


def profile(model, opt, x, y, batch: int, steps: int) -> list[tuple[str, float]]:
    """Median seconds of each part of `steps` real training steps, timed in the order a
    step runs them (each layer gets the arrays the one before it just wrote, as in training,
    not a warm copy of its own), as Sequential runs them: in the model's thread region, runs
    of per-image layers as one Stretch (a chunk of images at a time, so timed together)."""
    rng = np.random.default_rng(2)
    plan = model.plan()
    first = next((i for i, layer in enumerate(model.layers) if layer.params()), 0)

    def name(start: int, step: object) -> str:
        if isinstance(step, Stretch):
            inner = ", ".join(type(layer).__name__ for layer in step.order)  # as they run
            return f"{start}-{start + len(step.layers) - 1}: {inner}, a chunk of images at a time"
        return f"{start}: {step!r}"

    back = [(start, step) for start, step in reversed(plan)
            if start + len(getattr(step, "layers", [step])) > first]  # fmt: skip
    names = (["gather batch x[idx], y[idx]"]
             + [f"forward  {name(start, step)}" for start, step in plan]
             + ["loss (softmax cross-entropy)"]
             + [f"backward {name(start, step)}" for start, step in back]
             + [f"optimizer {type(opt).__name__} over {opt.data.size:,} parameters"])  # fmt: skip
    times = np.zeros((steps, len(names)))
    splits = any(layer.splits_batch for layer in model.layers)
    for i in range(steps + 3):  # three warm-up steps
        tick = [time.perf_counter()]
        idx = rng.integers(0, len(x), batch)
        h, yb = x[idx], y[idx]
        tick.append(time.perf_counter())
        with threads.region(None if splits else 1):
            for _, step in plan:
                h = step.forward(h, training=True)
                tick.append(time.perf_counter())
            _, g = softmax_cross_entropy(h, yb)
            tick.append(time.perf_counter())
            for start, step in back:
                if isinstance(step, Stretch):
                    out = step.backward(g, first=first - start)
                else:
                    out = step.backward(g, input_grad=start > first)
                g = g if out is None else out
                tick.append(time.perf_counter())
        opt.step()
        tick.append(time.perf_counter())
        if i >= 3:
            times[i - 3] = np.diff(tick)
    return list(zip(names, np.median(times, axis=0), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="256,128")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, help="default: 128, or the preset's")
    parser.add_argument("--batch-norm", action="store_true")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--cnn", action="store_true", help="the small CNN of benchmarks/run.py")
    parser.add_argument("--preset", help="a preset's network and optimiser, e.g. cnn")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    hidden = [int(h) for h in args.hidden.split(",")]
    batch = args.batch_size or 128
    opt: Optimizer | None = None
    if args.preset:
        config = preset(args.preset)
        batch = args.batch_size or config.batch_size
        model, opt, _ = build_training(config, 784, 10, 55000, rng)
        model = unwrap(model)  # mirror averaging is for predictions, not training steps
        title = f"preset {args.preset} ({config.arch}, {show_setting(config.stages)})"
    elif args.cnn:
        from run import small_cnn  # benchmarks/run.py, beside this script

        model = small_cnn(rng)
        title = "small CNN conv32-pool-conv64-pool-fc128"
    else:
        model = mlp(784, hidden, 10, rng=rng, dropout=args.dropout, batch_norm=args.batch_norm)
        title = f"MLP 784-{args.hidden}-10"
    keep_freed_memory()  # as fit() does
    opt = opt or Adam(model.parameters(), lr=1e-3)
    x = rng.random((60000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 60000)
    rows = profile(model, opt, x, y, batch, args.repeats)
    total = sum(t for _, t in rows)
    settings = "" if args.preset else f", dropout {args.dropout}, BatchNorm {args.batch_norm}"
    print(f"{title}, batch {batch}{settings}, {threads.count()} thread(s): "
          f"{total * 1e3:.3f} ms per step")  # fmt: skip
    print("| part | ms | share |\n|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:.3f} | {t / total:.0%} |")


if __name__ == "__main__":
    main()
