"""At most a few large request bodies in flight per client address.

Every body is capped (``BodyLimit``), but nothing bounded how many one client sends at once, and a
route's form is read before any of its checks run: an anonymous client (or one over its rate limit)
could start dozens of 256 MiB uploads at a time, which Starlette spools to temporary files (and
the demo keeps in memory) until each is refused. :class:`UploadSlots` lets each client address
(:func:`~deepsift.server.security.client_address`: behind a trusted proxy, the visitor's) have
``max_uploads_per_client`` bodies over :data:`LARGE_BODY` bytes in flight per server process;
one more gets a ``429`` before its body is read. Small requests are never counted.
"""
from __future__ import annotations

import collections
import threading
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .security import client_address

LARGE_BODY = 1 << 20
"""A request body over this many bytes (or of unknown length) takes one of its client's upload slots."""


def large_body(scope: Scope) -> bool:
    """Whether a request declares a body over :data:`LARGE_BODY`, or a chunked one (its length unknown)."""
    headers = dict(scope.get("headers", []))
    length = headers.get(b"content-length")
    if length is not None:
        return not length.isdigit() or int(length) > LARGE_BODY
    return b"chunked" in headers.get(b"transfer-encoding", b"").lower()


class UploadSlots:
    """ASGI middleware: a client address's large bodies in flight are capped; one more gets a 429 at once."""

    def __init__(self, app: ASGIApp, settings: Any) -> None:
        self.app, self.settings = app, settings
        self._busy: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not large_body(scope):
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_uploads_per_client
        key = client_address(Request(scope), self.settings)
        with self._lock:
            allowed = self._busy[key] < limit
            if allowed:
                self._busy[key] += 1
        if not allowed:
            from starlette.responses import JSONResponse

            refuse = JSONResponse({"detail": f"too many uploads at once from your address: at most {limit} "
                                             "at a time; send the next one when one is done"}, 429,
                                  headers={"Retry-After": "1", "Connection": "close"})
            await refuse(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self._busy[key] -= 1
                if self._busy[key] <= 0:
                    del self._busy[key]
