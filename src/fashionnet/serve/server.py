"""uvicorn under `fashionnet serve`: the sockets are bound and listening before the address is
announced, and SIGTERM / SIGINT end a server with exit 0 once the requests in flight are answered.

uvicorn on its own announces a port before anything listens on it: with --workers N the parent
binds the socket and each worker calls listen() only after its application has started, so a
client that connects as soon as it reads the address is refused. Here the parent listens first;
a connection made at once waits in the backlog until a worker takes it.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

HANDLED = (signal.SIGINT, signal.SIGTERM)
BACKLOG = 2048  # uvicorn's default


class Server(uvicorn.Server):
    """uvicorn's server, except that the signal ends it with exit 0 once the requests in flight
    are answered (uvicorn re-raises the signal afterwards: exit -15 / 130)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self.handle_exit) for s in HANDLED}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def listen(host: str, port: int) -> list[socket.socket]:
    """A listening socket on every address `host` resolves to, as asyncio's create_server binds
    them (IPv6 ones IPv6 only), all on one port: with port 0, the one the first socket got.
    Raises OSError, socket.gaierror included, with nothing left open."""
    found = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                               socket.AI_PASSIVE)  # fmt: skip
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.set_inheritable(True)  # the workers get it
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def run(app: Any, sockets: list[socket.socket], *, workers: int, **config: Any) -> None:
    """Serve `app` on listening `sockets`: in this process, or in `workers` processes, each
    building the app itself (then `app` is an import string)."""
    if workers == 1:
        Server(uvicorn.Config(app, backlog=BACKLOG, **config)).run(sockets=sockets)
        return
    with suppress(KeyboardInterrupt):  # as uvicorn.run: a Ctrl-C before the workers are up
        Multiprocess(uvicorn.Config(app, workers=workers, backlog=BACKLOG, **config),
                     sockets=sockets).run()  # fmt: skip
