"""Unexpected exceptions, described for a log line without their message or arguments.

An exception raised while routing a call (a driver error quoting its SQL parameters, a
``ValueError`` naming the input, a bug formatting a number) can carry a full phone number in
its message, its ``args`` and the repr of the function it was raised from. Both controllers
log such failures by type and place only, and keep them away from the default reporters of
gevent's hub and asyncio, which print all of that.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    """``"ValueError in route_inbound (calls.py:42)"``: the type and where it was raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return type(exc).__name__
    code = tb.tb_frame.f_code
    return f"{type(exc).__name__} in {code.co_name} ({Path(code.co_filename).name}:{tb.tb_lineno})"


def asyncio_exception_handler(loop, context: dict) -> None:
    """For ``loop.set_exception_handler``: the default one prints the exception message and
    the repr of the callback or task, which holds the call's arguments."""
    exc = context.get("exception")
    if "task" in context or "future" in context:
        where = "a task"
    elif "handle" in context:
        where = "a callback"
    else:
        where = "the event loop"
    logger.error("unhandled error in %s: %s", where,
                 describe(exc) if exc is not None else "no exception")
