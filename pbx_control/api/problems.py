"""Every error as a JSON problem document (RFC 9457 shape) with a stable code and field.

``{"type", "title", "status", "code", "field", "detail"}``. Domain errors carry their own
code and HTTP status; request validation (bad JSON, wrong types, unknown fields) is a 400,
not FastAPI's default 422, which this API keeps for semantic errors. Nothing unexpected ever
reaches the client as a traceback: ``requestlog.RequestLog`` turns it into a 500 ``internal``
problem and a log line. Log lines name the route template, never the path (numbers).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException

from ..errors import PbxControlError

logger = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://pbx-control.invalid/problems/"
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
          415: "Unsupported Media Type", 422: "Unprocessable Content",
          429: "Too Many Requests", 500: "Internal Server Error",
          503: "Service Unavailable"}
# FastAPI raises a bare 400 when decoding the body fails in a way other than a JSON syntax
# error: nesting deeper than the parser's recursion limit, an integer past Python's digit
# limit, bytes that are not UTF-8. To a client that is unreadable JSON too.
HTTP_CODES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed",
              401: "invalid_key", 403: "forbidden", 413: "too_large",
              415: "unsupported_media_type"}
UNREADABLE = ((RecursionError, "the JSON body is nested too deeply"),
              (UnicodeDecodeError, "the body is not UTF-8"),
              (ValueError, "the JSON body holds a number too long to read"))


def problem(status: int, code: str, detail: str, field: str | None = None,
            headers: dict | None = None) -> JSONResponse:
    body = {"type": TYPE_BASE + code, "title": TITLES.get(status, "Error"), "status": status,
            "code": code, "field": field, "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "(no route)"


async def _domain(request: Request, exc: PbxControlError) -> JSONResponse:
    headers = getattr(exc, "headers", None)
    if exc.http_status >= 500:
        logger.warning("%s %s: %s", request.method, _route(request), exc.code)
    return problem(exc.http_status, exc.code, exc.message, exc.field, headers)


def _field(loc: tuple) -> str | None:
    # loc is ('body', 'a') or ('query', 'limit'); the body itself is ('body',).
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path",
                                                            "header") else [str(p) for p in loc]
    return ".".join(parts) or None


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    field = _field(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return problem(400, "invalid_json", "the body is not valid JSON", None)
    message = str(first.get("msg", "invalid request"))
    # pydantic repeats the input in some messages: keep the message, never the value.
    return problem(400, "invalid_input", f"{field or 'body'}: {message}", field)


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    if code == "invalid_json":
        detail = _unreadable(exc.__cause__)
    return problem(exc.status_code, code, detail, None, getattr(exc, "headers", None))


def _unreadable(cause: BaseException | None) -> str:
    for kind, detail in UNREADABLE:
        if isinstance(cause, kind):
            return detail
    return "the body is not valid JSON"


async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
    # The core turns the races it expects into Conflicts; one it did not expect still is a
    # conflict with stored data, and the transaction has been rolled back.
    logger.warning("%s %s: integrity error not mapped by the core", request.method,
                   _route(request))
    return problem(409, "conflict", "the request conflicts with stored data")


async def _data(request: Request, exc: DataError) -> JSONResponse:
    logger.warning("%s %s: value refused by the database", request.method, _route(request))
    return problem(400, "invalid_input", "a value is out of range for storage")


async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
    # A time near year 1 or 9999 shifted by its zone leaves the range of datetime.
    return problem(400, "invalid_input", "a value is out of range")


def install(app: FastAPI) -> None:
    app.add_exception_handler(PbxControlError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(DataError, _data)
    app.add_exception_handler(OverflowError, _overflow)


def documented(*statuses: int) -> dict[int | str, dict]:
    """Error answers for a route's OpenAPI entry; ``openapi.py`` gives them the Problem body."""
    common = (401, 403, 429)
    return {status: {"description": TITLES[status]}
            for status in sorted(set(statuses) | set(common))}
