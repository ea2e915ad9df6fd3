"""Request bodies are bounded before anything reads them.

Without a bound, a 400 MB JSON body was read whole (and kept in memory) before the route
could even refuse its missing token. ``BodyLimit`` is a plain ASGI middleware that runs before
routing, authentication and parsing:

* a declared ``Content-Length`` over the limit is answered 413 at once, the body unread;
* a body without one (``Transfer-Encoding: chunked``) is counted as it streams in, and the
  request is cut off with 413 as soon as the count passes the limit — nothing more is read.

Every request gets the general limit (``SIYU_MAX_BODY_BYTES``, 1 MB by default: far above any
JSON the API takes). Uploads keep their own, larger limits: the app passes the paths that take
files (imports, chat exports, coupon codes) with their limit, and the upload's own check then
applies the exact one. The WeCom callback is served ahead of the stack with its own 2 MB cap.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siyu.core.i18n import _


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes its limit; the middleware answers 413."""


def too_large_message(limit: int) -> str:
    return _("The request body is larger than {size}; send less at a time", size=_human_size(limit))


def _human_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):g} MB"
    return f"{max(1, size // 1024)} KB"


class BodyLimit:
    """Answers 413 to a request whose body is larger than its path's limit, reading no more of it."""

    def __init__(self, app: ASGIApp, *, limit: int, large_bodies: Sequence[tuple[str, int]] = ()) -> None:
        self.app = app
        self.limit = limit
        self.large_bodies = [(re.compile(pattern), size) for pattern, size in large_bodies]

    def limit_for(self, path: str) -> int:
        for pattern, size in self.large_bodies:
            if pattern.fullmatch(path):
                return size
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, receive, send, limit)
            return
        received = 0
        cut_off = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, cut_off
            if cut_off:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut_off = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if cut_off and not started:
                return  # the app's own answer to a body cut short (400, 500) gives way to the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not cut_off or started:
                raise
        if cut_off and not started:
            await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        from siyu.core.errors import wants_html  # local: errors imports the web layer lazily too

        message = too_large_message(limit)
        request = Request(scope, receive)
        if wants_html(request) and "session" in scope:
            from siyu.web.render import render_error

            await render_error(request, 413, message)(scope, receive, send)
            return
        body = json.dumps({"detail": message}, ensure_ascii=False).encode()
        # Connection: close — the rest of the body is never read, so the connection cannot be reused.
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we see it
    return None
