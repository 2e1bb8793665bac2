"""Unexpected exceptions, described for a log line without their message or arguments.

An exception raised while routing a call (a driver error quoting its SQL parameters, a
``ValueError`` naming the input, a bug formatting a number) can carry a full phone number in
its message, its ``args`` and the repr of the function it was raised from. Both controllers
log such failures by type and place only, and keep them away from the default reporters of
gevent's hub and asyncio, which print all of that. Also here: the one line the commands give
for a database they cannot use, instead of SQLAlchemy's traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

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


def shown_url(url: str) -> str:
    """The database URL with its password hidden, for a message."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(not a database URL)"


def database_problem(exc: Exception, url: str) -> str:
    """``"cannot use the database sqlite:///x: unable to open database file"``."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = reason[0].strip() if reason else type(exc).__name__
    return f"cannot use the database {shown_url(url)}: {first.replace(url, shown_url(url))}"


def open_store(url: str, application_name: str):
    """A Store on ``url``, or SystemExit with one line when the URL cannot name a database
    (a store on a database that is merely down opens: calls are refused 503 meanwhile)."""
    from .storage import Store

    try:
        return Store(url, application_name=application_name)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise SystemExit(f"config: database_url: {database_problem(exc, url)}") from None
