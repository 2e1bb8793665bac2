"""Softphone accounts: a PBX directory user (or endpoint) and the subscriber it stands for.

An outbound AX call is decided on the authenticated user, never on the caller id it sends:
``subscriber_for`` turns the user into the subscriber's number. The user name is placed into
PBX dial strings (``user/NAME@domain``, ``PJSIP/NAME``), so only a plain alphabet is accepted.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import Conflict, InvalidInput, NotFound
from .numbers import mask, parse
from .storage.db import as_utc
from .storage.tables import Binding, Softphone

logger = logging.getLogger(__name__)

USERNAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise InvalidInput("softphone: user name must be 1-64 of A-Z a-z 0-9 _ . -",
                           field="softphone")
    return username


def add_softphone(
    session: Session, customer_id: int, username: str, subscriber: str, now: datetime,
    region: str = "CN",
) -> Softphone:
    username = check_username(username)
    subscriber = parse(subscriber, "subscriber", region)
    if session.scalar(select(Softphone.id).where(Softphone.username == username)) is not None:
        raise Conflict(f"softphone {username} exists", field="softphone",
                       code="softphone_exists")

    phone = Softphone(customer_id=customer_id, username=username, subscriber=subscriber,
                      created_at=now)
    session.add(phone)
    session.flush()
    logger.info("softphone %s added for %s", username, mask(subscriber))
    return phone


def get_softphone(session: Session, customer_id: int, username: str) -> Softphone:
    username = check_username(username)
    phone = session.scalar(select(Softphone).where(
        Softphone.username == username, Softphone.customer_id == customer_id))
    if phone is None:
        raise NotFound(f"no softphone {username}", field="softphone")
    return phone


def remove_softphone(session: Session, customer_id: int, username: str) -> Softphone:
    """Remove an account; refused while an active binding rings it."""
    phone = get_softphone(session, customer_id, username)
    in_use = session.scalar(select(Binding.id).where(
        Binding.customer_id == customer_id, Binding.softphone == phone.username,
        Binding.ended_at.is_(None)).limit(1))
    if in_use is not None:
        raise Conflict(f"softphone {username} is used by binding {in_use}",
                       field="softphone", code="softphone_in_use")

    session.delete(phone)
    session.flush()
    logger.info("softphone %s removed", username)
    return phone


def list_softphones(session: Session, customer_id: int) -> list[Softphone]:
    query = select(Softphone).where(Softphone.customer_id == customer_id)
    return list(session.scalars(query.order_by(Softphone.username)))


def subscriber_for(session: Session, username: str) -> tuple[int, str] | None:
    """(customer id, subscriber E.164) of an authenticated user, or None if unknown."""
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        return None
    row = session.execute(select(Softphone.customer_id, Softphone.subscriber).where(
        Softphone.username == username)).first()
    return (row[0], row[1]) if row else None


def softphone_dict(phone: Softphone) -> dict:
    return {"username": phone.username, "subscriber": phone.subscriber,
            "created_at": as_utc(phone.created_at)}
