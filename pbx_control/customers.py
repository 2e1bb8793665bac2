"""Customers: the tenants every number, binding and record belongs to.

The CLI acts for one customer (``--customer``, default ``default``); only the configured
default customer is created on first use, others with ``customers add``. The HTTP API finds
the customer from its API key (``keys.py``). A disabled customer keeps its data but cannot
provision.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import Conflict, InvalidInput, NotFound, Unprocessable
from .storage.db import as_utc
from .storage.tables import Customer

logger = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
STATUSES = ("active", "disabled")


def check_name(name: str, field: str = "customer") -> str:
    """Names end up in CLI output and log lines: keep them to a plain, bounded alphabet."""
    text = (name or "").strip()
    if not NAME.fullmatch(text):
        raise InvalidInput(f"{field}: use 1-64 of A-Z a-z 0-9 _ . -", field=field)
    return text


def check_text(value: str | None, field: str, limit: int = 64) -> str | None:
    """Free text (a city, a carrier, a note): 1-``limit`` printable characters or None.

    Line breaks and other control characters would forge extra lines in logs, CSV exports
    and CLI tables, so they are refused rather than stripped.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(f"{field}: 1-{limit} characters", field=field)
    if not value.isprintable():
        raise InvalidInput(f"{field}: control characters (line breaks, tabs) are not allowed",
                           field=field)
    return value


def customer_by_name(session: Session, name: str) -> Customer:
    customer = session.scalar(select(Customer).where(Customer.name == name))
    if customer is None:
        raise NotFound(f"no customer named {name!r}", field="customer")
    return customer


def create_customer(session: Session, name: str, now: datetime) -> Customer:
    name = check_name(name)
    if session.scalar(select(Customer.id).where(Customer.name == name)) is not None:
        raise Conflict(f"customer {name!r} exists", field="customer", code="customer_exists")

    customer = Customer(name=name, status="active", created_at=now)
    session.add(customer)
    session.flush()
    logger.info("customer %s created (id %s)", name, customer.id)
    return customer


def ensure_customer(session: Session, name: str, now: datetime) -> Customer:
    """The customer called ``name``, created if it does not exist yet."""
    existing = session.scalar(select(Customer).where(Customer.name == name))
    if existing is not None:
        return existing
    return create_customer(session, name, now)


def list_customers(session: Session) -> list[Customer]:
    return list(session.scalars(select(Customer).order_by(Customer.name)))


def set_customer_status(session: Session, name: str, status: str) -> Customer:
    if status not in STATUSES:
        raise InvalidInput(f"status: one of {', '.join(STATUSES)}", field="status")
    customer = customer_by_name(session, name)
    customer.status = status
    logger.info("customer %s is now %s", name, status)
    return customer


def require_active(customer: Customer) -> Customer:
    """Provisioning (numbers, bindings, groups, softphones) needs an active customer."""
    if customer.status != "active":
        raise Unprocessable(f"customer {customer.name!r} is {customer.status}",
                            code="customer_disabled")
    return customer


def customer_dict(customer: Customer) -> dict:
    return {"id": customer.id, "name": customer.name, "status": customer.status,
            "created_at": as_utc(customer.created_at)}
