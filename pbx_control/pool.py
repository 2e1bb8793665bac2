"""The number pool: import, list, retire, and the choice of an X for a new binding.

A number's ``state`` says whether it can take new bindings (``routing.NumberState``): available
(free, or shared by AXB pairs), dedicated (one AX/AXN/AXG binding), cooling (a released
dedicated number whose callers must not reach its next holder) and retired. The per-pair
cool-down is not a state: it lives in the released rows of ``binding_parties``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Row, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session

from .customers import check_text
from .errors import Conflict, InvalidInput, NotFound, PoolExhausted
from .numbers import mask, parse
from .routing import DEDICATED_MODES, Mode, NumberState
from .storage.db import as_utc
from .storage.tables import BindingParty, Number

logger = logging.getLogger(__name__)

CAPABILITIES = ("voice", "sms")


@dataclass
class AddResult:
    added: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def add_numbers(
    session: Session, customer_id: int, numbers: Iterable[str], *, carrier: str = "default",
    city: str | None = None, voice: bool = True, sms: bool = True, now: datetime,
    region: str = "CN",
) -> AddResult:
    """Import numbers into the customer's pool; all are parsed before any is written.

    A number already in the pool is reported as existing and left as it is, a retired one
    included: bringing a retired number back is not done here (its old callers may still
    dial it, so it needs a deliberate decision this module does not offer yet).
    """
    wanted = list(dict.fromkeys(parse(n, "number", region) for n in numbers))
    check_text(carrier, "carrier")
    check_text(city, "city")

    owners = _owners(session, wanted)
    foreign = [n for n in wanted if n in owners and owners[n] != customer_id]
    if foreign:
        raise Conflict(f"number {mask(foreign[0])} belongs to another customer",
                       field="number", code="number_taken")

    result = AddResult(existing=[n for n in wanted if n in owners])
    result.added = [n for n in wanted if n not in owners]
    session.add_all(
        Number(customer_id=customer_id, e164=n, carrier=carrier, city=city or None,
               voice=voice, sms=sms, state=NumberState.AVAILABLE.value, active_bindings=0,
               total_bindings=0, created_at=now)
        for n in result.added
    )
    session.flush()
    logger.info("pool: %d numbers added, %d already there", len(result.added),
                len(result.existing))
    return result


def _owners(session: Session, wanted: Sequence[str]) -> dict[str, int]:
    owners: dict[str, int] = {}
    for start in range(0, len(wanted), 5000):
        chunk = wanted[start:start + 5000]
        owners.update(session.execute(select(Number.e164, Number.customer_id).where(
            Number.e164.in_(chunk))).all())
    return owners


def list_numbers(
    session: Session, customer_id: int, *, state: str | None = None, city: str | None = None,
    carrier: str | None = None, capability: str | None = None, limit: int = 100,
    after_id: int | None = None,
) -> list[Number]:
    query = select(Number).where(Number.customer_id == customer_id)
    if state is not None:
        query = query.where(Number.state == NumberState(state).value)
    if city is not None:
        query = query.where(Number.city == city)
    if carrier is not None:
        query = query.where(Number.carrier == carrier)
    if capability is not None:
        if capability not in CAPABILITIES:
            raise InvalidInput("capability: voice or sms", field="capability")
        query = query.where(getattr(Number, capability).is_(True))
    if after_id is not None:
        query = query.where(Number.id > after_id)
    return list(session.scalars(query.order_by(Number.id).limit(limit)))


def get_number(session: Session, customer_id: int, x: str, *, region: str = "CN",
               lock: bool = False) -> Number:
    """The customer's pool number ``x``; another customer's number is not found, not shown."""
    e164 = parse(x, "x", region)
    query = select(Number).where(Number.e164 == e164, Number.customer_id == customer_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    number = session.scalar(query)
    if number is None:
        raise NotFound(f"x: {mask(e164)} is not in the pool", field="x")
    return number


def pool_members(session: Session, numbers: Iterable[str]) -> set[str]:
    """Which of these numbers are virtual numbers of any customer (a party must not be)."""
    numbers = [n for n in numbers if n]
    if not numbers:
        return set()
    return set(session.scalars(select(Number.e164).where(Number.e164.in_(numbers))))


def retire_number(session: Session, customer_id: int, x: str, *, now: datetime,
                  force: bool = False, region: str = "CN") -> Number:
    """Take X out of service; its active bindings block this unless ``force`` ends them."""
    from .bindings import end_binding, find_bindings

    number = get_number(session, customer_id, x, region=region, lock=True)
    active = find_bindings(session, customer_id, x=number.e164, limit=None)
    if active and not force:
        raise Conflict(f"x: {mask(number.e164)} has {len(active)} active bindings "
                       "(--force ends them)", field="x", code="number_in_use")

    for binding in active:
        end_binding(session, binding, now=now, reason="retired", cooldown_s=0)
    number.state = NumberState.RETIRED.value
    number.retired_at = now
    number.cooling_until = None
    session.flush()
    logger.info("pool: %s retired, %d bindings ended", mask(number.e164), len(active))
    return number


def number_counts(session: Session, customer_id: int) -> list[dict]:
    query = (select(Number.city, Number.state, func.count())
             .where(Number.customer_id == customer_id)
             .group_by(Number.city, Number.state).order_by(Number.city, Number.state))
    return [{"city": c, "state": s, "count": n} for c, s, n in session.execute(query)]


def refresh_cooling(session: Session, now: datetime, customer_id: int | None = None) -> int:
    """Numbers whose dedicated cool-down has ended become available again."""
    query = update(Number).where(Number.state == NumberState.COOLING.value,
                                 Number.cooling_until <= now)
    if customer_id is not None:
        query = query.where(Number.customer_id == customer_id)
    query = query.values(state=NumberState.AVAILABLE.value, cooling_until=None)
    count = session.execute(query, execution_options={"synchronize_session": False}).rowcount
    if count:
        logger.info("pool: %d numbers back from cool-down", count)
    return count


def allocate(
    session: Session, customer_id: int, parties: Sequence[str], *, mode: Mode,
    city: str | None = None, city_strict: bool = True, now: datetime, settings,
    exclude: Sequence[int] = (), refresh: bool = True,
) -> Row:
    """Pick and lock the least used X that fits a new binding of ``parties``: its row (id, e164).

    One indexed query (two when a city falls back to any city). On PostgreSQL the row is
    locked with SKIP LOCKED, so concurrent binds spread over the pool instead of queueing on
    the same least-used number; the unique pair index stays the last word. ``refresh=False``
    leaves out the cool-down pass: ``bind`` already asked whether any cool-down has ended.
    The row is read through Core, not loaded as an ORM ``Number``: a bind writes the number
    through Core too, and the ORM's loading was a large part of a bind's CPU.

    Known shortcoming: a number locked by a concurrent bind is skipped, so when it is the
    only one that fits, this bind says pool exhausted although the other may yet fail.
    Accepted: waiting would serialise every bind of a customer on its least-used number.
    """
    if refresh:
        refresh_cooling(session, now, customer_id)
    mode = Mode(mode)
    params = {"customer": customer_id, "parties": list(parties), "city": city,
              "cutoff": now - timedelta(seconds=settings.routing.pair_cooldown_s),
              "share_limit": settings.routing.max_axb_per_number, "exclude": list(exclude)}
    dedicated = mode in DEDICATED_MODES

    connection = session.connection()
    row = connection.execute(_candidates(dedicated, bool(exclude), city is not None),
                             params).first()
    if row is None and city is not None and not city_strict:
        row = connection.execute(_candidates(dedicated, bool(exclude), False), params).first()
    if row is None:
        where = f" in {city}" if city else ""
        raise PoolExhausted(f"pool exhausted: no number{where} fits this {mode.value} "
                            "binding", field="x")
    return row


@functools.cache
def _candidates(dedicated: bool, excluding: bool, in_city: bool):
    """The allocation query, built once per shape; its values are bound at execution."""
    held = exists().where(
        BindingParty.x == Number.e164,
        BindingParty.party.in_(bindparam("parties", expanding=True)),
        or_(BindingParty.active.is_(True), BindingParty.released_at > bindparam("cutoff")),
    )
    if dedicated:
        usage = Number.active_bindings == 0
    else:
        usage = Number.active_bindings < bindparam("share_limit")
    query = select(Number.id, Number.e164).where(
        Number.customer_id == bindparam("customer"),
        Number.state == NumberState.AVAILABLE.value,
        Number.voice.is_(True),
        usage,
        ~held,
    )
    if excluding:
        query = query.where(Number.id.not_in(bindparam("exclude", expanding=True)))
    if in_city:
        query = query.where(Number.city == bindparam("city"))
    query = query.order_by(Number.active_bindings, Number.total_bindings, Number.id).limit(1)
    return query.with_for_update(skip_locked=True)


def number_dict(number: Number) -> dict:
    return {
        "x": number.e164,
        "carrier": number.carrier,
        "city": number.city,
        "capabilities": [c for c in CAPABILITIES if getattr(number, c)],
        "state": number.state,
        "cooling_until": as_utc(number.cooling_until),
        "active_bindings": number.active_bindings,
        "total_bindings": number.total_bindings,
        "created_at": as_utc(number.created_at),
        "retired_at": as_utc(number.retired_at),
    }
