"""The domain errors every interface (CLI, HTTP API, adapters) turns into its own form.

Each carries a stable ``code`` that scripts and API clients rely on, and, where it concerns one
input, the ``field``. Messages never contain a full phone number: callers mask them first.
"""

from __future__ import annotations


class PbxControlError(Exception):
    """Base of the errors a user or an API client can cause and read."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code


class InvalidInput(PbxControlError):
    """Malformed input: a number that does not parse, a duration, a bad flag combination."""

    code = "invalid_input"
    http_status = 400


class NotFound(PbxControlError):
    code = "not_found"
    http_status = 404


class Conflict(PbxControlError):
    """The request clashes with what is stored: a held (X, party) pair, an out_id reused."""

    code = "conflict"
    http_status = 409


class PoolExhausted(Conflict):
    code = "pool_exhausted"


class Unprocessable(PbxControlError):
    """Well-formed but not allowed: withheld callers on AXB, unbinding an ended binding."""

    code = "unprocessable"
    http_status = 422


class StorageUnavailable(PbxControlError):
    code = "storage_unavailable"
    http_status = 503
