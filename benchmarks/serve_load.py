"""`fashionnet serve` under load, on loopback only, bounded in count:

    python benchmarks/serve_load.py MLP_RUN CNN_RUN [--rounds 3]

1. Mixed load: 10,000 requests at concurrency 32 from an asyncio client, 5% of them malformed
   (not an image, truncated, a decompression bomb, a wrong content type, an oversized body,
   pixels of the wrong length, an unknown field). Every malformed one must get a 4xx, every good
   one 200 with the class `fashionnet predict` gives for the same file, none a 5xx; the server's
   RSS (all its processes) is sampled after the first 1,000 requests and at the end.
2. Throughput with `ab` (apache2-utils: compiled, so the client does not eat the server's CPU),
   one 28x28 PNG per request, concurrency 32, rounds alternating between the contenders:
   a plain FastAPI endpoint (benchmarks/plain_server.py, 2 uvicorn workers, no batching) against
   `fashionnet serve` on the default MLP; and on the cnn preset's model, batching on against
   the same server with --max-batch 1, through the model's own views and through 2 (--tta flip).

Results: benchmarks/serve_results.json (BENCHMARKS.md is generated from it by run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from serving import bomb, png, serve_process, start_server  # noqa: E402


def stop(proc: Any) -> None:
    proc.terminate()
    proc.wait()


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (the uvicorn workers), MiB."""
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], text=True,
                                                   capture_output=True).stdout.split()]  # fmt: skip
    total = 0
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    return total / 1024


def requests(
    images: list[bytes], n: int, bad_share: float, seed: int
) -> list[tuple[str, bytes, int]]:
    """(kind, raw HTTP request, index of the good image or -1), good and malformed mixed."""
    rng = random.Random(seed)

    def post(path: str, body: bytes, kind: str, extra: str = "") -> bytes:
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n")  # fmt: skip
        return head.encode() + body

    boundary = "fashionnetload"

    def multipart(field: str, body: bytes) -> bytes:
        return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                f"filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + body + \
            f"\r\n--{boundary}--\r\n".encode()  # fmt: skip

    bad = {
        "not an image": lambda: post("/v1/predict", b"hello, world", "image/png"),
        "truncated": lambda: post("/v1/predict", images[0][:50], "image/png"),
        "bomb": lambda: post("/v1/predict", bomb(), "image/png"),
        "wrong type": lambda: post("/v1/predict", b"a,b,c", "text/csv"),
        "too large": lambda: (
            f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png"
            f"\r\nContent-Length: {64 << 20}\r\n\r\n"
        ).encode(),
        "pixels length": lambda: post(
            "/v1/predict/pixels", b'{"pixels": [[1, 2, 3]]}', "application/json"
        ),
        "unknown field": lambda: post(
            "/v1/predict",
            multipart("photo", images[0]),
            f"multipart/form-data; boundary={boundary}",
        ),
    }
    out = []
    for _ in range(n):
        if rng.random() < bad_share:
            kind = rng.choice(sorted(bad))
            out.append((kind, bad[kind](), -1))
        else:
            i = rng.randrange(len(images))
            out.append(("good", post("/v1/predict", images[i], "image/png"), i))
    return out


async def one(reader: Any, writer: Any, raw: bytes) -> tuple[int, bytes, bool]:
    """Send a request on a keep-alive connection; (status, body, connection closed)."""
    writer.write(raw)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() == "close"


async def drive(port: int, work: list[tuple[str, bytes, int]], concurrency: int,
                on_progress: Any) -> list[tuple[str, int, int, bytes]]:  # fmt: skip
    queue: asyncio.Queue[tuple[int, tuple[str, bytes, int]]] = asyncio.Queue()
    for item in enumerate(work):
        queue.put_nowait(item)
    results: list[tuple[str, int, int, bytes]] = [("", 0, 0, b"")] * len(work)
    done = 0

    async def client() -> None:
        nonlocal done
        conn = None
        while not queue.empty():
            n, (kind, raw, index) = queue.get_nowait()
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            try:
                status, body, closed = await one(*conn, raw)
            except (asyncio.IncompleteReadError, ConnectionError):
                status, body, closed = 0, b"", True  # the server closed on us: recorded as 0
            if closed:
                conn[1].close()
                conn = None
            results[n] = (kind, index, status, body)
            done += 1
            on_progress(done)
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*[client() for _ in range(concurrency)])
    return results


def mixed_load(mlp_run: Path, n: int, images: list[bytes], expected: list[str]) -> dict:
    proc, port = serve_process(mlp_run, workers=2)
    rss = {}

    def progress(done: int) -> None:
        if done in (1000, n):
            rss[done] = rss_mib(proc.pid)

    try:
        t0 = time.perf_counter()
        results = asyncio.run(drive(port, requests(images, n, 0.05, seed=0), 32, progress))
        seconds = time.perf_counter() - t0
    finally:
        stop(proc)
    good = [r for r in results if r[0] == "good"]
    bad = [r for r in results if r[0] != "good"]
    right = sum(1 for _, i, s, body in good if s == 200 and
                json.loads(body)["predictions"][0]["top"][0]["class"] == expected[i])  # fmt: skip
    statuses: dict[str, dict[str, int]] = {}
    for kind, _, status, _ in bad:
        statuses.setdefault(kind, {}).setdefault(str(status), 0)
        statuses[kind][str(status)] += 1
    return {
        "requests": n, "seconds": seconds, "good": len(good), "good_200_cli_class": right,
        "malformed": len(bad), "malformed_4xx": sum(1 for r in bad if 400 <= r[2] < 500),
        "any_5xx": sum(1 for r in results if r[2] >= 500), "malformed_statuses": statuses,
        "rss_mib_after_1000": rss.get(1000), "rss_mib_at_end": rss.get(n),
    }  # fmt: skip


def ab(port: int, body: Path, n: int) -> dict:
    out = subprocess.run(["ab", "-q", "-n", str(n), "-c", "32", "-p", str(body), "-T", "image/png",
                          f"http://127.0.0.1:{port}/v1/predict"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    rate = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    p99 = float(re.search(r"\n\s+99%\s+(\d+)", out).group(1))
    p50 = float(re.search(r"\n\s+50%\s+(\d+)", out).group(1))
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    return {"rps": rate, "p50_ms": p50, "p99_ms": p99, "failed": failed,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}  # fmt: skip


def throughput(contenders: dict[str, tuple[list[str], int, dict | None]], body: Path, n: int,
               rounds: int) -> dict:  # fmt: skip
    """Each contender in turn, `rounds` times (A B A B ...), a fresh server each round; a plain
    uvicorn is handed a socket that already listens (tests/serving.py says why)."""
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (cmd, workers, env) in contenders.items():
            proc, port = start_server(cmd, workers, env, own_socket="uvicorn" in cmd)
            try:
                ab(port, body, max(200, n // 10))  # warm-up, not counted
                runs[name].append(ab(port, body, n))
            finally:
                stop(proc)
    return {name: {"rounds": r, "rps": statistics.median(x["rps"] for x in r),
                   "p99_ms": statistics.median(x["p99_ms"] for x in r),
                   "p50_ms": statistics.median(x["p50_ms"] for x in r)}
            for name, r in runs.items()}  # fmt: skip


def forward_costs(run: Path, tta: str = "model") -> dict:
    """The model's forward pass alone through `tta`'s views, one BLAS thread: ms for one image,
    and per image in a batch of 64 (what batching can gain at most)."""
    from threadpoolctl import threadpool_limits

    from fashionnet.classify import open_model, through
    from fashionnet.data import to_float

    model = through(open_model(run).model, tta)
    out = {}
    with threadpool_limits(1, user_api="blas"):
        for n, reps in ((1, 40), (64, 5)):
            x = to_float(np.zeros((n, 28, 28), np.uint8))
            model.predict_proba(x)
            t0 = time.perf_counter()
            for _ in range(reps):
                model.predict_proba(x)
            out[str(n)] = (time.perf_counter() - t0) / reps / n * 1000
    return out


def arithmetic(run: Path) -> dict:
    """What no batching removes: the float32 operations of one image through the model's
    convolutions and dense layers (2 per multiply-add), per view and views per image, beside
    the most this machine's matrix product does on one core (2048x2048, best of 5)."""
    from threadpoolctl import threadpool_limits

    from fashionnet.classify import open_model
    from fashionnet.model import FlipAveraged, unwrap

    model = open_model(run).model
    views = model.n_views if isinstance(model, FlipAveraged) else 1
    flops = 2 * unwrap(model).mult_adds(784)
    a = np.random.default_rng(0).standard_normal((2, 2048, 2048), dtype=np.float32)
    best = np.inf
    with threadpool_limits(1, user_api="blas"):
        for _ in range(6):
            t0 = time.perf_counter()
            a[0] @ a[1]
            best = min(best, time.perf_counter() - t0)
    return {"mflop_per_view": flops / 1e6, "views": views,
            "matmul_gflops_one_core": 2 * 2048**3 / best / 1e9}  # fmt: skip


def describe(run: Path) -> str:
    metrics = run / "metrics.json"
    if not metrics.exists():
        return f"{run.name} (no metrics.json)"
    m = json.loads(metrics.read_text())
    tta = json.loads((run / "config.json").read_text()).get("tta")
    views = {None: "", "flip": ", averaging 2 views", "flip-shift": ", averaging 10 views"}
    return (f"preset {m.get('preset')}, {m.get('train_size')} training images, test accuracy "
            f"{m.get('test_accuracy', 0):.4f}{views.get(tta, f', tta {tta}')}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mlp_run", type=Path)
    ap.add_argument("cnn_run", type=Path)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "serve_results.json")
    args = ap.parse_args()
    from fashionnet.data import load_fashion_mnist

    test = load_fashion_mnist().test.images[:200]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, im in enumerate(test):
            (folder / f"{i:03d}.png").write_bytes(png(im))
        cli = subprocess.run([sys.executable, "-m", "fashionnet", "predict", str(args.mlp_run),
                              str(folder), "--json"], capture_output=True, text=True,
                             check=True).stdout.splitlines()  # fmt: skip
        expected = [json.loads(line)["predictions"][0]["class"] for line in cli]
        images = [(folder / f"{i:03d}.png").read_bytes() for i in range(len(test))]
        mixed = mixed_load(args.mlp_run, args.requests, images, expected)
        print(json.dumps(mixed, indent=1), flush=True)
        body = folder / "000.png"
        serve = [sys.executable, "-m", "fashionnet", "serve", "--port", "0", "--workers", "2"]
        plain_env = {**os.environ, "FASHIONNET_PLAIN_MODEL": str(args.mlp_run / "model.npz")}
        plain = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "plain_server:app",
                 "--workers", "2", "--no-access-log"]  # fmt: skip
        one_thread = {**plain_env, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        mlp = throughput({"plain FastAPI endpoint": (plain, 2, plain_env),
                          "plain, one BLAS thread": (plain, 2, one_thread),
                          "fashionnet serve": ([*serve, str(args.mlp_run)], 2, None)},
                         body, args.requests, args.rounds)  # fmt: skip
        print(json.dumps(mlp, indent=1), flush=True)
        on, off = [*serve, str(args.cnn_run)], [*serve, str(args.cnn_run), "--max-batch", "1"]
        cnn = throughput({"batching on": (on, 2, None), "batching off": (off, 2, None),
                          "batching on, --tta flip": ([*on, "--tta", "flip"], 2, None),
                          "batching off, --tta flip": ([*off, "--tta", "flip"], 2, None)},
                         body, args.requests // 4, args.rounds)  # fmt: skip
        print(json.dumps(cnn, indent=1), flush=True)
    command = "python benchmarks/serve_load.py " + " ".join(sys.argv[1:])
    from run import machine  # this folder's benchmarks/run.py

    result = {"command": command, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
              "mixed": mixed,
              "mlp": mlp, "cnn": cnn, "cnn_forward_ms_per_image": forward_costs(args.cnn_run),
              "cnn_flip_forward_ms_per_image": forward_costs(args.cnn_run, "flip"),
              "cnn_arithmetic": arithmetic(args.cnn_run),
              "models": {"mlp": describe(args.mlp_run), "cnn": describe(args.cnn_run)}}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
