"""Refused callers: a number blocked for a whole customer (``x`` empty) or on one X.

Routing reads it on every inbound call (``is_blacklisted``, one indexed lookup over the
unique (customer, number, x) key); operators edit it with ``blacklist add|remove|list``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .customers import check_text
from .errors import Conflict, NotFound
from .numbers import mask, parse
from .pool import get_number
from .storage.db import as_utc
from .storage.tables import BlacklistEntry

logger = logging.getLogger(__name__)

WHOLE_CUSTOMER = ""


def add_entry(
    session: Session, customer_id: int, number: str, *, x: str | None = None,
    reason: str | None = None, now: datetime, region: str = "CN",
) -> BlacklistEntry:
    """Refuse ``number`` on X (one of the customer's pool numbers) or, without X, on all."""
    caller = parse(number, "number", region)
    scope = _scope(session, customer_id, x, region)
    if reason is not None and reason != "":
        check_text(reason, "reason", limit=256)
    if _find(session, customer_id, caller, scope) is not None:
        raise Conflict(f"{mask(caller)} is already blacklisted {_where(scope)}",
                       field="number", code="blacklisted_already")

    entry = BlacklistEntry(customer_id=customer_id, number=caller, x=scope,
                           reason=reason or None, created_at=now)
    session.add(entry)
    try:
        session.flush()
    except IntegrityError:
        # A concurrent add of the same entry won the unique key.
        raise Conflict(f"{mask(caller)} is already blacklisted {_where(scope)}",
                       field="number", code="blacklisted_already") from None
    logger.info("blacklisted %s %s", mask(caller), _where(scope))
    return entry


def remove_entry(
    session: Session, customer_id: int, number: str, *, x: str | None = None,
    region: str = "CN",
) -> None:
    caller = parse(number, "number", region)
    scope = WHOLE_CUSTOMER if not x else parse(x, "x", region)
    entry = _find(session, customer_id, caller, scope)
    if entry is None:
        raise NotFound(f"{mask(caller)} is not blacklisted {_where(scope)}", field="number")

    session.delete(entry)
    session.flush()
    logger.info("removed %s from the blacklist %s", mask(caller), _where(scope))


def list_entries(
    session: Session, customer_id: int, *, x: str | None = None, region: str = "CN"
) -> list[BlacklistEntry]:
    """All entries, or with ``x`` only those of that X ('' for the whole-customer ones)."""
    query = select(BlacklistEntry).where(BlacklistEntry.customer_id == customer_id)
    if x is not None:
        scope = WHOLE_CUSTOMER if x == "" else parse(x, "x", region)
        query = query.where(BlacklistEntry.x == scope)
    order = (BlacklistEntry.x, BlacklistEntry.number)
    return list(session.scalars(query.order_by(*order)))


def is_blacklisted(session: Session, customer_id: int, caller: str | None, x: str) -> bool:
    """Whether ``caller`` (E.164, None when withheld) is refused on X of this customer."""
    if caller is None:
        return False
    return session.scalar(blacklisted_query(customer_id, caller, x)) is not None


def blacklisted_query(customer_id, caller, x):
    """The lookup ``is_blacklisted`` runs, for callers folding it into a larger statement.

    ``customer_id``, ``caller`` and ``x`` may be values or SQL expressions.
    """
    return select(BlacklistEntry.id).where(
        BlacklistEntry.customer_id == customer_id,
        BlacklistEntry.number == caller,
        BlacklistEntry.x.in_([WHOLE_CUSTOMER, x]),
    ).limit(1)


def entry_dict(entry: BlacklistEntry) -> dict:
    return {
        "id": entry.id,
        "number": entry.number,
        "x": entry.x or None,
        "scope": "x" if entry.x else "customer",
        "reason": entry.reason,
        "created_at": as_utc(entry.created_at),
    }


def _scope(session: Session, customer_id: int, x: str | None, region: str) -> str:
    if not x:
        return WHOLE_CUSTOMER
    # A typo in X would otherwise block nobody, silently.
    return get_number(session, customer_id, x, region=region).e164


def _find(session: Session, customer_id: int, caller: str, scope: str):
    return session.scalar(select(BlacklistEntry).where(
        BlacklistEntry.customer_id == customer_id, BlacklistEntry.number == caller,
        BlacklistEntry.x == scope))


def _where(scope: str) -> str:
    return f"on {mask(scope)}" if scope else "for the whole customer"
