"""A customer's webhook: its URL and the signing secret, shown once when it is created.

The secret is stored as it is (not hashed) because pbx-control needs it to sign every
delivery; it never appears in a listing or a log, only in the answer that creates it.

Registering a webhook does not replay old calls: events a customer without a webhook
collected (the pusher marks them skipped only when one runs) are skipped in the same
transaction as the registration. A customer that already had a webhook keeps its pending
events: a changed URL receives them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..storage.tables import CallEvent, Customer
from .signing import new_secret
from .targets import Target

logger = logging.getLogger(__name__)

SKIPPED_BEFORE = "skipped: before webhook registration"


class WebhookSet(NamedTuple):
    url: str
    secret: str | None  # only when created or rotated
    skipped: int  # undelivered events from before the registration, now skipped


def set_webhook(session: Session, customer: Customer, checked: Target, *, now: datetime,
                rotate_secret: bool = False) -> WebhookSet:
    """Store a URL that passed ``WebhookPolicy.check`` (run it before the transaction: it
    resolves the host name). Lock the customer row first (``with_for_update``): the check
    for an earlier webhook and the skipping must not race another registration."""
    skipped = 0 if _hooked(customer) else _skip_backlog(session, customer.id, now)

    secret = None
    if customer.webhook_secret is None or rotate_secret:
        secret = new_secret()
        customer.webhook_secret = secret
    customer.webhook_url = str(checked.url)
    session.flush()
    logger.info("customer %s: webhook set to host %s (%d earlier events skipped)",
                customer.name, checked.host, skipped)
    return WebhookSet(customer.webhook_url, secret, skipped)


def _hooked(customer: Customer) -> bool:
    # As the pusher sees it: without both a URL and a secret nothing is delivered.
    return customer.webhook_url is not None and customer.webhook_secret is not None


def _skip_backlog(session: Session, customer_id: int, now: datetime) -> int:
    """Mark skipped every event of the customer still in the outbox.

    Not filtered on ``created_at``: that is the PBX's time of the event, which need not
    agree with this clock. What is in the outbox now was recorded before the registration.
    """
    result = session.execute(
        update(CallEvent)
        .where(CallEvent.customer_id == customer_id, CallEvent.delivered_at.is_(None))
        .values(delivered_at=now, last_error=SKIPPED_BEFORE),
        execution_options={"synchronize_session": False})
    return result.rowcount or 0


def clear_webhook(session: Session, customer: Customer) -> None:
    if customer.webhook_url is None:
        raise NotFound("no webhook is set", field="url")
    customer.webhook_url = None
    customer.webhook_secret = None
    session.flush()
    logger.info("customer %s: webhook removed", customer.name)
