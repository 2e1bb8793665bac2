"""One log line per request, and the last line of defence against a traceback.

Lines name the route template (``DELETE /v1/blacklist/{number}``), never the path or the
query, which carry phone numbers. An unexpected exception becomes a 500 problem document; its
traceback is logged without the exception's message, which for a database error would
include the statement's parameters (numbers again). Nothing reaches uvicorn's own handler,
which would log the message and all.
"""

from __future__ import annotations

import logging
import time
import traceback

from .problems import problem

logger = logging.getLogger(__name__)


def route_of(scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "(no route)"


class RequestLog:
    """ASGI middleware: access log with templates, and the catch-all 500."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = {"code": None}

        async def watched(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # the catch-all: anything here is a bug
            logger.error("%s %s: unexpected %s\n%s", scope["method"], route_of(scope),
                         type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            if status["code"] is None:
                await problem(500, "internal", "internal error; the request changed nothing")(
                    scope, receive, watched)
        logger.info("%s %s %s %.0f ms", scope["method"], route_of(scope), status["code"],
                    (time.monotonic() - started) * 1000)
