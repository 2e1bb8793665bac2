"""``Idempotency-Key`` on POST /v1/bindings: a retry gets the first answer again.

The key row is inserted before the bind, in the same transaction, and completed with the
answer after it: a failed bind rolls both back (nothing half-written, and the retry runs
again), and a concurrent request with the same key waits on the primary key, then finds the
stored answer. Only successful answers are stored.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlalchemy.orm import Session

from ..errors import Conflict
from ..storage.tables import IdempotencyKey


def request_hash(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def stored_answer(session: Session, customer_id: int, key: str,
                  digest: str) -> tuple[int, dict] | None:
    """The first answer for this key and body; 409 when the key came with another body."""
    row = session.get(IdempotencyKey, (customer_id, key))
    if row is None or row.status == 0:
        return None
    if row.request_hash != digest:
        raise Conflict("Idempotency-Key was used with a different body", field="Idempotency-Key",
                       code="idempotency_conflict")
    return row.status, row.response


def reserve(session: Session, customer_id: int, key: str, digest: str, now: datetime) -> None:
    """Take the key for this transaction (a concurrent holder makes the flush wait or fail)."""
    session.add(IdempotencyKey(customer_id=customer_id, key=key, request_hash=digest, status=0,
                               response={}, created_at=now))
    session.flush()


def complete(session: Session, customer_id: int, key: str, status: int, body: dict) -> None:
    row = session.get(IdempotencyKey, (customer_id, key))
    row.status = status
    row.response = body
    session.flush()
