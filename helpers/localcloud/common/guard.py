"""The local cloud's front door (ASGI middleware): bodies bounded however they are sent, JSON checked before parsing.

- A body over the limit is refused with 413, by its Content-Length or, sent chunked, once the
  bytes read pass the limit (the app never sees it; the rest is read and dropped, up to
  `DRAIN_FACTOR` limits, so the client reads the answer).
- A JSON body (a JSON content type, or none and a body starting with `{` or `[`) is read whole
  and scanned (`limits.check_json_text`): nested deeper than `MAX_JSON_DEPTH` or holding
  NaN/Infinity it is refused with 400 before any parser (recursive ones included) touches it.
- Every refusal leaves through the app's error shape (`respond`) and is counted; nothing is logged
  but the access line.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.common.limits import SCAN_ON_LOOP_BYTES, LimitError, check_json_text, count_refusal

Responder = Callable[[str, ApiError], Any]
DRAIN_FACTOR = 2  # a chunked body over the limit is read on (and dropped) up to this many limits before the 413


def _is_json(content_type: bytes | None) -> bool | None:
    """True for a JSON content type, False for another one, None when there is none."""
    if not content_type:
        return None
    main = content_type.split(b";", 1)[0].strip().lower()
    return main in (b"application/json", b"text/json") or (main.startswith(b"application/") and main.endswith(b"+json"))


class RequestGuard:
    """ASGI middleware: 413 for bodies over `limit` bytes, 400 for JSON over the depth limit or with NaN.

    Args:
        app: the ASGI app behind the door.
        limit: the largest body, in bytes.
        respond: `respond(path, ApiError)` -> the ASGI response for a refusal (the app's error shape).
    """

    def __init__(self, app: Any, limit: int, respond: Responder):
        self.app = app
        self.limit = limit
        self.respond = respond

    def _too_large(self) -> ApiError:
        count_refusal("body_size")
        return ApiError(413, f"request body over the {self.limit / 1e6:.0f} MB limit; send fewer or smaller files per "
                             "request (or start the local cloud with --max-body-mb)", "body")

    async def _refuse(self, scope: dict, receive: Any, send: Any, err: ApiError) -> None:
        response = self.respond(scope.get("path", ""), err)
        response.headers["connection"] = "close"
        await response(scope, receive, send)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send, self._too_large() if length.isdigit()
                               else ApiError(400, "Content-Length is not a number", "Content-Length"))
            return
        json_type = _is_json(headers.get(b"content-type"))
        if length is not None and json_type is False:
            await self.app(scope, self._counting(receive), send)  # a sized upload: streamed, counted
            return
        # chunked, or JSON (or untyped, which the studio reads as JSON): read it whole, within the limit
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                if message.get("more_body", False):
                    await self._discard(receive, DRAIN_FACTOR * self.limit)
                await self._refuse(scope, receive, send, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_type or (json_type is None and body.lstrip()[:1] in (b"{", b"[")):
            try:
                if len(body) > SCAN_ON_LOOP_BYTES:  # a long scan must not stall the other requests
                    await run_in_threadpool(check_json_text, body)
                else:
                    check_json_text(body)
            except LimitError as err:
                await self._refuse(scope, receive, send, err)
                return
        await self.app(scope, self._replay(body, receive), send)

    @staticmethod
    async def _discard(receive: Any, most: int) -> None:
        """Read and drop the rest of a body refused mid-way (up to `most` bytes), so the client, still
        sending, reads the 413 instead of a reset connection."""
        dropped = 0
        while dropped <= most:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    def _counting(self, receive: Any) -> Any:
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:  # more than its Content-Length said: the server closes it
                    return {"type": "http.disconnect"}
            return message

        return limited_receive

    @staticmethod
    def _replay(body: bytes, receive: Any) -> Any:
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


__all__ = ["RequestGuard"]
