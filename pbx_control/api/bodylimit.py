"""A cap on request bodies, enforced while they arrive: no body here needs more than a few
kilobytes, and uvicorn would otherwise read any size into memory."""

from __future__ import annotations

from ..errors import PbxControlError
from .problems import problem

MAX_BODY = 1024 * 1024


class BodyTooLarge(PbxControlError):
    code = "too_large"
    http_status = 413

    def __init__(self, limit: int):
        super().__init__(f"the request body exceeds {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 by Content-Length up front, or as soon as a chunked body grows
    past the limit. A body within the limit is read here and handed on whole."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)

        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay(message), send)
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._refuse(scope, receive, send)

        await self.app(scope, _replay({"type": "http.request", "body": bytes(body),
                                       "more_body": False}, receive), send)

    async def _refuse(self, scope, receive, send):
        error = BodyTooLarge(self.limit)
        await problem(413, error.code, error.message)(scope, receive, send)


def _replay(first: dict, then=None):
    """A ``receive`` that gives ``first``, then waits on the real one (for disconnects)."""
    pending = [first]

    async def receive():
        if pending:
            return pending.pop()
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive
