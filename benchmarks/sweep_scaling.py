"""How `fashionnet sweep` scales: trials per hour with 1 and 2 local workers, and through a Dask
cluster of 2 workers on this machine (scheduler and workers on 127.0.0.1).

    python benchmarks/sweep_scaling.py [--trials 12] [--epochs 3] [--limit 20000]

The same fixed workload each time (the default MLP recipe, shortened: `--epochs`, `--limit`
images; no pruning, so every trial does the same work), a fresh sweep folder each time; the
sweep command is timed end to end (its start, the trials, choosing and testing the best).
Results: benchmarks/sweep_results.json (BENCHMARKS.md is generated from it by run.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def sweep(out: Path, trials: int, epochs: int, limit: int, *extra: str) -> float:
    argv = [sys.executable, "-m", "fashionnet", "sweep", "--out", str(out), "--trials",
            str(trials), "--prune", "none", "--set", f"epochs={epochs}", "--set",
            f"limit={limit}", "--set", "val_size=5000", *extra]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def cluster(folder: Path, workers: int) -> tuple[list[Any], str]:
    dask = [sys.executable, "-m", "dask"]
    file = folder / "scheduler.json"

    def start(cmd: list[str], ready: str) -> Any:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if ready in line:
                return proc
        raise SystemExit(f"{cmd[3]} did not start")

    procs = [start([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(file)], "Scheduler at")]  # fmt: skip
    for i in range(workers):
        procs.append(start([*dask, "worker", "--scheduler-file", str(file), "--host",
                            "127.0.0.1", "--nthreads", "1", "--no-dashboard", "--name",
                            f"w{i}"], "Registered to"))  # fmt: skip
    return procs, json.loads(file.read_text())["address"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=20000)
    ap.add_argument("--out", type=Path, default=HERE / "sweep_results.json")
    args = ap.parse_args()
    shape = (args.trials, args.epochs, args.limit)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for workers in (1, 2):
            seconds = sweep(root / f"local{workers}", *shape, "--workers", str(workers))
            results[f"local, {workers} worker{'s' if workers > 1 else ''}"] = seconds
            print(workers, seconds, flush=True)
        procs, address = cluster(root, 2)
        try:
            results["Dask cluster, 2 workers"] = sweep(root / "dask", *shape, "--dask", address)
        finally:
            for p in procs:
                p.kill()
                p.wait()
    rows = {name: {"seconds": s, "trials_per_hour": args.trials * 3600 / s}
            for name, s in results.items()}  # fmt: skip
    one = rows["local, 1 worker"]["trials_per_hour"]
    for row in rows.values():
        row["speedup"] = row["trials_per_hour"] / one
    from run import machine  # this folder's benchmarks/run.py

    record = {"command": "python benchmarks/sweep_scaling.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "machine": machine(), "trials": args.trials,
              "epochs": args.epochs, "limit": args.limit, "rows": rows}  # fmt: skip
    print(json.dumps(record, indent=1))
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
