"""fashionnet serve MODEL_OR_RUN_DIR: the model behind an HTTP API and a web page (uvicorn)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..classify import open_model
from ._common import MODEL_HELP, UsageError, model_path, positive_float, positive_int


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that SIGTERM / SIGINT end it with exit 0 once the requests
        in flight are answered (uvicorn re-raises the signal afterwards: exit -15 / 130)."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {s: signal.signal(s, self.handle_exit) for s in HANDLED}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    return Server


HANDLED = (signal.SIGINT, signal.SIGTERM)


def _check_address(host: str, port: int, workers: int) -> None:
    """Bind host:port as uvicorn will, with SO_REUSEADDR, then let it go: a port in use or a host
    that is not this machine's is one line and exit 2 here, rather than uvicorn's startup log and
    its exit 3. One worker listens on every address the name resolves to (asyncio's
    create_server); several share one socket, IPv6 for an address with a colon, else IPv4."""
    family = socket.AF_UNSPEC if workers == 1 else (
        socket.AF_INET6 if ":" in host else socket.AF_INET)  # fmt: skip
    try:
        found = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        for af, kind, proto, _, address in found if workers == 1 else found[:1]:
            with socket.socket(af, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if af == socket.AF_INET6:  # as asyncio: the IPv4 address gets its own socket
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
    except OSError as e:  # socket.gaierror included: a name that does not resolve
        raise UsageError(f"--host {host} --port {port}: {e.strerror or e}") from None


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


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve.app import create_app
    except ImportError as e:
        raise UsageError(f"fashionnet serve needs the serve extra ({e.name} is missing): "
                         "pip install 'fashionnet[serve]'") from None  # fmt: skip
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 0..65535")
    if args.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms {args.max_wait_ms:g}: expected 0 or more")
    path = model_path(args.model)
    loaded = open_model(path)  # a model that fails to load stops here: one line, exit 2
    _check_address(args.host, args.port, args.workers)
    settings = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                "max_upload_mb": args.max_upload_mb, "blas_threads": args.threads}  # fmt: skip
    common: dict[str, Any] = {"host": args.host, "port": args.port, "access_log": args.access_log,
                              "log_level": "info", "timeout_keep_alive": 5}  # fmt: skip
    where = f"http://[{args.host}]:{args.port}/" if ":" in args.host else (
        f"http://{args.host}:{args.port}/")  # fmt: skip
    print(f"fashionnet serve: {path} ({len(loaded.class_names)} classes) on {where} "
          "(Ctrl-C stops)", file=sys.stderr, flush=True)  # fmt: skip
    if args.workers == 1:
        _server_class()(uvicorn.Config(create_app(path, **settings), **common)).run()
    else:  # each worker process builds its own app from the settings
        os.environ["FASHIONNET_SERVE"] = json.dumps({"model": str(path), **settings})
        uvicorn.run("fashionnet.serve.app:app_from_env", factory=True, workers=args.workers,
                    **common)  # fmt: skip
    return 0
