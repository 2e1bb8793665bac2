"""A customer's webhook: its URL and the signing secret, shown once when it is created.

The secret is stored as it is (not hashed) because pbx-control needs it to sign every
delivery; it never appears in a listing or a log, only in the answer that creates it.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from ..errors import NotFound
from ..storage.tables import Customer
from .signing import new_secret
from .targets import Target

logger = logging.getLogger(__name__)


def set_webhook(session: Session, customer: Customer, checked: Target, *,
                rotate_secret: bool = False) -> tuple[str, str | None]:
    """Store a URL that passed ``WebhookPolicy.check`` (run it before the transaction: it
    resolves the host name); returns the URL and the new secret, if one was made."""
    secret = None
    if customer.webhook_secret is None or rotate_secret:
        secret = new_secret()
        customer.webhook_secret = secret
    customer.webhook_url = str(checked.url)
    session.flush()
    logger.info("customer %s: webhook set to host %s", customer.name, checked.host)
    return customer.webhook_url, secret


def clear_webhook(session: Session, customer: Customer) -> None:
    if customer.webhook_url is None:
        raise NotFound("no webhook is set", field="url")
    customer.webhook_url = None
    customer.webhook_secret = None
    session.flush()
    logger.info("customer %s: webhook removed", customer.name)
