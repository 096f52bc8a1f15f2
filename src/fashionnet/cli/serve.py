"""fashionnet serve MODEL_OR_RUN_DIR: the model behind an HTTP API and a web page (uvicorn)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..classify import open_model, through
from ._common import (
    MODEL_HELP,
    UsageError,
    add_tta_argument,
    model_path,
    positive_float,
    positive_int,
)


def add_parser(sub: Any) -> None:
    sv = sub.add_parser(
        "serve", help="serve a model over HTTP: an API and a web page",
        description="Serve a model: POST /v1/predict, a page at /, OpenAPI docs at /docs. "
        "Needs the serve extra: pip install 'fashionnet[serve]'.",
    )  # fmt: skip
    sv.add_argument("model", type=Path, help=MODEL_HELP)
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on; 0.0.0.0 for every interface (default: "
                    "127.0.0.1, this machine only)")  # fmt: skip
    sv.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    sv.add_argument("--workers", type=positive_int, default=1,
                    help="server processes, each with its own copy of the model "
                    "(default: 1)")  # fmt: skip
    sv.add_argument("--max-batch", type=positive_int, default=64,
                    help="images per forward pass when requests are batched; 1 turns batching "
                    "off (default: 64)")  # fmt: skip
    sv.add_argument("--max-wait-ms", type=float, default=5.0,
                    help="how long a batch waits for more requests (default: 5)")  # fmt: skip
    sv.add_argument("--max-upload-mb", type=positive_float, default=10.0,
                    help="largest request body; larger ones get 413 (default: 10)")  # fmt: skip
    sv.add_argument("--threads", type=positive_int, default=1,
                    help="BLAS threads per worker: requests in parallel beat threads in one "
                    "matmul at these sizes (default: 1)")  # fmt: skip
    sv.add_argument("--access-log", action="store_true",
                    help="log every request (default: errors only)")  # fmt: skip
    add_tta_argument(sv)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401  (the extra is checked by name, whatever is imported already)

        from ..serve import server
        from ..serve.app import create_app
        from ..serve.metrics import shared_by_workers
    except ImportError as e:
        raise UsageError(f"fashionnet serve needs the serve extra ({e.name} is missing): "
                         "pip install 'fashionnet[serve]'") from None  # fmt: skip
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 0..65535")
    if args.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms {args.max_wait_ms:g}: expected 0 or more")
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if shared and not os.path.isdir(shared):  # prometheus_client would fail at the first count
        raise UsageError(f"PROMETHEUS_MULTIPROC_DIR={shared}: no such folder (where the "
                         "metrics of the server's processes are kept)")  # fmt: skip
    path = model_path(args.model)
    loaded = open_model(path)  # a model that fails to load stops here: one line, exit 2
    through(loaded.model, args.tta, loaded.image_shape)  # and views it cannot take
    try:
        sockets = server.listen(args.host, args.port)
    except OSError as e:  # socket.gaierror included: a name that does not resolve
        raise UsageError(f"--host {args.host} --port {args.port}: {e.strerror or e}") from None
    settings = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                "max_upload_mb": args.max_upload_mb, "blas_threads": args.threads,
                "tta": args.tta}  # fmt: skip
    common: dict[str, Any] = {"access_log": args.access_log, "log_level": "info",
                              "timeout_keep_alive": 5}  # fmt: skip
    port = sockets[0].getsockname()[1]  # the one --port 0 got
    where = f"http://[{args.host}]:{port}/" if ":" in args.host else f"http://{args.host}:{port}/"
    print(f"fashionnet serve: {path} ({len(loaded.class_names)} classes) on {where} "
          "(Ctrl-C stops)", file=sys.stderr, flush=True)  # fmt: skip
    try:
        if args.workers == 1:
            server.run(create_app(path, **settings), sockets, workers=1, **common)
        else:  # each worker process builds its own app from the settings
            os.environ["FASHIONNET_SERVE"] = json.dumps({"model": str(path), **settings})
            with shared_by_workers():  # /metrics from any worker counts them all
                server.run("fashionnet.serve.app:app_from_env", sockets, workers=args.workers,
                           factory=True, **common)  # fmt: skip
    finally:
        for sock in sockets:
            sock.close()
    return 0
