"""What a client may send: a body over the limit is refused with 413 before it is read (from its
Content-Length) or as soon as it passes the limit (a chunked body), so a large or endless upload
costs neither memory nor a worker."""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


class TooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: bodies of at most `max_bytes`, else a JSON 413."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send, declared.decode(errors="replace"))
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message: Message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except TooLarge:
            if not started:
                await self._refuse(send, f"over {self.max_bytes}")

    async def _refuse(self, send: Any, size: str) -> None:
        mb = self.max_bytes / (1 << 20)
        body = json.dumps({"detail": f"request body of {size} bytes; the limit is {mb:g} MB "
                           "(--max-upload-mb)"}).encode()  # fmt: skip
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


def status_of(message: str) -> int:
    """The HTTP status for a picture the pipeline refused: 413 for one over the pixel limit (a
    decompression bomb, refused from its header), 415 for what is not an image at all, 422 for
    a damaged one."""
    if "over the limit" in message or "decompression bomb" in message:  # ours, or Pillow's
        return 413
    if "not an image" in message:
        return 415
    return 422
