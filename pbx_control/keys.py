"""API keys: created for a customer, shown once, stored only as a salted hash.

A key reads ``pbx_<prefix>_<secret>``: the prefix (8 random hex digits) finds the row and
is what listings and ``keys revoke`` show; the secret is 32 random bytes. The stored hash is
``sha256$<salt>$<hex>`` of salt and the whole key. A fast hash is enough here: a key carries
256 random bits, so nobody can guess it from a leaked hash however quickly they hash;
slow password hashes exist to protect guessable, human-chosen secrets, and would cost every
API request tens of milliseconds for nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import InvalidInput, NotFound, PbxControlError, Unprocessable
from .storage.db import as_utc
from .storage.tables import ApiKey, Customer

logger = logging.getLogger(__name__)

KEY = re.compile(r"pbx_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
PREFIX = re.compile(r"pbx_[0-9a-f]{8}")


class InvalidKey(PbxControlError):
    """No key, or one that is not ours: the client is not identified."""

    code = "invalid_key"
    http_status = 401


class Forbidden(PbxControlError):
    """A known key that may not act: revoked, or its customer is disabled."""

    code = "forbidden"
    http_status = 403


@dataclass(frozen=True)
class Caller:
    """Who an API request acts for, as found from its key."""

    customer_id: int
    customer_name: str
    key_prefix: str


def _hash(key: str, salt: str) -> str:
    digest = hashlib.sha256((salt + key).encode()).hexdigest()
    return f"sha256${salt}${digest}"


def create_key(session: Session, customer: Customer, *, label: str | None,
               now: datetime) -> tuple[ApiKey, str]:
    """A new key for ``customer``: the row and the key text, which is never stored."""
    if label is not None and (len(label) > 128 or not label.isprintable()):
        raise InvalidInput("label: at most 128 printable characters", field="label")
    if customer.status != "active":
        raise Unprocessable(f"customer {customer.name!r} is {customer.status}",
                            field="customer", code="customer_disabled")

    prefix = "pbx_" + secrets.token_hex(4)
    key = f"{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(customer_id=customer.id, prefix=prefix, label=label, created_at=now,
                 key_hash=_hash(key, secrets.token_hex(8)))
    session.add(row)
    session.flush()
    logger.info("key %s created for customer %s", prefix, customer.name)
    return row, key


def revoke_key(session: Session, prefix: str, *, now: datetime) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == (prefix or "").strip()))
    if row is None:
        raise NotFound("no key with this prefix", field="prefix")
    if row.revoked_at is None:
        row.revoked_at = now
        session.flush()
        logger.info("key %s revoked", row.prefix)
    return row


def list_keys(session: Session, customer_id: int | None = None) -> list[tuple[ApiKey, str]]:
    """Keys with their customer's name, oldest first; only one customer's with an id."""
    query = select(ApiKey, Customer.name).join(Customer, Customer.id == ApiKey.customer_id)
    if customer_id is not None:
        query = query.where(ApiKey.customer_id == customer_id)
    return [(k, n) for k, n in session.execute(query.order_by(ApiKey.id))]


def verify_key(session: Session, key: str | None) -> Caller:
    """The caller a key stands for; InvalidKey (401) or Forbidden (403) otherwise."""
    match = KEY.fullmatch(key or "")
    if match is None:
        raise InvalidKey("a valid API key is required (Authorization: Bearer <key>)")
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == f"pbx_{match.group(1)}"))
    if row is None or not _matches(row.key_hash, key):
        raise InvalidKey("a valid API key is required (Authorization: Bearer <key>)")

    if row.revoked_at is not None:
        raise Forbidden("this API key has been revoked", code="key_revoked")
    customer = session.get(Customer, row.customer_id)
    if customer is None or customer.status != "active":
        raise Forbidden("this customer is disabled", code="customer_disabled")
    return Caller(customer.id, customer.name, row.prefix)


def _matches(stored: str, key: str) -> bool:
    try:
        scheme, salt, _ = stored.split("$", 2)
    except ValueError:
        return False
    return scheme == "sha256" and hmac.compare_digest(stored, _hash(key, salt))


def key_dict(row: ApiKey, customer_name: str | None = None) -> dict:
    return {"prefix": row.prefix, "customer": customer_name, "label": row.label,
            "created_at": as_utc(row.created_at), "revoked_at": as_utc(row.revoked_at),
            "active": row.revoked_at is None}
