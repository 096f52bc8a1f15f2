"""fashionnet vs its references, side by side: `python benchmarks/run.py` (about 30 minutes).

Every measurement runs in a fresh subprocess with the BLAS/OpenMP thread count fixed through the
environment, and the implementations alternate (A B A B ...) so a change in machine load hits
both. Results go to benchmarks/results.json and BENCHMARKS.md is regenerated from them.
`--smoke` runs every worker at tiny sizes (the test suite does this so the script never rots).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# --------------------------------------------------------------------------- workers
# Each worker runs in its own process, measures one thing, and prints one JSON line.


def _data(smoke: bool) -> tuple[Any, Any, Any, Any]:
    import numpy as np

    from fashionnet.data import SYSTEM_DATA_DIR, load_fashion_mnist, to_float

    if smoke or not SYSTEM_DATA_DIR.is_dir():
        rng = np.random.default_rng(0)
        n = 512 if smoke else 60000
        x = rng.random((n, 784), dtype=np.float32)
        return x, rng.integers(0, 10, n), x[:256], rng.integers(0, 10, 256)
    data = load_fashion_mnist()
    return (
        to_float(data.train.images),
        data.train.labels,
        to_float(data.test.images),
        data.test.labels,
    )


def worker_mlp_throughput(impl: str, threads: int, smoke: bool) -> dict[str, Any]:
    """Training samples/s (forward + backward + Adam step) and inference time on the test set,
    784-256-128-10, batch 128, float32."""
    import numpy as np

    from fashionnet.model import mlp

    x, y, xt, _ = _data(smoke)
    model = mlp(784, [256, 128], 10, rng=np.random.default_rng(0), init="torch")
    return _throughput(impl, threads, model, x, y, xt, smoke)


def worker_mlp_default_throughput(impl: str, threads: int, smoke: bool) -> dict[str, Any]:
    """The same for the default preset's network (784-256-128-10 with BatchNorm) at its batch
    size, 256."""
    import numpy as np

    from fashionnet.config import preset
    from fashionnet.runs import build_model

    x, y, xt, _ = _data(smoke)
    config = preset("mlp")
    model = build_model(config, 784, 10, np.random.default_rng(0))
    return _throughput(impl, threads, model, x, y, xt, smoke, batch=config.batch_size)


def _steppers(impl: str, model: Any, threads: int) -> tuple[Any, Any]:
    """(train_step(x, y), predict(x) -> labels) on numpy batches: Adam (lr 1e-3) over
    fashionnet's model, or over its PyTorch twin with the same initial weights."""
    from fashionnet.losses import softmax_cross_entropy
    from fashionnet.optim import Adam
    from fashionnet.train import keep_freed_memory

    if impl == "fashionnet":
        keep_freed_memory()  # as fit() does
        opt = Adam(model.parameters(), lr=1e-3)

        def train_step(xb: Any, yb: Any) -> None:
            _, g = softmax_cross_entropy(model.forward(xb, training=True), yb)
            model.backward(g)
            opt.step()

        return train_step, model.predict
    import torch

    net = _torch_twin(model, threads)
    topt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def torch_step(xb: Any, yb: Any) -> None:
        topt.zero_grad()
        logits = net(torch.from_numpy(xb))
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(yb)).backward()
        topt.step()

    def torch_predict(x: Any) -> Any:
        net.eval()  # BatchNorm's running statistics, as fashionnet's predict
        with torch.no_grad():
            tx = torch.from_numpy(x)
            parts = [net(tx[i : i + 2048]).argmax(1) for i in range(0, len(tx), 2048)]
        net.train()
        return torch.cat(parts).numpy()

    return torch_step, torch_predict


def _throughput(
    impl: str, threads: int, model: Any, x: Any, y: Any, xt: Any, smoke: bool, batch: int = 128
) -> dict[str, Any]:
    import numpy as np

    from fashionnet.data import iterate_batches

    rng = np.random.default_rng(1)
    conv = any(type(layer).__name__ == "Conv2D" for layer in model.layers)
    steps = 10 if smoke else (150 if conv else 1200)
    batches = [b for _, b in zip(range(steps), iterate_batches(x, y, batch, rng=rng), strict=False)]
    while len(batches) < steps:
        batches += batches[: steps - len(batches)]
    train_step, predict = _steppers(impl, model, threads)

    def infer() -> Any:
        return predict(xt)

    warm = max(2, steps // 10)
    for xb, yb in batches[:warm]:
        train_step(xb, yb)
    t0 = time.perf_counter()
    for xb, yb in batches[warm:]:
        train_step(xb, yb)
    seconds = time.perf_counter() - t0
    infer()
    times = []
    for _ in range(3 if smoke or conv else 10):
        t0 = time.perf_counter()
        infer()
        times.append(time.perf_counter() - t0)
    return {
        "train_samples_per_s": batch * (steps - warm) / seconds,
        "infer_ms": 1e3 * min(times),
        "infer_images": len(xt),
    }


def small_cnn(rng: Any) -> Any:
    """conv32-pool-conv64-pool-fc128 (ReLU after each), the issue's PyTorch reference network."""
    from fashionnet.layers import Conv2D, Flatten, Linear, MaxPool2D, ReLU, Reshape
    from fashionnet.model import Sequential

    return Sequential([
        Reshape((1, 28, 28)),
        Conv2D(1, 32, 3, padding=1, rng=rng, init="torch"), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 3, padding=1, rng=rng, init="torch"), ReLU(), MaxPool2D(2),
        Flatten(), Linear(3136, 128, rng=rng, init="torch"), ReLU(),
        Linear(128, 10, rng=rng, init="torch"),
    ])  # fmt: skip


def _torch_twin(model: Any, threads: int) -> Any:
    """The same network in PyTorch, with fashionnet's initial weights copied in."""
    import torch

    torch.set_num_threads(threads)
    layers: list[Any] = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Linear":
            bias = layer.bias is not None
            lin = torch.nn.Linear(layer.in_features, layer.out_features, bias=bias)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.weight.data.T.copy()))
                if bias:
                    lin.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
            layers.append(lin)
        elif kind == "BatchNorm":  # over features after a Linear, over channels after a Conv2D
            dense = type(layers[-1]).__name__ == "Linear"
            bn = (torch.nn.BatchNorm1d if dense else torch.nn.BatchNorm2d)(
                layer.num_features, eps=layer.eps, momentum=layer.momentum
            )
            with torch.no_grad():
                bn.weight.copy_(torch.from_numpy(layer.weight.data.copy()))
                bn.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
            layers.append(bn)
        elif kind == "Conv2D":
            conv = torch.nn.Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size,
                stride=layer.stride, padding=layer.padding,
            )  # fmt: skip
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(layer.weight.data.copy()))
                conv.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
            layers.append(conv)
        elif kind == "MaxPool2D":
            layers.append(torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding))
        elif kind == "Reshape":
            layers.append(torch.nn.Unflatten(1, layer.shape))
        elif kind in ("ReLU", "Flatten"):
            layers.append(getattr(torch.nn, kind)())
        elif kind == "Dropout":  # the same work; its own masks (its own random generator)
            layers.append(torch.nn.Dropout(layer.p))
        else:
            raise ValueError(f"no torch twin for {kind}")
    return torch.nn.Sequential(*layers)


def worker_cnn_throughput(impl: str, threads: int, smoke: bool) -> dict[str, Any]:
    """Training samples/s (forward + backward + Adam step) and inference time of the small CNN,
    batch 128, float32, the same initial weights in both."""
    import numpy as np

    x, y, xt, _ = _data(smoke)
    return _throughput(impl, threads, small_cnn(np.random.default_rng(0)), x, y, xt, smoke)


CNN_EPOCHS = 3
ADAM_EPOCHS = 10


def worker_cnn_accuracy(impl: str, threads: int, smoke: bool) -> dict[str, Any]:
    """The small CNN trained in both, same initial weights, data order, Adam (lr 1e-3) and
    batch 128: test accuracy and training seconds after each epoch."""
    import numpy as np

    x, y, xt, yt = _data(smoke)
    train_step, predict = _steppers(impl, small_cnn(np.random.default_rng(0)), threads)
    return {
        "curve": [
            (round(elapsed, 2), float((predict(xt) == yt).mean()))
            for elapsed in _timed_epochs(train_step, x, y, 1 if smoke else CNN_EPOCHS)
        ]
    }


def _timed_epochs(train_step: Any, x: Any, y: Any, epochs: int) -> Any:
    """Train `epochs` passes in batches of 128 (the same data order for every implementation);
    after each, yield the training seconds so far."""
    import numpy as np

    from fashionnet.data import iterate_batches

    order, elapsed = np.random.default_rng(1), 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        for xb, yb in iterate_batches(x, y, 128, rng=order):
            train_step(xb, yb)
        elapsed += time.perf_counter() - t0
        yield elapsed


def worker_time_to_accuracy(impl: str, threads: int, smoke: bool) -> dict[str, Any]:
    """Training seconds (evaluation excluded) until test accuracy first reaches each target."""
    import numpy as np

    x, y, xt, yt = _data(smoke)
    targets = (0.76, 0.85, 0.88)
    reached: dict[str, float | None] = {str(t): None for t in targets}
    elapsed, curve = 0.0, []

    def record(acc: float) -> None:
        curve.append((round(elapsed, 3), acc))
        for t in targets:
            if reached[str(t)] is None and acc >= t:
                reached[str(t)] = elapsed

    if impl in ("fashionnet-mlp", "fashionnet-seed"):
        from fashionnet.augment import make_augment
        from fashionnet.config import preset, replace
        from fashionnet.runs import build_training
        from fashionnet.train import evaluate, fit

        config = preset(impl.split("-")[1])
        if smoke:
            config = replace(config, epochs=2)
        rng = np.random.default_rng(0)
        model, opt, schedule = build_training(config, 784, 10, len(x), rng)
        augment = make_augment(
            {"flip": config.flip, "shift": config.shift, "erase": config.erase}, (28, 28)
        )
        for _ in range(config.epochs):
            t0 = time.perf_counter()
            fit(model, opt, (x, y), epochs=1, batch_size=config.batch_size, rng=rng,
                schedule=schedule, label_smoothing=config.label_smoothing, augment=augment,
                progress=False)  # fmt: skip
            elapsed += time.perf_counter() - t0
            record(evaluate(model, xt, yt)[1])
    elif impl in ("fashionnet-adam", "torch-adam"):
        # the same recipe in both (PyTorch's usual one): the benchmark MLP with PyTorch's init
        # and the same initial weights, Adam (lr 1e-3), batch 128, the same data order
        from fashionnet.model import mlp

        model = mlp(784, [256, 128], 10, rng=np.random.default_rng(0), init="torch")
        train_step, predict = _steppers(impl.split("-")[0], model, threads)
        for seconds in _timed_epochs(train_step, x, y, 2 if smoke else ADAM_EPOCHS):
            elapsed = seconds  # read by record()
            record(float((predict(xt) == yt).mean()))
    elif impl == "notebook":
        # The notebook's algorithm: 784-10-10 ReLU/softmax, U(-0.5, 0.5) init, full-batch
        # float64 gradient descent with step 0.1 (gradients written correctly here).
        rng = np.random.default_rng(0)
        xs, ys = x.T.astype(np.float64), y
        w1, b1 = rng.random((10, 784)) - 0.5, rng.random((10, 1)) - 0.5
        w2, b2 = rng.random((10, 10)) - 0.5, rng.random((10, 1)) - 0.5
        onehot = np.eye(10)[ys].T
        iters = 5 if smoke else 3000
        for i in range(iters):
            t0 = time.perf_counter()
            z1 = w1 @ xs + b1
            a1 = np.maximum(z1, 0)
            z2 = w2 @ a1 + b2
            e = np.exp(z2 - z2.max(axis=0))
            a2 = e / e.sum(axis=0)
            dz2 = (a2 - onehot) / len(ys)
            dz1 = (w2.T @ dz2) * (z1 > 0)
            w2 -= 0.1 * dz2 @ a1.T
            b2 -= 0.1 * dz2.sum(axis=1, keepdims=True)
            w1 -= 0.1 * dz1 @ xs.T
            b1 -= 0.1 * dz1.sum(axis=1, keepdims=True)
            elapsed += time.perf_counter() - t0
            if i % 50 == 49 or i == iters - 1:
                h = np.maximum(w1 @ xt.T.astype(np.float64) + b1, 0)
                record(float(((w2 @ h + b2).argmax(axis=0) == yt).mean()))
            if reached["0.76"] is not None:
                break
    elif impl == "sklearn":
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier((256, 128), batch_size=128, learning_rate_init=1e-3, random_state=0)
        for _ in range(2 if smoke else 15):
            t0 = time.perf_counter()
            clf.partial_fit(x, y, classes=np.arange(10))
            elapsed += time.perf_counter() - t0
            record(float((clf.predict(xt) == yt).mean()))
    else:
        raise ValueError(impl)
    return {"seconds_to": reached, "final_accuracy": curve[-1][1], "train_seconds": elapsed,
            "curve": curve}  # fmt: skip


def worker_load(impl: str, threads: int, smoke: bool) -> dict[str, Any]:
    """Seconds to read the training set: fashionnet's IDX and CSV readers, pandas on the CSV."""
    from fashionnet.data import SYSTEM_DATA_DIR, read_csv, read_idx

    csv = bench_csv(smoke)
    # csv: a first load into an empty cache (parse + store); csv-cached: the load after it
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="fashionnet-bench-cache-")
    if impl == "csv-cached":
        read_csv(csv)
    t0 = time.perf_counter()
    if impl == "idx":
        n = len(read_idx(SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz"))
        read_idx(SYSTEM_DATA_DIR / "train-labels-idx1-ubyte.gz")
    elif impl in ("csv", "csv-cached"):
        n = len(read_csv(csv))
    elif impl == "pandas-csv":
        import pandas as pd

        n = len(pd.read_csv(csv).to_numpy(dtype="uint8"))
    else:
        raise ValueError(impl)
    seconds = time.perf_counter() - t0
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)
    return {"seconds": seconds, "rows": n}


SECTIONS = ("mlp", "cnn", "accuracy", "load", "profile")
# the kernel this project's CI environment forces through OPENBLAS_CORETYPE (users' machines
# do not): the MLP tables are measured with OpenBLAS's own choice and with this one
FORCED_CORETYPE = "Haswell"
PROFILES = {  # name: (profile_step.py arguments, threads)
    "benchmark MLP": (["--hidden", "256,128"], 2),
    "default preset": (["--hidden", "1024,512", "--dropout", "0.065", "--batch-norm",
                        "--batch-size", "256"], 2),
    "small CNN, 1 thread": (["--cnn", "--repeats", "30"], 1),
    "small CNN, 2 threads": (["--cnn", "--repeats", "30"], 2),
    "cnn preset, 2 threads": (["--preset", "cnn", "--repeats", "30"], 2),
}  # fmt: skip

WORKERS = {
    "mlp_throughput": worker_mlp_throughput,
    "cnn_throughput": worker_cnn_throughput,
    "cnn_accuracy": worker_cnn_accuracy,
    "time_to_accuracy": worker_time_to_accuracy,
    "mlp_default_throughput": worker_mlp_default_throughput,
    "load": worker_load,
}


def run_worker(args: argparse.Namespace) -> None:
    print(json.dumps(_measure(args.worker, args.impl, args.threads, args.smoke)))


def _measure(worker: str, impl: str, threads: int, smoke: bool) -> dict[str, Any]:
    result = WORKERS[worker](impl, threads, smoke)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result |= blas_kernel()
    if impl.startswith("fashionnet"):
        from fashionnet import threads as fashionnet_threads

        result["fashionnet_threads"] = fashionnet_threads.count()
    return result


def blas_kernel() -> dict[str, Any]:
    """The kernel family NumPy's OpenBLAS chose (or was told by OPENBLAS_CORETYPE) and its
    thread count, as threadpoolctl reads them from the loaded library."""
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl reads)
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    if not blas:
        return {}
    return {"blas_kernel": blas[0].get("architecture"), "blas_threads": blas[0]["num_threads"],
            "blas_coretype_env": os.environ.get("OPENBLAS_CORETYPE")}  # fmt: skip


# --------------------------------------------------------------------------- driver


def spawn(
    worker: str, impl: str, threads: int, smoke: bool, coretype: str | None = None
) -> dict[str, Any]:
    """One worker's result, measured in a fresh process with the thread count fixed, and the
    OpenBLAS kernel either the library's own choice for this CPU (what users get) or the one
    `coretype` forces. A smoke run measures nothing, so its workers run in this process
    (PyTorch imported once, not once per worker: 3 s each here) and only their code is
    exercised."""
    if smoke:
        return json.loads(json.dumps(_measure(worker, impl, threads, smoke)))  # as if printed
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.pop("FASHIONNET_THREADS", None)  # fashionnet's threads follow the BLAS count
    env.pop("OPENBLAS_CORETYPE", None)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    cmd = [sys.executable, __file__, "--worker", worker, "--impl", impl, "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{worker}/{impl} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def alternate(
    worker: str, impls: list[str], threads: int, repeats: int, smoke: bool,
    coretype: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run impls in turn, `repeats` rounds; every run recorded, the median reported."""
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
    for _ in range(repeats):
        for impl in impls:
            runs[impl].append(spawn(worker, impl, threads, smoke, coretype))
    return runs


def median_of(runs: list[dict[str, Any]], key: str) -> tuple[float, float, float]:
    values = [r[key] for r in runs]
    return statistics.median(values), min(values), max(values)


def machine() -> dict[str, Any]:
    import numpy as np

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        model = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        info["cpu"] = model[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]  # type: ignore[index]
        info["numpy_blas"] = f"{blas['name']} {blas['version']}"
    except Exception:
        pass
    return info | blas_kernel()


def bench_csv(smoke: bool) -> Path:
    """The Kaggle-style CSV the loading benchmark reads (written once by ensure_csv)."""
    default = Path(tempfile.gettempdir()) / f"fashionnet-bench-train-{200 if smoke else 60000}.csv"
    return Path(os.environ.get("FASHIONNET_BENCH_CSV", default))


def ensure_csv(smoke: bool) -> None:
    """Write the training set as a Kaggle-style CSV once, for the loading benchmark."""
    import numpy as np

    from fashionnet.data import SYSTEM_DATA_DIR, read_idx

    path = bench_csv(smoke)
    if path.exists():
        return
    images = read_idx(SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").reshape(-1, 784)
    labels = read_idx(SYSTEM_DATA_DIR / "train-labels-idx1-ubyte.gz")
    if smoke:
        images, labels = images[:200], labels[:200]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("label," + ",".join(f"pixel{i}" for i in range(1, 785)) + "\n")
        np.savetxt(f, np.column_stack([labels, images]), fmt="%d", delimiter=",")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--impl")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds not minutes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="run only these sections")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite BENCHMARKS.md from the saved results "
                        "(results.json, serve_results.json)")  # fmt: skip
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    # the kernel OpenBLAS chooses for this CPU, as users get it, for the machine's description
    # and the profile (before NumPy is loaded: OpenBLAS reads it then); spawn forces one per run
    os.environ.pop("OPENBLAS_CORETYPE", None)
    if args.render:
        (ROOT / "BENCHMARKS.md").write_text(render(json.loads(args.out.read_text())))
        return
    repeats = 1 if args.smoke else args.repeats
    have = {m: _importable(m) for m in ("torch", "sklearn", "pandas")}
    command = " ".join(["python", "benchmarks/run.py", *sys.argv[1:]])
    date = time.strftime("%Y-%m-%d %H:%M")
    results: dict[str, Any]
    if args.only and args.out.exists():  # rerun some sections, keep the others
        results = json.loads(args.out.read_text())
        results.setdefault("updates", []).append(
            {"sections": args.only, "command": command, "date": date, "load": os.getloadavg(),
             "machine": machine()}
        )  # fmt: skip
    else:
        results = {"command": command, "date": date, "machine": machine(), "smoke": args.smoke}
    sections = set(args.only or SECTIONS)
    if "mlp" in sections:
        impls = ["fashionnet"] + (["torch"] if have["torch"] else [])
        # the kernel OpenBLAS picks for this CPU (users' case), then the one CI machines force
        for worker, coretype in itertools.product(
            ("mlp_throughput", "mlp_default_throughput"), (None, FORCED_CORETYPE)
        ):
            results[worker + (f"@{coretype}" if coretype else "")] = {
                str(t): alternate(worker, impls, t, repeats, args.smoke, coretype)
                for t in ((1,) if args.smoke else (1, 2))
            }
    if "cnn" in sections:
        impls = ["fashionnet"] + (["torch"] if have["torch"] else [])
        results["cnn_throughput"] = {
            str(t): alternate("cnn_throughput", impls, t, repeats, args.smoke)
            for t in ((1,) if args.smoke else (1, 2))
        }
        results["cnn_accuracy"] = alternate("cnn_accuracy", impls, 2, 1, args.smoke)
    if "accuracy" in sections:
        # the notebook's run takes minutes and varies little: once; the others `repeats` times
        impls = ["fashionnet-mlp", "fashionnet-seed", "fashionnet-adam"]
        impls += ["torch-adam"] if have["torch"] else []
        impls += ["sklearn"] if have["sklearn"] else []
        results["time_to_accuracy"] = alternate("time_to_accuracy", impls, 2, repeats, args.smoke)
        results["time_to_accuracy"] |= alternate("time_to_accuracy", ["notebook"], 2, 1, args.smoke)
    if "load" in sections:
        from fashionnet.data import SYSTEM_DATA_DIR

        if SYSTEM_DATA_DIR.is_dir():
            ensure_csv(args.smoke)
            impls = ["idx", "csv", "csv-cached"] + (["pandas-csv"] if have["pandas"] else [])
            results["load"] = alternate("load", impls, 2, repeats, args.smoke)
    if "profile" in sections:
        results["profile"] = {}
        for name, (extra, n) in PROFILES.items():
            env = {**os.environ, "OMP_NUM_THREADS": str(n), "OPENBLAS_NUM_THREADS": str(n)}
            env.pop("FASHIONNET_THREADS", None)
            results["profile"][name] = subprocess.run(
                [sys.executable, str(HERE / "profile_step.py"), "--repeats", "300", *extra,
                 *(["--repeats", "3"] if args.smoke else [])],
                env=env, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
    if not args.only:
        results["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    if not args.smoke:
        (ROOT / "BENCHMARKS.md").write_text(render(results))
    print(f"wrote {args.out}" + ("" if args.smoke else " and BENCHMARKS.md"))


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


THROUGHPUT_TABLES = {
    "mlp_throughput": "MLP 784-256-128-10, Adam, batch 128, float32",
    "mlp_throughput@Haswell": "MLP 784-256-128-10, Adam, batch 128, float32, with "
    "OPENBLAS_CORETYPE=Haswell",
    "mlp_default_throughput": "The default preset's MLP (784-1024-512-10, BatchNorm, dropout), "
    "Adam, batch 256, float32",
    "mlp_default_throughput@Haswell": "The default preset's MLP, Adam, batch 256, float32, with "
    "OPENBLAS_CORETYPE=Haswell",
    "cnn_throughput": "Small CNN (conv32-pool-conv64-pool-fc128), Adam, batch 128, float32",
}


# which tables each of run.py's sections measures
SECTION_TABLES = {
    "mlp": [k for k in THROUGHPUT_TABLES if k.startswith("mlp")],
    "cnn": ["cnn_throughput", "cnn_accuracy"],
    "accuracy": ["time_to_accuracy"],
    "load": ["load"],
    "profile": ["profile"],
}


def measured_by(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Table key -> the run that measured it last (date, command, machine, load average): the
    full run, or a later `--only` rerun of its section, maybe on another machine."""
    m = results["machine"]
    base = {"date": results["date"], "command": results["command"], "machine": m,
            "load": m["load_average_at_start"]}  # fmt: skip
    runs = {section: base for section in SECTIONS}
    for update in results.get("updates", []):
        rerun = {**update, "machine": update.get("machine", m)}  # older ones: the same machine
        runs |= {section: rerun for section in update["sections"]}
    return {key: runs[section] for section, keys in SECTION_TABLES.items() for key in keys}


def where(m: dict[str, Any]) -> str:
    """`AMD EPYC, 2 CPUs, Python 3.11.7, numpy 2.4.6 (OpenBLAS ... choosing its SkylakeX
    kernels, 2 threads), torch 2.13.0+cpu`: the machine a figure was measured on."""
    parts = [m.get("cpu", m.get("processor", "?")), f"{m['cpus']} CPUs"]
    parts += [f"Python {m['python']}"] if "python" in m else []
    if "numpy" in m:
        blas = m.get("numpy_blas", "its BLAS")
        if m.get("blas_kernel"):
            env = m.get("blas_coretype_env")
            how = f"forced to {m['blas_kernel']} by OPENBLAS_CORETYPE" if env else (
                f"choosing its {m['blas_kernel']} kernels")  # fmt: skip
            blas += f" {how}, {m['blas_threads']} threads"
        parts.append(f"numpy {m['numpy']} ({blas})")
    parts += [f"torch {m['torch']}"] if m.get("torch") else []
    return ", ".join(parts)


def on_machine(record: dict[str, Any]) -> str:
    """` on <where>` for a record that names its machine (older ones did not)."""
    return f" on {where(record['machine'])}" if "machine" in record else ""


class _Provenance:
    """The "Measured ..." line of a table, said only when it differs from the previous one's
    (the MLP's four tables come from one run)."""

    def __init__(self, runs: dict[str, dict[str, Any]]) -> None:
        self.runs, self.last = runs, None

    def first(self, key: str) -> list[str]:
        run = self.runs[key]
        if run is self.last:
            return []
        self.last = run
        return [
            f"Measured {run['date']} with `{run['command']}` on {where(run['machine'])}; load "
            f"average {run['load'][0]:.2f} at the start.",
            "",
        ]


def render(results: dict[str, Any]) -> str:
    said = _Provenance(measured_by(results))
    lines = [
        "# Benchmarks",
        "",
        "Each section names the command that measured it, when, and on which machine: "
        "`python benchmarks/run.py` measures the sections up to \"Where a training step's time "
        'goes" (`--only mlp cnn accuracy load profile` reruns some of them) and rewrites this '
        "file; benchmarks/serve_load.py, sweep_scaling.py and finetune.py measure the sections "
        "after it, and `python benchmarks/run.py --render` redraws the file from the saved "
        "results. Machines differ in speed by 2-3x: compare figures within a table.",
        "",
        "Every figure is the median of the runs (min-max in brackets); implementations alternate "
        "run by run in fresh processes with the thread count fixed for BLAS and PyTorch. A "
        "ratio is the median of the rounds' ratios (each run against PyTorch's run of the same "
        "round). Each throughput row names NumPy's OpenBLAS kernel (threadpoolctl) and the "
        "thread count: the kernel OpenBLAS chooses for the CPU, as users get it, and in the "
        "MLP's second tables the Haswell kernels that `OPENBLAS_CORETYPE=Haswell` forces (as "
        "the project's CI machines do); fashionnet's own threads (a CNN's batch split into "
        "parts, fashionnet/threads.py) follow the BLAS thread count.",
        "",
    ]
    for key, title in THROUGHPUT_TABLES.items():
        if key not in results:
            continue
        lines += [
            f"## {title}",
            "",
            *said.first(key),
            "| threads | impl | NumPy's BLAS kernel | train samples/s | inference, 10,000 images "
            "| peak RSS | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for threads, runs in results[key].items():
            for impl, rs in runs.items():
                med, lo, hi = median_of(rs, "train_samples_per_s")
                inf = median_of(rs, "infer_ms")[0]
                rss = median_of(rs, "peak_rss_mb")[0]
                ratio = _ratio(rs, runs["torch"]) if "torch" in runs and impl != "torch" else ""
                kernel = _kernel(rs[0]) if impl != "torch" else "(oneDNN / MKL)"
                lines.append(
                    f"| {threads} | {impl} | {kernel} | {med:,.0f} [{lo:,.0f}-{hi:,.0f}] | "
                    f"{inf:.1f} ms | {rss:.0f} MB | {ratio} |"
                )
        lines.append("")
    if "cnn_accuracy" in results:
        lines += [
            "## Small CNN: test accuracy after each epoch (training seconds, 2 threads)",
            "",
            *said.first("cnn_accuracy"),
            "Same initial weights, data order, Adam (lr 1e-3) and batch 128 in both.",
            "",
            "| impl | " + " | ".join(f"epoch {i + 1}" for i in range(CNN_EPOCHS)) + " |",
            "|---|" + "---|" * CNN_EPOCHS,
        ]
        for impl, rs in results["cnn_accuracy"].items():
            cells = [f"{acc:.4f} ({sec:.0f} s)" for sec, acc in rs[0]["curve"]]
            lines.append(f"| {impl} | " + " | ".join(cells) + " |")
        lines.append("")
    if "time_to_accuracy" in results:
        lines += [
            "## Time to test accuracy (training seconds, evaluation excluded, 2 threads)",
            "",
            *said.first("time_to_accuracy"),
            "Test accuracy measured after every epoch (every 50 iterations for the notebook's "
            "full-batch descent); the default preset (`fashionnet-mlp`) and the `seed` preset as "
            "`fashionnet train` runs them, on all 60,000 training images; `fashionnet-adam` and "
            "`torch-adam`: the 784-256-128-10 MLP from the same initial weights, Adam (lr 1e-3), "
            "batch 128, the same data order, 10 epochs.",
            "",
            "| impl | runs | to 76% | to 85% | to 88% | final accuracy | training seconds | "
            "peak RSS |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for impl, rs in results["time_to_accuracy"].items():
            cells = [_reached(rs, t) for t in ("0.76", "0.85", "0.88")]
            acc, lo, hi = median_of(rs, "final_accuracy")
            final = f"{acc:.4f}" + (f" [{lo:.4f}-{hi:.4f}]" if len(rs) > 1 else "")
            lines.append(
                f"| {impl} | {len(rs)} | {' | '.join(cells)} | {final} | "
                f"{median_of(rs, 'train_seconds')[0]:.1f} | "
                f"{median_of(rs, 'peak_rss_mb')[0]:.0f} MB |"
            )
        lines.append("")
    if "load" in results:
        lines += [
            "## Loading the 60,000 training images",
            "",
            *said.first("load"),
            "| reader | seconds | peak RSS |",
            "|---|---|---|",
        ]
        for impl, rs in results["load"].items():
            med, lo, hi = median_of(rs, "seconds")
            rss = median_of(rs, "peak_rss_mb")[0]
            lines.append(f"| {impl} | {med:.2f} [{lo:.2f}-{hi:.2f}] | {rss:.0f} MB |")
        lines.append("")
    if "profile" in results:
        lines += ["## Where a training step's time goes", "", *said.first("profile")]
        for name, table in results["profile"].items():
            lines += [f"{name}: {table.strip()}", ""]
        lines += [OPTIMISATIONS, ""]
    serving = HERE / "serve_results.json"
    if serving.exists():
        lines += render_serving(json.loads(serving.read_text()))
    sweeping = HERE / "sweep_results.json"
    if sweeping.exists():
        lines += render_sweep(json.loads(sweeping.read_text()))
    tuning = HERE / "finetune_results.json"
    if tuning.exists():
        lines += render_finetune(json.loads(tuning.read_text()))
    return "\n".join(lines)


def render_finetune(saved: dict[str, Any]) -> list[str]:
    """The section benchmarks/finetune.py measures: fine-tuning against training from scratch."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune", HERE / "finetune.py")
    assert spec is not None and spec.loader is not None
    finetune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(finetune)
    lines = [
        "## Fine-tuning (`train --from-model`) against training from scratch",
        "",
        "Test accuracy, median of the seeds [min-max]; both arms the same recipe and the same "
        "images (benchmarks/finetune.py says how the scenarios are made).",
        "",
    ]
    for r in saved.values():
        tuned = f"; fine-tuned runs also {' '.join(r['tuned'])}" if r["tuned"] else ""
        lines += [
            f"{r['scenario']}, {r['preset']}: measured {r['date']} with `{r['command']}`"
            f"{on_machine(r)}; the "
            f"model started from: test accuracy {r['source']['test_accuracy']:.4f} on its own "
            f"test set; {r['epochs']} epochs of batch {r['batch_size']}, "
            f"{len(r['rows'][0]['scratch'])} seeds{tuned}.",
            "",
            finetune.table(r["preset"], r["rows"]),
            "",
        ]
    return lines


def render_sweep(r: dict[str, Any]) -> list[str]:
    """The section benchmarks/sweep_scaling.py measures: trials per hour."""
    lines = [
        "## fashionnet sweep: trials per hour",
        "",
        f"Measured {r['date']} with `{r['command']}`{on_machine(r)}: {r['trials']} trials of "
        f"the default MLP recipe shortened to {r['epochs']} epochs on {r['limit']:,} images, no "
        "pruning, the sweep command timed end to end (starting, every trial, testing the chosen "
        "one). Each worker runs one BLAS thread.",
        "",
        "| workers | seconds | trials per hour | against 1 worker |",
        "|---|---:|---:|---:|",
    ]
    for name, row in r["rows"].items():
        lines.append(f"| {name} | {row['seconds']:.1f} | {row['trials_per_hour']:,.0f} | "
                     f"{row['speedup']:.2f}x |")  # fmt: skip
    return [*lines, ""]


def render_serving(r: dict[str, Any]) -> list[str]:
    """The section benchmarks/serve_load.py measures: fashionnet serve under load."""
    mixed = r["mixed"]
    lines = [
        "## fashionnet serve",
        "",
        f"Measured {r['date']} with `{r['command']}`{on_machine(r)}, server and client on "
        "that machine (loopback). Both servers run 2 uvicorn workers; `fashionnet serve` gives "
        "each worker one BLAS thread (its default `--threads 1`).",
        "",
        f"Mixed load: {mixed['requests']:,} requests at concurrency 32 from an asyncio client, "
        f"{mixed['malformed']} of them malformed: {mixed['malformed_4xx']} answered 4xx, "
        f"{mixed['good_200_cli_class']:,} of {mixed['good']:,} good ones 200 with the class "
        f"`fashionnet predict` gives, {mixed['any_5xx']} responses 5xx, in "
        f"{mixed['seconds']:.1f} s. Server RSS (all processes) {mixed['rss_mib_after_1000']:.1f}"
        f" MiB after 1,000 requests, {mixed['rss_mib_at_end']:.1f} MiB at the end.",
        "",
        "Throughput with `ab -n N -c 32 -p 28x28.png -T image/png` (median of the rounds, "
        "contenders alternating, a fresh server each round):",
        "",
        "| model | server | requests/s | p50 | p99 | rounds |",
        "|---|---|---:|---:|---:|---|",
    ]
    models = r.get("models", {})
    if models:
        lines[4:4] = [f"Models: MLP {models['mlp']}; CNN {models['cnn']} (speed does not depend "
                      "on how long it trained).", ""]  # fmt: skip
    for model, key in (("default MLP", "mlp"), ("cnn preset", "cnn")):
        for name, v in r[key].items():
            rounds = ", ".join(f"{x['rps']:,.0f}" for x in v["rounds"])
            lines.append(f"| {model} | {name} | {v['rps']:,.0f} | {v['p50_ms']:.0f} ms | "
                         f"{v['p99_ms']:.0f} ms | {rounds} |")  # fmt: skip
    lines.append("")
    cnn, views = r["cnn"], "its 10 views" if "10 views" in models.get("cnn", "") else "its views"
    for suffix, key, through in (
        ("", "cnn_forward_ms_per_image", views),
        (", --tta flip", "cnn_flip_forward_ms_per_image", "2 views"),
    ):
        cost, on, off = (
            r.get(key),
            cnn.get(f"batching on{suffix}"),
            cnn.get(f"batching off{suffix}"),
        )
        if cost and on and off:
            lines += [
                f"Through {through}, batching multiplies the cnn model's throughput by "
                f"{on['rps'] / off['rps']:.2f}. Its forward pass alone (one BLAS thread) takes "
                f"{cost['1']:.2f} ms for one image and {cost['64']:.2f} ms per image in a batch "
                f"of 64, so the model's own arithmetic gains {cost['1'] / cost['64']:.2f}x from "
                "batching: more than that needs batched convolutions that cost less per image.",
                "",
            ]
    lines += _batching_bound(r)
    if "batching on, --tta flip" in cnn:
        lines += [
            "Each request's image already goes through as a batch of its views, so batching "
            "has less to gather with 10. `--tta flip` serves the same weights through 2 views, "
            "for 0.1 points less test accuracy on the preset's model (README, docs/presets.md).",
            "",
        ]
    return lines


def _batching_bound(r: dict[str, Any]) -> list[str]:
    """Why 3x from batching is out of this machine's reach for the cnn model: what the server
    costs per request with a nearly free model, and what is left of a core for the arithmetic."""
    a, serve = r.get("cnn_arithmetic"), r["mlp"].get("fashionnet serve")
    off, off2 = r["cnn"].get("batching off"), r["cnn"].get("batching off, --tta flip")
    if not (a and serve and off and off2):
        return []
    cores = r["machine"]["cpus"]
    per_request = cores / serve["rps"] * 1000  # ms of a core, server and client, the MLP's pass
    text = (
        f"What 3x from batching would take: the same server with the default MLP, whose forward "
        f"pass costs next to nothing, answers {serve['rps']:,.0f} requests/s, {per_request:.2f} "
        "ms of a core per request (HTTP, PNG decoding, the photo pipeline, JSON, the load "
        "generator) before any model arithmetic."
    )
    for views, rps in ((a["views"], off["rps"]), (2, off2["rps"])):
        budget = cores / (3 * rps) * 1000 - per_request
        mflop = a["mflop_per_view"] * views
        text += f" Through {views} views, 3 x {rps:,.0f} = {3 * rps:,.0f} requests/s "
        if budget <= 0:
            text += "is more than that server answers with no model to speak of."
            continue
        text += (f"leaves {budget:.2f} ms of a core per image for the model's {mflop:.0f} MFLOP "
                 f"({views} views x {a['mflop_per_view']:.1f}, its convolutions and dense "
                 f"layers): {mflop / budget:,.0f} GFLOP/s on one core, where this machine's "
                 f"float32 matrix product peaks at {a['matmul_gflops_one_core']:.0f} (2048x2048, "
                 "one thread).")  # fmt: skip
    return [text, ""]


def _kernel(run: dict[str, Any]) -> str:
    """`SkylakeX, 2 threads` (`Haswell (forced), ...` when OPENBLAS_CORETYPE chose it)."""
    if "blas_kernel" not in run:
        return "?"
    forced = " (forced)" if run.get("blas_coretype_env") else ""
    threads = run.get("fashionnet_threads", run["blas_threads"])
    return f"{run['blas_kernel']}{forced}, {threads} thread{'s' * (threads > 1)}"


def _ratio(runs: list[dict[str, Any]], torch_runs: list[dict[str, Any]]) -> str:
    """Median [min-max] of the per-round throughput ratios: each run against the PyTorch run
    of the same round, minutes apart at most, so a slow spell of the machine cancels out."""
    key = "train_samples_per_s"
    ratios = [a[key] / b[key] for a, b in zip(runs, torch_runs, strict=True)]
    spread = f" [{min(ratios):.2f}-{max(ratios):.2f}]" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}x PyTorch{spread}"


def _reached(runs: list[dict[str, Any]], target: str) -> str:
    """Median seconds to `target` [min-max], or how many runs never reached it."""
    times = [r["seconds_to"][target] for r in runs if r["seconds_to"][target] is not None]
    if not times:
        return "-"
    med = statistics.median(times)
    if len(times) < len(runs):
        return f"{med:.1f} s in {len(times)} of {len(runs)} runs"
    return f"{med:.1f} s" + (f" [{min(times):.1f}-{max(times):.1f}]" if len(times) > 1 else "")


OPTIMISATIONS = """What changed the profile, each measured with `benchmarks/profile_step.py` or a
micro-benchmark of the part before and after on the same machine in the same session (the
project's 2-core machines have been AMD EPYCs and Intel Xeons, so figures of different items
may come from different machines):

- Adam over one flat buffer in ten in-place passes, its `(1 - beta)` factors folded into the step
  size and epsilon: 0.61 -> 0.50 ms per step for the 235k-parameter MLP (a per-parameter Adam is
  about half of a NumPy step).
- Dropout masks from 16 raw bits per unit (`bit_generator.random_raw`) instead of `rng.random`:
  0.38 -> 0.07 ms for a 128x512 activation. Since replaced: those masks kept units with a
  probability rounded to 1/65536 and scaled by its inverse (p = 0.99: 100.055, not 100). Masks
  are now `rng.random(shape) < 1 - p` (float64 draws, exact to 2^-53, scale 1 / (1 - p) as in
  PyTorch); a 256x256 mask measured in one micro-benchmark on the 2-core machine (2026-12-01):
  16 raw bits 0.106 ms, 32 raw bits 0.155 ms, float32 draws 0.193 ms, float64 draws 0.137 ms.
- Inference in batches of 2048 images (`fashionnet.model.INFERENCE_BATCH`): activations stay in
  cache and under glibc's mmap threshold; the 10,000 test images through 784-256-128-10 in
  37 ms, against 53 ms in batches of 8192.
- The fast CSV parser in 256 KiB blocks of rows (`CSV_BLOCK_BYTES`): 60,000 Kaggle rows on one
  thread in 0.5-1.5 s, against 4.3 s in one piece.
- Mirroring by copying only the flipped images: 0.34 -> 0.10 ms per batch; shifting through a
  zero-padded strided view instead of `np.pad` and fancy indexing: 1.6 -> 0.38 ms.
- glibc told to keep freed memory (`mallopt`, see `fashionnet.train.keep_freed_memory`): the
  same-size temporaries of every step stopped page-faulting back in; a BatchNorm layer's forward
  pass went from 0.46 to 0.19 ms, a 784-256-128-10 epoch from about 1.3 to 1.1 s.
- The first layer's input gradient is never computed (nothing below it learns), as PyTorch's
  autograd also skips it: a third of the first layer's backward matrix work.
The CNN (the small CNN at batch 128, 2 threads: 220 ms per step with NCHW im2col and one GEMM
per image, 108-120 ms after these):

- Channels-last memory behind NCHW shapes, im2col of k*C contiguous values per kernel row, in
  chunks of 2 MiB so the columns are multiplied while still in cache: a 32-to-32-channel 3x3
  convolution of 128 28x28 images, forward + backward, 283 ms in one piece -> 124 ms (chunks of
  0.5, 1, 3, 4 and 8 MiB were all slower).
- 2x2 max-pool as the larger of horizontal, then vertical pairs over whole rows (no masked
  copies): 33.6 -> 7.3 ms forward on 128x32x28x28.
- BatchNorm on (N, H*W*C) rows with per-channel vectors tiled, not on (N*H*W, C) rows of 32
  values: 16.8 -> 8.6 ms forward, 16.6 -> 9.5 ms backward on 128x32x28x28.
- One-channel input: im2col as one row per kernel position (28-value runs instead of 3):
  first convolution 6.4 -> 4.4 ms forward, 10.9 -> 6.7 ms backward.

On every core (2026-12-01, the Intel machine of the tables above; `profile_step.py --cnn`, each
part timed inside real steps, before: commit 641b5dd, 74.8 ms per step on 1 thread and 60.8 ms on
2; after: 68.8 ms and 42.8 ms):

- Before, a step on 2 threads spent 33 ms in the two convolutions (their matrix products on both
  cores) and 24 ms in ReLU, pooling, the first convolution's im2col and flattening, on one core.
  Each layer now splits its batch into a part per thread (fashionnet/threads.py); the BLAS is held
  at one thread meanwhile (two callers each asking it for both cores measured 124 ms against
  105 ms for 400 products of 2048x288 by 288x64). Layers 0-7 (reshape to pooling) forward on 2
  threads 20.2 -> 13.6 ms, backward 36.8 -> 24.1 ms.
- Bias and BatchNorm sums down a tall array's columns as `ones @ a`: NumPy's `sum(axis=0)` took
  0.96 ms for 50,176 x 32, the BLAS 0.23 ms (half the rounding error, too); the first
  convolution's backward 5.1 -> 3.5 ms on one thread.
- Per-image layers around a convolution run depth first (model/stretch.py), a chunk of images
  through all of them: 69.6 -> 66.8 ms per step on 1 thread, 45.3 -> 42.6 ms on 2 (alternating
  runs of 40 steps). Chunks of 0.5, 1, 4 and 16 MiB of the largest activation: 69.3, 69.6, 68.0,
  76.9 ms on 1 thread, 58.1, 53.9, 45.8, 42.3 ms on 2 (the small ones lose to the GIL: each
  chunk is a dozen NumPy calls, and their Python glue runs one thread at a time): 4 MiB.
  Inference of the 10,000 test images on 2 threads 1,157 -> 1,013 ms.
- Tried and left out: Winograd's F(2x2, 3x3) for the 32-to-64 convolution (2.25x fewer
  multiplies). The 16 products took 0.29 ms for 9 images where im2col's one took 0.46 ms, but
  the input transform took 0.55 ms and the output transform 0.20 ms, against 0.14 ms for im2col:
  short runs of 32 channels per NumPy inner loop. The layer got slower (5.9 -> 10.5 ms forward
  on 2 threads). im2col chunks of 1, 2 and 4 MiB: within 3% (2 MiB kept).
- Where the small CNN stands against PyTorch here: its matrix products are 3.2 GFLOP per step,
  which OpenBLAS runs at 145-150 GFLOP/s per core on these shapes (2048x2048 products: 176), so
  at least 21 ms on 1 thread and 11 ms on 2; PyTorch 2.13 (oneDNN) takes about 58 and 35 ms for
  the whole step. The rest of fashionnet's step is NumPy passes at 5-20 GB/s (a ReLU of a 28x28x32
  image 5-8 us in or out of cache, a 2x2 max-pool 17-22 us): 1.5x PyTorch would leave them 17 ms
  on 1 thread and 12 ms on 2, a third of what they take.

Later the same day (same machine; a rerun of this section's step tables then
found every step 5-9% slower than the figures above: the code of the earlier rerun, ddd360e, and
the current code alternated at 69.4 / 69.9 and 70.0 / 69.2 ms for the small CNN on 1 thread):

- The `cnn` preset's step (the last table, `profile_step.py --preset cnn`): its matrix products
  run at 97-125 GFLOP/s on one core (a chunk of 9 images through the 32-to-64 convolution: the
  forward product 125, the weight gradient 115, the input gradient's nine (rows, 32) products 97);
  the first convolution's, whose K or M is 9, at 40-48 (padding K to 12 or 16 made them no
  faster).
- Tried and left out: numba kernels (an optional compiled dependency): a 2x2 max-pool with int8
  indices 4.6x faster than the NumPy passes (0.20 against 0.95 ms forward, 0.40 against 1.08
  backward, 40 images of 28x28x32), a ReLU backward 1.6x, im2col and col2im no faster (copies at
  memory speed); in the `cnn` preset's step 64.9 / 64.6 -> 60.6 / 61.4 ms on 2 threads, 6%, not
  worth a compiled dependency. The input gradient as one (rows, 9C) product and a col2im reading
  its strided blocks: 13.41 -> 13.56 ms for 128 images at 32 channels, 10.20 -> 9.17 at 64.

2026-12-02, same machine:

- The optimisers' moments lose their subnormal values every 50 steps (fashionnet/optim.py). A
  ReLU unit that dies stops getting gradients, and its moments decay by beta each step into
  float32's subnormal range, where they stay; x86 computes on subnormals many times slower.
  The 784-256-128-10 MLP with Adam on Fashion-MNIST: 4% of m subnormal after 2 epochs and 8%
  after 8, an optimiser step 0.54 -> 2.1 ms, an epoch 0.78 -> 1.59 s; flushed, 0.57-0.64 ms and
  0.81-0.91 s, and the weights bit-identical (the same check with AdamW and SGD with momentum,
  where 28% and 15% of the moments had become subnormal). The MLP table's 1,200 steps crossed
  into that range after about 800: its rows went from 0.98x / 0.78x PyTorch to the ratios above.
  PyTorch's Adam makes the same subnormals (11% of exp_avg after 2 epochs), which slow it less
  (epochs 0.88 -> 1.0-1.16 s); the tables run PyTorch as it comes. With
  `torch.set_flush_denormal(True)`, in one alternating measurement of two rounds: fashionnet
  71.0k / 68.0k samples/s on 1 thread, PyTorch 49.0k / 51.4k as it comes and 54.8k / 59.7k
  flushing; on 2 threads 86.5k / 84.0k against 71.9k / 75.9k and 73.3k / 79.8k.
- Tried and left out: AdamW's ten passes run chunk by chunk (128k values of every array at a
  time) and in a part per thread. Alone, over the default preset's 1.3M parameters with its
  arrays in cache: 3.39 -> 2.44 ms on one thread, 1.75 in two parts. Inside real steps
  (`profile_step.py --preset mlp`, alternated, 200-300 steps each) the optimiser took 4.0-4.7 ms
  before and after on 2 threads, 4.5-4.7 against 5.2 on one: between a step's matrix products
  the arrays have left the cache, and the second part shares its core with the BLAS's own
  thread. A dense network's batch split into a part per thread, as a CNN's is: the default
  preset's step 15.7-17.3 -> 21.7-23.5 ms on 2 threads (the BLAS splits its products better).
- A ReLU that feeds a max-pool runs after it (model/stretch.py, `run_order`): relu(max) equals
  max(relu) exactly, and both orders send a window's gradient to the same input, so outputs and
  gradients are unchanged (the small CNN's accuracy table is the same to the last digit) while
  the ReLU's two passes cover a quarter of the values. The small CNN's step, alternating rounds
  of 20 steps in one run: 80 -> 74 ms on 1 thread, 50 -> 46 ms on 2; inference of 10,000 images
  1.85 -> 1.69 s on 1 thread, 1.07 -> 1.02 s on 2. Against PyTorch (the small CNN's table, rerun
  after it, on a slower phase of the machine): 0.94x -> 1.01x on 1 thread, 0.80x -> 0.83x on 2.
  The presets' networks already pool before their BatchNorm and ReLU. The step tables above
  were rerun after this change, in a slower phase of the machine: the benchmark MLP's step, code
  unchanged, took 1.81 ms there (1.72-1.82 in three runs just after) against 1.49 the day
  before, and the `cnn` preset's 137 ms against 121; compare parts within one table.
- Why the second thread adds less to fashionnet's step (1.51x) than to PyTorch's (1.84x): two
  threads doing independent work with nothing shared (the 32-to-64 convolution's backward of 40
  images, or a max-pool's backward, a copy of the layer per thread) ran 1.44-1.77x as fast as one
  on this machine (2 virtual cores), so the split itself is not what holds the step back.
- Looked at and left as they are: OpenBLAS's idle thread spins after a call on two threads (107
  ms of CPU during a 200 ms sleep after one product; 1 ms with `OPENBLAS_THREAD_TIMEOUT=4`), but
  it yields to the step's own threads: the small CNN's step on 2 threads took 48.7 / 52.3 ms as
  it comes and 50.3 / 52.6 and 50.0 / 51.4 ms with the timeout at 4 and 10. The 32-to-64
  convolution's products with the weight stored transposed, and the columns transposed: 114-124
  GFLOP/s against 118-122 (five rounds each, one core). That convolution's backward for 40
  images, by part: rebuilding the columns 1.0 ms, the weight gradient's product 2.9, the nine
  column-gradient products 3.1, col2im 1.6.

2026-12-02, later, an AMD EPYC (2 virtual cores with AVX-512; OpenBLAS's SkylakeX kernels):

- A convolution and the 2x2 max-pool after it run as one step (layers/convpool.py): im2col's
  rows come in window order (`conv.quads`), so the product writes each window's four values into
  four contiguous blocks, and the pooling is three `maximum`s over whole blocks (its masks three
  comparisons). Alone, for 41 images: the 28x28x32 pooling 0.67 -> 0.20 ms forward and 0.75 ->
  0.30 backward, the 14x14x64 one 0.29 -> 0.08 and 0.28 -> 0.12; the one-channel convolution's
  columns in window order cost 0.09 -> 0.17-0.19 ms for 74 images (runs of 14 values at a
  stride of 2 instead of 28 in a row). col2im from rows in window order took 0.245 against
  0.135 ms for 9 images (its blocks strided), so where an input gradient is needed the pooling's
  gradient goes back into the output's own order and the convolution's backward runs as before;
  the first convolution (no input gradient) stays in window order. The view was numpy's
  `as_strided` at first (2.6 us a call, in Python, holding the GIL); a reshape and a transpose
  take 0.24 us, which took the fused step on 2 threads from 1.02x to 1.04-1.05x the speed of
  the unfused one, on 1 thread from 1.06x to 1.08x (alternating in one process, 40 rounds of 10
  steps each).
- Calls with little work run unsplit (`threads.MIN_WORK`): a hand-over to the pool thread and
  back took 55-60 us at the median (p99 80-110 us) over 5,000 empty ones, ten times a ReLU
  over 128 x 128 values (5.8 us); the small CNN's dense layers and their ReLU no longer pay it.
- Both, alternating processes of `profile_step.py --cnn` (60 steps each): 20.7 -> 19.2 ms per
  step on 2 threads (medians of 6 runs each), 32.4 -> 29.4 ms on 1 (4 runs); the `cnn` preset's
  step (`--preset cnn`, 20 steps, 8 runs each, a noisy phase) 77 -> 72 ms on 2 threads.
- Tried and left out: threads taking the chunks as each gets free (work-pulling, so that a core
  slowed by another guest of the host does less) instead of a part per thread: the benchmark's
  CNN worker on 2 threads, 8 alternating runs each, 4,787-6,092 samples/s before and
  4,770-6,167 after, medians equal. The input gradient's nine products with the taps copied
  contiguous first: 0.400 / 0.356 ms against 0.397 / 0.349 on the view (two runs of 40 rounds).
- Why fashionnet's runs on 2 threads vary more than PyTorch's (the small CNN's table as it was
  measured at 21:23 that day: 4,620-6,807 samples/s, PyTorch 3,515-4,164): a step on 2 threads makes
  about 100 voluntary context switches (`getrusage`; none on 1 thread). Each NumPy call takes the
  GIL for its Python part and a thread that finds it taken sleeps, and waking a thread on this
  virtual machine takes about 55 us, more when the host is busy; PyTorch's threads wait spinning in
  C. Larger chunks halve the switches (8 MiB of activations a chunk and 4 MiB of columns: 51 a step)
  without making the step faster (19.3-27.7 ms across the same runs: within the noise), so the sizes
  stay. A vector-matrix product (`ones @ a`, column_sums) on two threads at once took 2.0-2.2x as
  long as on one, where a matrix product of the same data ran side by side at 1.05-1.16x: it is
  left, a few hundredths of a millisecond a step. This guest's kernel halts an idle virtual core at
  once (`haltpoll.guest_halt_poll_ns=0` on its command line, so no polling first), which is why a
  wake-up costs tens of microseconds here; two single-threaded processes each running the 32-to-64
  convolution's product side by side took 6.3-6.4 ms a product against 5.8-5.9 alone, so on these 2
  virtual cores two threads can at best be about 1.8x one.
- Flatten gives its gradient back channels-last when its input was (layers/dense.py): the
  `cnn` preset's last ReLU multiplied an NCHW-ordered gradient by its channels-last mask, one
  of them at a stride, 0.91 ms backward at batch 256 on 2 threads; now 0.16 ms after a 0.09 ms
  copy, and the BatchNorm below no longer copies (0.44 -> 0.37 ms). The small CNN's stretch, whose
  chunks are in cache, did not measurably change (alternating processes, medians 22.2 / 21.6 ms).
- The small CNN's table against PyTorch in three runs of `--only cnn`, the code of its step the
  same in all three (the change above touches only a Flatten whose input left a stretch): at
  21:23, 7 rounds, 1.63x on 1 thread and 1.49x on 2 (fashionnet's rounds on 2 threads
  4,620-6,807 samples/s); at 23:44, 7 rounds, 1.75x and 1.57x; at 23:56, 11 rounds, the table
  above, 1.62x and 1.58x (rounds of 6,051-6,998). Read the ratio on 2 threads as 1.5-1.6x here,
  give or take the machine's phase.
- Measured, not built (2026-12-03): the `cnn` preset's first stage (a 1-to-32 convolution and
  its pooling at 28x28, 256 images) runs forward no faster on 2 threads than on 1 (3.0-4.2 ms
  against 3.3-3.9 ms, three alternating rounds): its product has 9 multiply-adds per value it
  writes, so the stage is the copying of 32 output values a pixel through memory, and on this
  virtual machine one core already takes what memory gives (two copies of 64 MiB: 7.1-8.0 ms
  one after the other on one thread, or side by side on two). Chunks small enough for the
  products to stay in a core's 1 MiB L2 made it slower on 2 threads (one run each: 9 images a
  chunk 3.9 ms, 4 images 5.0 ms, 2 images 8.1 ms, against 3.3 ms at the usual 74): the NumPy
  calls per image multiply, and with them the GIL hand-overs."""


if __name__ == "__main__":
    main()
