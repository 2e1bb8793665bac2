"""Bindings: bind, unbind, update, query, and the sweep of expired bindings.

A binding joins X to its parties. Each (X, party) of an active binding is a row of
``binding_parties``, unique among active rows by a partial index, so two binds racing for the
same pair can never both win: the loser gets the same ``pair_in_use`` conflict as a bind that
found the pair taken. Locks are always taken in one order (the X row, then its bindings), so
bind, unbind and the sweeper never deadlock one another.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, exists, insert, or_, select, text, union_all, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from . import config
from .binding_rules import (
    BindPlan,
    future_expiry,
    new_binding_id,
    parse_expires,
    plan_bind,
    plan_parties_update,
)
from .errors import Conflict, NotFound, Unprocessable
from .numbers import mask, parse
from .pool import allocate, get_number, refresh_cooling
from .routing import DEDICATED_MODES, BindingView, Direction, Mode, NumberState
from .storage.db import as_utc, utcnow
from .storage.tables import Binding, BindingParty, Number

logger = logging.getLogger(__name__)

__all__ = [
    "UNSET", "BindRequest", "bind", "bind_or_retry", "unbind", "update_binding", "get_binding",
    "find_bindings", "binding_dict", "binding_view", "sweep_expired", "parse_expires",
    "end_binding",
]

UNSET = object()
ALLOCATION_ATTEMPTS = 5


@dataclass
class BindRequest:
    """What a customer asks for; numbers in any form ``numbers.parse`` accepts."""

    mode: Mode
    a: str
    b: str | None = None
    x: str | None = None
    city: str | None = None
    city_strict: bool = True
    expires_at: datetime | None = None
    out_id: str | None = None
    record: bool = False
    direction: Direction = Direction.BOTH
    sms: bool = True
    allow_withheld: bool = False
    default_party: str | None = None
    group: str | None = None
    softphone: str | None = None
    primary: bool = False
    max_call_s: int | None = None


class _PairTaken(Exception):
    """The unique pair index refused the insert: another bind won the race."""


def _routing(settings) -> config.RoutingSettings:
    return settings.routing if settings is not None else config.RoutingSettings()


# --- bind -------------------------------------------------------------------------------


def bind(session: Session, customer_id: int, request: BindRequest, *, now: datetime,
         settings, region: str = "CN") -> Binding:
    """Create a binding, or return the active one this request repeats (same out_id)."""
    binding, _ = bind_or_retry(session, customer_id, request, now=now, settings=settings,
                               region=region)
    return binding


def bind_or_retry(session: Session, customer_id: int, request: BindRequest, *, now: datetime,
                  settings, region: str = "CN") -> tuple[Binding, bool]:
    """Like ``bind``, and say whether the binding is new (True) or repeated by out_id."""
    plan = plan_bind(session, customer_id, request, now, region)

    _lock_key(session, customer_id, plan.out_id)
    if plan.primary:
        _lock_key(session, customer_id, f"primary:{plan.a}")
    retried = _retry_of(session, customer_id, plan, now, settings)
    if retried is not None:
        return retried, False

    if plan.x is not None:
        binding = _bind_on_x(session, customer_id, plan, now, settings)
    else:
        binding = _bind_allocated(session, customer_id, plan, now, settings)
    logger.info("binding %s: %s on %s for %s", binding.id, plan.mode.value, mask(binding.x),
                ", ".join(mask(p) for _, p in plan.parties))
    return binding, True


def _lock_key(session, customer_id: int, name: str | None) -> None:
    """Serialise binds of the customer naming one key until the first one's transaction ends.

    Keys are an out_id (without the lock, concurrent retries all miss the not yet committed
    binding and allocate: with SKIP LOCKED some find the pool "exhausted" before the out_id
    index could answer) and the subscriber of a primary AX bind. SQLite needs nothing:
    BEGIN IMMEDIATE already serialises every writer.
    """
    if name is None or session.get_bind().dialect.name != "postgresql":
        return
    key = zlib.crc32(name.encode()) - 2**31
    session.execute(text("SELECT pg_advisory_xact_lock(CAST(:customer AS integer), "
                         "CAST(:key AS integer))"), {"customer": customer_id, "key": key})


def _retry_of(session, customer_id, plan: BindPlan, now, settings) -> Binding | None:
    """The active binding with this out_id if the request repeats it; a clash otherwise."""
    if plan.out_id is None:
        return None
    existing = session.scalar(select(Binding).where(
        Binding.customer_id == customer_id, Binding.out_id == plan.out_id,
        Binding.ended_at.is_(None)))
    if existing is None:
        return None

    if _expired(existing, now):
        end_binding(session, existing, now=now, reason="expired",
                    cooldown_s=_routing(settings).dedicated_cooldown_s)
        return None
    if existing.request_hash != plan.request_hash:
        raise Conflict(f"out_id {plan.out_id!r} names another active binding",
                       field="out_id", code="out_id_conflict")
    return existing


def _bind_on_x(session, customer_id, plan: BindPlan, now, settings) -> Binding:
    if plan.cooling_due:
        refresh_cooling(session, now, customer_id)
    number = get_number(session, customer_id, plan.x, lock=True)
    if number.state != NumberState.RETIRED:
        _check_pair_cooldown(session, number.e164, plan.party_numbers, now, settings)
        # Before the state check: an expired dedicated binding not yet swept still marks X
        # dedicated; ended here, X shows the state it really has (cooling, most often).
        _close_expired_on(session, number, plan.party_numbers, now, settings,
                          dedicated=plan.mode in DEDICATED_MODES)
    _check_state(number, plan.mode, now)
    _check_usage(number, plan.mode, settings)

    try:
        binding = _insert(session, customer_id, number.id, number.e164, plan, now)
    except _PairTaken:
        retried = _retry_of(session, customer_id, plan, now, settings)
        if retried is not None:
            return retried
        raise _pair_in_use(number) from None
    if binding is None:
        raise _pair_in_use(number)
    return binding


def _bind_allocated(session, customer_id, plan: BindPlan, now, settings) -> Binding:
    tried: list[int] = []
    for attempt in range(ALLOCATION_ATTEMPTS):
        number = allocate(session, customer_id, plan.party_numbers, mode=plan.mode,
                          city=plan.city, city_strict=plan.city_strict, now=now,
                          settings=settings, exclude=tried,
                          refresh=plan.cooling_due and not tried)
        tried.append(number.id)

        try:
            binding = _insert(session, customer_id, number.id, number.e164, plan, now)
        except _PairTaken:
            retried = _retry_of(session, customer_id, plan, now, settings)
            if retried is not None:
                return retried
            logger.warning("bind: lost the race for %s (attempt %d)", mask(number.e164),
                           attempt + 1)
            continue
        # None: the candidate query read the pairs before the row lock was granted, and a
        # bind that held the lock meanwhile took one of them. Another X will do.
        if binding is not None:
            return binding
    raise Conflict("every number tried was taken by concurrent binds",
                   field="x", code="pair_in_use")


def _check_state(number: Number, mode: Mode, now: datetime) -> None:
    x = mask(number.e164)
    if number.state == NumberState.RETIRED:
        raise Conflict(f"x: {x} is retired", field="x", code="number_unavailable")
    if number.state == NumberState.COOLING:
        until = as_utc(number.cooling_until)
        raise Conflict(f"x: {x} cools down until {until:%Y-%m-%d %H:%M}Z", field="x",
                       code="number_unavailable")
    if not number.voice:
        raise Unprocessable(f"x: {x} has no voice capability", field="x", code="no_voice")
    if number.state == NumberState.DEDICATED:
        raise Conflict(f"x: {x} is dedicated to another binding", field="x",
                       code="number_in_use")


def _check_usage(number: Number, mode: Mode, settings) -> None:
    x = mask(number.e164)
    if mode in DEDICATED_MODES and number.active_bindings > 0:
        raise Conflict(f"x: {x} is shared by {number.active_bindings} AXB bindings",
                       field="x", code="number_in_use")
    limit = _routing(settings).max_axb_per_number
    if mode == Mode.AXB and number.active_bindings >= limit:
        raise Conflict(f"x: {x} already carries {limit} bindings", field="x",
                       code="number_full")


def _check_pair_cooldown(session, x: str, parties, now: datetime, settings,
                         exclude_binding: str | None = None) -> None:
    """Refuse a party whose pair with X ended less than the pair cool-down ago.

    Allocation never picks such an X; a bind naming X, or a party change, must not either:
    whoever called that party through X would reach the new binding's other side. A pair of
    an expired binding not yet swept counts as ended at its expiry.
    """
    cooldown = _routing(settings).pair_cooldown_s
    if cooldown <= 0:
        return
    cutoff = now - timedelta(seconds=cooldown)
    released = select(BindingParty.party, BindingParty.released_at).where(
        BindingParty.x == x, BindingParty.party.in_(list(parties)),
        BindingParty.active.is_(False), BindingParty.released_at > cutoff)
    expired = (
        select(BindingParty.party, Binding.expires_at)
        .join(Binding, Binding.id == BindingParty.binding_id)
        .where(BindingParty.x == x, BindingParty.party.in_(list(parties)),
               BindingParty.active.is_(True), Binding.ended_at.is_(None),
               Binding.expires_at <= now, Binding.expires_at > cutoff))
    if exclude_binding is not None:
        released = released.where(BindingParty.binding_id != exclude_binding)
        expired = expired.where(BindingParty.binding_id != exclude_binding)
    ended = [(party, as_utc(at)) for party, at in session.execute(union_all(released, expired))]
    if not ended:
        return

    party, at = max(ended, key=lambda row: row[1])
    until = at + timedelta(seconds=cooldown)
    raise Conflict(f"x: {mask(party)} was bound on {mask(x)} until {at:%Y-%m-%d %H:%M}Z; the "
                   f"pair cools down until {until:%Y-%m-%d %H:%M}Z", field="x",
                   code="pair_cooling")


def _pair_in_use(number: Number) -> Conflict:
    return Conflict(f"a party is already bound on {mask(number.e164)}",
                    field="x", code="pair_in_use")


def _held(session, x: str, parties, exclude_binding: str | None = None) -> list[str]:
    """The parties that already hold an active pair with X."""
    query = select(BindingParty.party).where(
        BindingParty.x == x, BindingParty.party.in_(list(parties)),
        BindingParty.active.is_(True))
    if exclude_binding is not None:
        query = query.where(BindingParty.binding_id != exclude_binding)
    return list(session.scalars(query))


def _close_expired_on(session, number: Number, parties, now, settings,
                      dedicated: bool = False) -> None:
    """End the expired, not yet swept bindings that stand in the way of this one.

    Those holding one of ``parties`` on X, or any on X when a dedicated binding wants the
    whole number. Routing already ignores them; ending them here lets the new binding take
    their place in the same transaction instead of waiting for the sweeper. The X row is
    locked by the caller.
    """
    colliding = select(BindingParty.binding_id).where(
        BindingParty.x == number.e164, BindingParty.party.in_(list(parties)),
        BindingParty.active.is_(True))
    query = select(Binding).where(
        Binding.number_id == number.id, Binding.ended_at.is_(None),
        Binding.expires_at <= now)
    if not dedicated:
        query = query.where(Binding.id.in_(colliding))

    for stale in session.scalars(query).all():
        _end_locked(session, number.id, stale, now, "expired",
                    _routing(settings).dedicated_cooldown_s)


# Tests turn this off to reach the unique pair index, as a writer racing the check would.
CHECK_HELD_PAIRS = True


def _insert(session, customer_id, number_id: int, x: str, plan: BindPlan,
            now) -> Binding | None:
    """Write the binding, its pairs and X's counters; None when a party already holds X.

    The caller holds the X row locked, and every writer of pairs locks X first, so the
    held-pair check made inside the write sees every pair that could collide. The unique
    index still has the last word: a pair it refuses is a lost race (_PairTaken), with
    nothing written and the transaction still usable for another X.

    Core, not the ORM unit of work: on PostgreSQL one statement and no savepoint, where the
    ORM took seven (savepoint, the flushes of the binding, its pairs and the counters,
    release, the number's refresh). The Binding returned is built from the values written,
    not read back.
    """
    values = plan.binding_values(new_binding_id(now), customer_id, number_id, x, now)
    connection = session.connection()
    on_postgresql = connection.dialect.name == "postgresql"
    # PostgreSQL's write reports a lost race instead of raising it. What it cannot report is
    # a foreign key gone (the allow-group deleted meanwhile): a group bind keeps a savepoint.
    guarded = not on_postgresql or plan.group_id is not None
    try:
        with connection.begin_nested() if guarded else contextlib.nullcontext():
            if on_postgresql:
                written = _write_postgresql(connection, values, plan)
            else:
                written = _write_sqlite(connection, values, plan)
    except IntegrityError:
        raise _PairTaken() from None
    if not written:
        return None
    if plan.primary:
        _clear_primary(session, customer_id, plan.a, values["id"])

    _reload_number(session, number_id, "active_bindings", "total_bindings", "state")
    return Binding(**values)


def _write_postgresql(connection, values: dict, plan: BindPlan) -> bool:
    """One statement; False when a party holds a pair on X, _PairTaken on a lost race."""
    free, bound, counted = connection.execute(_pg_insert(CHECK_HELD_PAIRS), {
        **values, "roles": [role for role, _ in plan.parties], "parties": plan.party_numbers,
        "dedicated": plan.mode in DEDICATED_MODES}).one()
    if not free:
        return False
    if counted:
        return True

    # The unique index refused the binding (its out_id, taken meanwhile) or one of its pairs.
    # Undo what the statement did write: without a savepoint, nothing else will.
    if bound:
        connection.execute(delete(BindingParty.__table__).where(
            BindingParty.binding_id == values["id"]))
        connection.execute(delete(Binding.__table__).where(Binding.id == values["id"]))
    raise _PairTaken()


def _write_sqlite(connection, values: dict, plan: BindPlan) -> bool:
    """False, with nothing written, when a party holds a pair on X (inside a savepoint).

    SQLite cannot write from a WITH clause: three statements, the first checking the pairs.
    """
    inserted = connection.execute(_insert_binding(CHECK_HELD_PAIRS),
                                  {**values, "parties": plan.party_numbers})
    if inserted.rowcount == 0:
        return False
    connection.execute(insert(BindingParty.__table__), [
        {"binding_id": values["id"], "x": values["x"], "party": party, "role": role,
         "active": True} for role, party in plan.parties])
    connection.execute(_count_binding(plan.mode in DEDICATED_MODES),
                       {"number_id": values["number_id"]})
    return True


_BINDING_COLUMNS = (
    "id", "customer_id", "mode", "number_id", "x", "a", "b", "default_party", "softphone",
    "group_id", "direction", "record", "sms", "allow_withheld", "is_primary", "max_call_s",
    "out_id", "request_hash", "created_at", "updated_at", "expires_at")


@functools.cache
def _pg_insert(check_held: bool):
    """Pairs check, binding, pairs and counters in one statement (PostgreSQL).

    Returns (free, bound, counted): no party held a pair on X, the binding row was written,
    the counters were (so every pair was). ON CONFLICT DO NOTHING lets the unique indexes
    refuse a row without aborting the transaction; the counters move only if every pair
    went in.
    """
    table = Binding.__table__
    # Parameters in a SELECT list carry no type of their own: each is cast to its column's.
    casts = ", ".join(
        f"CAST(:{name} AS {table.c[name].type.compile(dialect=postgresql.dialect())})"
        for name in _BINDING_COLUMNS)
    held = ("WHERE NOT EXISTS (SELECT 1 FROM binding_parties WHERE x = :x "
            "AND party = ANY(CAST(:parties AS varchar[])) AND active)") if check_held else ""
    return text(f"""
        WITH free AS (SELECT 1 {held}),
        new_binding AS (
            INSERT INTO bindings ({", ".join(_BINDING_COLUMNS)})
            SELECT {casts} FROM free
            ON CONFLICT DO NOTHING
            RETURNING id),
        new_parties AS (
            INSERT INTO binding_parties (binding_id, x, party, role, active)
            SELECT new_binding.id, CAST(:x AS varchar), p.party, p.role, true
            FROM new_binding, unnest(CAST(:roles AS varchar[]), CAST(:parties AS varchar[]))
                AS p (role, party)
            ON CONFLICT DO NOTHING
            RETURNING 1),
        counted AS (
            UPDATE numbers
            SET active_bindings = active_bindings + 1, total_bindings = total_bindings + 1,
                state = CASE WHEN CAST(:dedicated AS boolean) THEN 'dedicated' ELSE state END
            WHERE id = CAST(:number_id AS integer)
              AND (SELECT count(*) FROM new_parties) = cardinality(CAST(:parties AS varchar[]))
            RETURNING 1)
        SELECT (SELECT count(*) FROM free), (SELECT count(*) FROM new_binding),
               (SELECT count(*) FROM counted)""")


@functools.cache
def _insert_binding(check_held: bool):
    """The binding row, written only if no party holds an active pair on X (any database)."""
    table = Binding.__table__
    row = select(*(bindparam(name, type_=table.c[name].type) for name in _BINDING_COLUMNS))
    if check_held:
        row = row.where(~exists().where(
            BindingParty.x == bindparam("x"),
            BindingParty.party.in_(bindparam("parties", expanding=True)),
            BindingParty.active.is_(True)))
    return insert(table).from_select(list(_BINDING_COLUMNS), row)


@functools.cache
def _count_binding(dedicated: bool):
    query = update(Number.__table__).where(Number.id == bindparam("number_id")).values(
        active_bindings=Number.active_bindings + 1, total_bindings=Number.total_bindings + 1)
    if dedicated:
        query = query.values(state=NumberState.DEDICATED.value)
    return query


def _clear_primary(session, customer_id: int, a: str, keep: str) -> None:
    """A new primary AX binding takes the flag from A's other active ones (routing needs
    exactly one to pick the X shown on A's outbound calls). Other customers' bindings of the
    same A are not this customer's to change."""
    session.execute(
        update(Binding)
        .where(Binding.customer_id == customer_id, Binding.a == a, Binding.id != keep,
               Binding.mode == Mode.AX.value, Binding.ended_at.is_(None),
               Binding.is_primary.is_(True))
        .values(is_primary=False),
        execution_options={"synchronize_session": False})


# --- end ----------------------------------------------------------------------------------


def unbind(session: Session, customer_id: int, binding_id: str, *, now: datetime,
           settings=None) -> Binding:
    binding = get_binding(session, customer_id, binding_id)
    if binding.ended_at is not None:
        raise Unprocessable(f"binding {binding.id} has already ended", field="id",
                            code="already_ended")

    if not end_binding(session, binding, now=now, reason="unbound",
                       cooldown_s=_routing(settings).dedicated_cooldown_s):
        raise Unprocessable(f"binding {binding.id} has already ended", field="id",
                            code="already_ended")
    logger.info("binding %s unbound from %s", binding.id, mask(binding.x))
    return binding


def end_binding(session: Session, binding: Binding, *, now: datetime, reason: str,
                cooldown_s: int) -> bool:
    """End a binding and release its pairs; False if someone else ended it first.

    The X row is locked before the binding, the order every writer keeps.
    """
    return _end_locked(session, binding.number_id, binding, now, reason, cooldown_s)


def _end_locked(session, number_id: int, binding: Binding, now, reason, cooldown_s) -> bool:
    """Core, not the ORM: on PostgreSQL one statement (lock X, end the binding, release its
    pairs, count it off X), where the ORM took six (lock X, lock and refresh the binding,
    three flushed UPDATEs)."""
    dedicated = Mode(binding.mode) in DEDICATED_MODES
    cooling = dedicated and cooldown_s > 0
    params = {"id": binding.id, "number_id": number_id, "now": now, "reason": reason,
              "cooling_until": now + timedelta(seconds=cooldown_s) if cooling else None}
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        ended = connection.execute(_pg_end(dedicated, cooling), params).first() is not None
    else:
        ended = _end_sqlite(connection, params, dedicated, cooling)

    if not ended:
        # Someone else ended it: what the session holds of it is stale.
        session.expire(binding)
        return False
    for name, value in (("ended_at", now), ("updated_at", now), ("end_reason", reason)):
        set_committed_value(binding, name, value)
    _reload_number(session, number_id, "active_bindings", "state", "cooling_until")
    return True


def _reload_number(session, number_id: int, *names: str) -> None:
    """X's row changed behind the ORM's back: a Number the session holds reloads ``names``."""
    held = session.identity_map.get(session.identity_key(Number, number_id))
    if held is not None:
        session.expire(held, list(names))


def _released_number(dedicated: bool, cooling: bool) -> str:
    """SET clause of X once a binding left it. Many callers know a dedicated number: they
    must not reach its next holder, so it cools down (when a cool-down is configured)."""
    clause = ("active_bindings = CASE WHEN active_bindings > 0 THEN active_bindings - 1 "
              "ELSE 0 END")
    if dedicated:
        released = NumberState.COOLING.value if cooling else NumberState.AVAILABLE.value
        clause += (f", state = CASE WHEN state = '{NumberState.DEDICATED.value}' "
                   f"THEN '{released}' ELSE state END")
    if cooling:
        clause += (f", cooling_until = CASE WHEN state = '{NumberState.DEDICATED.value}' "
                   "THEN :cooling_until ELSE cooling_until END")
    return clause


@functools.cache
def _pg_end(dedicated: bool, cooling: bool):
    # The X row is locked in the first CTE: the binding's UPDATE only runs once the
    # uncorrelated EXISTS on it has been evaluated (a one-time filter), so the lock order
    # stays X, then the binding.
    return text(f"""
        WITH locked AS (SELECT id FROM numbers WHERE id = :number_id FOR UPDATE),
        ended AS (
            UPDATE bindings SET ended_at = :now, updated_at = :now, end_reason = :reason
            WHERE id = :id AND ended_at IS NULL AND EXISTS (SELECT 1 FROM locked)
            RETURNING id),
        released AS (
            UPDATE binding_parties SET active = false, released_at = :now
            WHERE binding_id = (SELECT id FROM ended) AND active)
        UPDATE numbers SET {_released_number(dedicated, cooling)}
        WHERE id = :number_id AND EXISTS (SELECT 1 FROM ended)
        RETURNING id""")


def _end_sqlite(connection, params: dict, dedicated: bool, cooling: bool) -> bool:
    """Three statements; BEGIN IMMEDIATE already holds every writer off."""
    bindings_, parties = Binding.__table__, BindingParty.__table__
    ended = connection.execute(
        update(bindings_).where(bindings_.c.id == params["id"], bindings_.c.ended_at.is_(None))
        .values(ended_at=params["now"], updated_at=params["now"], end_reason=params["reason"]))
    if ended.rowcount == 0:
        return False
    connection.execute(
        update(parties).where(parties.c.binding_id == params["id"], parties.c.active.is_(True))
        .values(active=False, released_at=params["now"]))
    connection.execute(_sqlite_release(dedicated, cooling), params)
    return True


@functools.cache
def _sqlite_release(dedicated: bool, cooling: bool):
    query = text(f"UPDATE numbers SET {_released_number(dedicated, cooling)} "
                 "WHERE id = :number_id")
    if cooling:
        # Stored as SQLAlchemy stores every time on SQLite, or comparisons would go wrong.
        query = query.bindparams(
            bindparam("cooling_until", type_=Number.__table__.c.cooling_until.type))
    return query


def sweep_expired(session: Session, now: datetime, limit: int = 1000, settings=None) -> int:
    """End up to ``limit`` bindings whose expiry has passed (reason ``expired``)."""
    ids = list(session.scalars(
        select(Binding.id).where(Binding.ended_at.is_(None), Binding.expires_at <= now)
        .order_by(Binding.expires_at).limit(limit)))
    cooldown = _routing(settings).dedicated_cooldown_s

    ended = 0
    for binding_id in ids:
        binding = session.get(Binding, binding_id)
        if end_binding(session, binding, now=now, reason="expired", cooldown_s=cooldown):
            ended += 1
    if ended:
        logger.info("sweep: %d expired bindings ended", ended)
    return ended


# --- update -------------------------------------------------------------------------------


def update_binding(
    session: Session, customer_id: int, binding_id: str, *, now: datetime, settings,
    expires_at=UNSET, a=UNSET, b=UNSET, default_party=UNSET, region: str = "CN",
) -> Binding:
    """Change the expiry, the parties or the default party of an active binding."""
    binding = get_binding(session, customer_id, binding_id)
    _check_updatable(binding, now)
    if expires_at is not UNSET:
        expires_at = future_expiry(expires_at, now)
    plan = plan_parties_update(session, binding, region, a=a, b=b, default_party=default_party,
                               unset=UNSET)

    if plan.changed_roles:
        _replace_parties(session, binding, plan, now, settings)
    if plan.default_party is not UNSET:
        binding.default_party = plan.default_party
    if expires_at is not UNSET:
        binding.expires_at = expires_at
    binding.updated_at = now
    session.flush()
    logger.info("binding %s updated", binding.id)
    return binding


def _check_updatable(binding: Binding, now: datetime) -> None:
    if binding.ended_at is not None:
        raise Unprocessable(f"binding {binding.id} has already ended", field="id",
                            code="already_ended")
    if _expired(binding, now):
        raise Unprocessable(f"binding {binding.id} has expired", field="id", code="expired")


def _replace_parties(session, binding: Binding, plan, now, settings) -> None:
    number = session.scalar(select(Number).where(Number.id == binding.number_id)
                            .with_for_update().execution_options(populate_existing=True))
    new = [(role, party) for role, party in plan.parties if role in plan.changed_roles]
    _check_pair_cooldown(session, number.e164, [p for _, p in new], now, settings,
                         exclude_binding=binding.id)
    _close_expired_on(session, number, [p for _, p in new], now, settings)
    if _held(session, number.e164, [p for _, p in new], exclude_binding=binding.id):
        raise _pair_in_use(number)

    try:
        with session.begin_nested():
            session.execute(
                update(BindingParty)
                .where(BindingParty.binding_id == binding.id, BindingParty.active.is_(True),
                       BindingParty.role.in_(plan.changed_roles))
                .values(active=False, released_at=now),
                execution_options={"synchronize_session": False})
            session.add_all(BindingParty(binding_id=binding.id, x=number.e164, party=party,
                                         role=role, active=True) for role, party in new)
            for role, party in new:
                setattr(binding, role, party)
            session.flush()
    except IntegrityError:
        raise _pair_in_use(number) from None


# --- queries ------------------------------------------------------------------------------


def get_binding(session: Session, customer_id: int, binding_id: str) -> Binding:
    if not isinstance(binding_id, str) or not 0 < len(binding_id) <= 32:
        raise NotFound("no such binding", field="id")
    binding = session.get(Binding, binding_id, populate_existing=True)
    if binding is None or binding.customer_id != customer_id:
        raise NotFound(f"no binding {binding_id!r}", field="id")
    return binding


def find_bindings(
    session: Session, customer_id: int, *, x: str | None = None, party: str | None = None,
    out_id: str | None = None, active: bool = True, limit: int | None = 100,
    after: str | None = None, region: str = "CN", now: datetime | None = None,
) -> list[Binding]:
    """The customer's bindings by X, by party (A, B) or by out_id, in id (creation) order.

    ``active`` leaves out ended bindings; with ``now`` also those expired but not yet swept
    (what a listing shows). Without ``now`` expired ones stay in: retiring a number must
    still find and end them.
    """
    query = select(Binding).where(Binding.customer_id == customer_id)
    if x is not None:
        query = query.where(Binding.x == parse(x, "x", region))
    if party is not None:
        held = select(BindingParty.binding_id).where(
            BindingParty.party == parse(party, "party", region))
        query = query.where(Binding.id.in_(held))
    if out_id is not None:
        query = query.where(Binding.out_id == out_id)
    if active:
        query = query.where(Binding.ended_at.is_(None))
    if active and now is not None:
        query = query.where(or_(Binding.expires_at.is_(None), Binding.expires_at > now))
    if after is not None:
        query = query.where(Binding.id > after)
    query = query.order_by(Binding.id)
    return list(session.scalars(query.limit(limit) if limit else query))


def _expired(binding: Binding, now: datetime) -> bool:
    expires = as_utc(binding.expires_at)
    return expires is not None and expires <= now


def binding_dict(binding: Binding, group_name: str | None = None,
                 now: datetime | None = None) -> dict:
    """The customer's own view of a binding (full numbers: never log this).

    ``active`` means routing still uses it at ``now`` (default: the current time): not ended
    and not expired. An expired binding the sweeper has not ended yet is ``expired``.
    """
    expired = _expired(binding, now or utcnow())
    return {
        "id": binding.id,
        "mode": binding.mode,
        "x": binding.x,
        "a": binding.a,
        "b": binding.b,
        "default_party": binding.default_party,
        "softphone": binding.softphone,
        "group": group_name,
        "group_id": binding.group_id,
        "direction": binding.direction,
        "record": binding.record,
        "sms": binding.sms,
        "allow_withheld": binding.allow_withheld,
        "primary": binding.is_primary,
        "max_call_s": binding.max_call_s,
        "out_id": binding.out_id,
        "created_at": as_utc(binding.created_at),
        "updated_at": as_utc(binding.updated_at),
        "expires_at": as_utc(binding.expires_at),
        "ended_at": as_utc(binding.ended_at),
        "end_reason": binding.end_reason,
        "active": binding.ended_at is None and not expired,
        "expired": expired,
    }


def binding_view(binding: Binding, group_members: frozenset[str] = frozenset(),
                 carrier: str = "default") -> BindingView:
    """The binding as ``routing.decide`` sees it."""
    return BindingView(
        id=binding.id,
        customer_id=binding.customer_id,
        mode=Mode(binding.mode),
        x=binding.x,
        a=binding.a,
        b=binding.b,
        default_party=binding.default_party,
        softphone=binding.softphone,
        group=frozenset(group_members),
        direction=Direction(binding.direction),
        record=bool(binding.record),
        allow_withheld=bool(binding.allow_withheld),
        primary=bool(binding.is_primary),
        max_call_s=binding.max_call_s,
        expires_at=as_utc(binding.expires_at),
        carrier=carrier,
    )
