"""``CallService``: what both PBX adapters call to route a call and to report its life.

One transaction per call: gather what routing needs in as few indexed queries as possible,
decide (``routing``, pure), write the attempt record (and a ``refused`` event when refused).
This runs on every call, so the lookups are shaped for it: one statement reads the number row
with the blacklist hit, the caller's recent attempts and the caller's own binding on X (through
the unique (X, party) index); only a dedicated X (AX, AXN, AXG) needs a second, for its one
binding.
"""

from __future__ import annotations

import logging
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, func, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from . import causes, numbers, records, routing
from .bindings import binding_view
from .blacklist import blacklisted_query
from .config import Settings
from .errors import InvalidInput, StorageUnavailable
from .numbers import mask
from .routing import Facts, NumberState, NumberView, OutboundFacts
from .softphones import subscriber_for
from .storage.db import Store, utcnow
from .storage.tables import Binding, BindingParty, CallRecord, GroupMember, Number

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Routed:
    """The decision for a call and the id of its record (None only if it was not written)."""

    decision: routing.Decision
    record_id: str | None


@dataclass
class _Lookup:
    """Facts for routing plus what the record needs from the same rows."""

    facts: Facts
    out_ids: dict[str, str | None]


# The statements of the per-call path, built once: building them per call cost more than
# running them (docs/benchmarks.md).
_NUMBERS = Number.__table__
_BINDINGS = Binding.__table__
_PARTIES = BindingParty.__table__
# Only the columns routing reads: the driver builds a description of every column returned.
_NUMBER_COLUMNS = [_NUMBERS.c[name] for name in (
    "e164", "customer_id", "carrier", "state", "voice", "sms")]
_BINDING_COLUMNS = [_BINDINGS.c[name] for name in (
    "id", "customer_id", "mode", "x", "a", "b", "default_party", "softphone", "group_id",
    "direction", "record", "allow_withheld", "is_primary", "max_call_s", "expires_at",
    "out_id")]
_NUMBER = select(*_NUMBER_COLUMNS).where(_NUMBERS.c.e164 == bindparam("x"))
_BINDINGS_ON_X = select(*_BINDING_COLUMNS).where(_BINDINGS.c.x == bindparam("x"),
                                         _BINDINGS.c.ended_at.is_(None))
_GROUP_MEMBER = select(GroupMember.number).where(GroupMember.group_id == bindparam("group"),
                                                  GroupMember.number == bindparam("caller"))


# The caller's binding on X, joined to X's row; its columns prefixed so they cannot clash
# with the number's. A nested join, not LATERAL, which SQLite lacks.
_PREFIX = "binding_"
_CALLERS_PAIR_COLUMNS = [column.label(_PREFIX + column.name) for column in _BINDING_COLUMNS]
_WITH_CALLERS_PAIR = _NUMBERS.outerjoin(
    _PARTIES.join(_BINDINGS, and_(_BINDINGS.c.id == _PARTIES.c.binding_id,
                                  _BINDINGS.c.ended_at.is_(None))),
    and_(_PARTIES.c.x == _NUMBERS.c.e164, _PARTIES.c.party == bindparam("caller"),
         _PARTIES.c.active == true()))
_BindingRow = namedtuple("_BindingRow", [column.name for column in _BINDING_COLUMNS])


def _number_and_caller(rate_limit_attempts: int):
    """X's pool row, whether the caller is blacklisted, its recent attempts, and its own
    binding on X when it has one: the whole lookup of a call on a shared X in one round trip.

    The binding comes through the unique index of active (X, party) pairs, so there is at
    most one row. It is used only when X is shared (``_bindings_on``): a dedicated X's
    binding need not name the caller at all.
    """
    blocked = blacklisted_query(_NUMBERS.c.customer_id, bindparam("caller"), bindparam("x"))
    # Counting stops past the limit: a caller hammering X costs no more than one over.
    # Calls deciding at the same instant see the same count (no lock is taken on the
    # hot path), so a burst of simultaneous calls can pass the limit by its own size;
    # the limit is for a caller dialing again and again.
    attempts = (select(CallRecord.id)
                .where(CallRecord.x == bindparam("x"), CallRecord.caller == bindparam("caller"),
                       CallRecord.started_at > bindparam("window"))
                .limit(rate_limit_attempts + 1).subquery())
    recent = select(func.count()).select_from(attempts).scalar_subquery()
    return (select(*_NUMBER_COLUMNS, blocked.exists().label("blacklisted"),
                   recent.label("recent"), *_CALLERS_PAIR_COLUMNS)
            .select_from(_WITH_CALLERS_PAIR).where(_NUMBERS.c.e164 == bindparam("x")))


def _callers_pair(row) -> list:
    """The caller's binding carried by the row of ``_number_and_caller``, as a list."""
    if getattr(row, _PREFIX + "id", None) is None:
        return []
    return [_BindingRow(*(getattr(row, _PREFIX + name) for name in _BindingRow._fields))]


class CallService:
    """Routes calls for one PBX node and records them; shared by both adapters and the CLI."""

    def __init__(self, store: Store, settings: Settings, *, pbx: str, node: str | None,
                 clock=utcnow):
        self._store = store
        self._settings = settings
        self._policy = settings.routing
        self._region = settings.default_region
        self.pbx = pbx
        self.node = node
        self._clock = clock
        self._number_and_caller = _number_and_caller(self._policy.rate_limit_attempts)

    # -- inbound ---------------------------------------------------------------------------

    def route_inbound(self, caller_raw: str | None, dialed_raw: str, call_uuid: str | None,
                      *, trusted: bool = True) -> Routed:
        """Decide a call on X and write its attempt record, in one transaction.

        ``trusted=False`` (the call did not come from a configured trunk) makes the caller a
        stranger: its caller id is recorded but never believed.
        """
        now = self._clock()
        x = self._parse_x(dialed_raw)
        caller = numbers.parse_caller(caller_raw, self._region) if trusted else None

        with self._connection() as connection:
            lookup = self._inbound_lookup(connection, x, caller, now)
            decision = routing.decide(routing.Call(caller, x or "", now), lookup.facts,
                                      self._policy)
            record_id = self._write_inbound(connection, lookup, decision, x,
                                            caller or caller_raw, call_uuid, now)

        logger.debug("call %s on %s from %s: %s %s", call_uuid, mask(x), mask(caller),
                     "connect" if decision.connected else "refuse", decision.reason.value)
        return Routed(decision, record_id)

    def explain(self, caller_raw: str | None, dialed_raw: str
                ) -> tuple[routing.Decision, Facts]:
        """The decision a call would get now and the facts behind it; writes nothing."""
        now = self._clock()
        x = self._parse_x(dialed_raw)
        caller = numbers.parse_caller(caller_raw, self._region)

        with self._connection() as connection:
            lookup = self._inbound_lookup(connection, x, caller, now)
        call = routing.Call(caller, x or "", now)
        return routing.decide(call, lookup.facts, self._policy), lookup.facts

    def _parse_x(self, dialed_raw: str | None) -> str | None:
        try:
            return numbers.parse(dialed_raw or "", "dialed", self._region)
        except InvalidInput:
            return None

    def _inbound_lookup(self, connection: Connection, x: str | None, caller: str | None,
                        now: datetime) -> _Lookup:
        if x is None:
            return _Lookup(Facts(number=None), {})
        if caller is None:
            row = connection.execute(_NUMBER, {"x": x}).first()
            blacklisted, recent = False, 0
        else:
            window = now - timedelta(seconds=self._policy.rate_limit_window_s)
            params = {"x": x, "caller": caller, "window": window}
            row = connection.execute(self._number_and_caller, params).first()
            blacklisted, recent = (row.blacklisted, row.recent) if row else (False, 0)
        if row is None:
            return _Lookup(Facts(number=None), {})

        bindings = self._bindings_on(connection, row, caller)
        views = tuple(self._view(connection, b, caller, row.carrier) for b in bindings)
        facts = Facts(number=_number_view(row), bindings=views,
                      blacklisted=bool(blacklisted), recent_attempts=int(recent or 0))
        return _Lookup(facts, {b.id: b.out_id for b in bindings})

    def _bindings_on(self, connection: Connection, number, caller: str | None) -> list:
        """The bindings on X that concern this caller, expired ones not yet swept included.

        A dedicated X carries one binding and nothing else, so all of X's active rows are
        read; on a shared X only the caller's own pair is, through the unique (X, party)
        index, however many AXB bindings share X: it came with X's row (``_callers_pair``).
        This trusts ``numbers.state``, which ``bindings`` keeps in the same transaction as the
        binding rows.
        """
        if number.state == NumberState.DEDICATED:
            rows = connection.execute(_BINDINGS_ON_X, {"x": number.e164})
            return [b for b in rows
                    if b.mode != routing.Mode.AXB or caller in (b.a, b.b)]
        if caller is None or number.state != NumberState.AVAILABLE:
            return []
        return _callers_pair(number)

    def _view(self, connection: Connection, binding, caller: str | None, carrier: str):
        members = frozenset()
        if binding.mode == routing.Mode.AXG and binding.group_id and caller:
            # Only whether this caller is a member matters: no need to read the whole group.
            found = connection.execute(_GROUP_MEMBER, {"group": binding.group_id,
                                                       "caller": caller}).scalar()
            members = frozenset({found}) if found else frozenset()
        return binding_view(binding, members, carrier)

    def _write_inbound(self, connection, lookup: _Lookup, decision, x, caller_as_received,
                       call_uuid, now) -> str:
        number = lookup.facts.number
        customer_id = decision.customer_id or (number.customer_id if number else None)
        return records.insert_attempt(
            connection, None if decision.connected else _refusal(decision.reason),
            customer_id=customer_id, binding_id=decision.binding_id,
            out_id=lookup.out_ids.get(decision.binding_id), direction="inbound", x=x,
            caller=caller_as_received, callee=_callee(decision), decision=_kind(decision),
            reason=decision.reason.value, pbx=self.pbx, node=self.node, call_uuid=call_uuid,
            started_at=now)

    def _refused(self, session, record: CallRecord, reason: routing.Reason, now) -> None:
        records.record_event(session, record, "refused", at=now, **_refusal(reason))

    # -- outbound --------------------------------------------------------------------------

    def route_outbound(self, username: str, target_raw: str, call_uuid: str | None) -> Routed:
        """Decide a softphone's own call on its authenticated user, and record it."""
        now = self._clock()
        target = self._parse_target(target_raw)

        with self._transaction() as session:
            facts, customer_id, by_id = self._outbound_facts(session, username, target)
            call = routing.OutboundCall(target=target_raw or "", now=now, region=self._region)
            decision = routing.decide_outbound(call, facts, self._policy)
            binding = by_id.get(decision.binding_id)
            record = records.new_attempt(
                session, customer_id=customer_id, binding_id=decision.binding_id,
                out_id=binding.out_id if binding else None, direction="outbound",
                x=binding.x if binding else None, caller=facts.subscriber or username,
                callee=_callee(decision) or target or target_raw, decision=_kind(decision),
                reason=decision.reason.value, pbx=self.pbx, node=self.node,
                call_uuid=call_uuid, started_at=now, flush=decision.connected)
            if not decision.connected:
                self._refused(session, record, decision.reason, now)

        logger.debug("call %s outbound to %s: %s %s", call_uuid, mask(target or target_raw),
                     "connect" if decision.connected else "refuse", decision.reason.value)
        return Routed(decision, record.id)

    def _parse_target(self, target_raw: str | None) -> str | None:
        try:
            return numbers.parse(target_raw or "", "target", self._region)
        except InvalidInput:
            return None

    def _outbound_facts(self, session: Session, username: str, target: str | None):
        found = subscriber_for(session, username)
        if found is None:
            return OutboundFacts(subscriber=None), None, {}

        customer_id, subscriber = found
        rows = session.execute(
            select(Binding, Number.carrier)
            .join(BindingParty, BindingParty.binding_id == Binding.id)
            .join(Number, Number.id == Binding.number_id)
            .where(BindingParty.party == subscriber, BindingParty.role == "a",
                   BindingParty.active == true(), Binding.ended_at.is_(None),
                   Binding.mode == routing.Mode.AX.value,
                   Binding.customer_id == customer_id)).all()
        in_pool = target is not None and session.scalar(select(Number.id).where(
            Number.e164 == target, Number.state != NumberState.RETIRED.value)) is not None

        views = tuple(binding_view(b, frozenset(), carrier) for b, carrier in rows)
        facts = OutboundFacts(subscriber=subscriber, ax_bindings=views,
                              target_is_pool_number=in_pool)
        return facts, customer_id, {b.id: b for b, _ in rows}

    # -- failures, events, reconciliation --------------------------------------------------

    def refuse_unavailable(self, caller_raw: str | None, dialed_raw: str | None,
                           call_uuid: str | None, *, outbound: bool = False) -> str | None:
        """Record a 503 refusal (reason ``unavailable``); best effort, never raises.

        Called when no decision came in time or storage failed: the adapter refuses the call
        either way, and a record is written if storage lets us. ``outbound=True``: a
        softphone's own call, ``caller_raw`` its user name and ``dialed_raw`` the target.
        """
        try:
            return self._record_unavailable(caller_raw, dialed_raw, call_uuid, outbound)
        except Exception as exc:  # noqa: BLE001 - best effort by contract; the call is refused
            logger.warning("call %s: refusal not recorded (%s)", call_uuid,
                           type(exc).__name__)
            return None

    def _record_unavailable(self, caller_raw, dialed_raw, call_uuid, outbound) -> str:
        now = self._clock()
        with self._transaction() as session:
            if outbound:
                found = subscriber_for(session, caller_raw)
                customer_id, caller = found if found else (None, caller_raw)
                x, callee = None, self._parse_target(dialed_raw) or dialed_raw
            else:
                x, callee = self._parse_x(dialed_raw), None
                caller = numbers.parse_caller(caller_raw, self._region) or caller_raw
                customer_id = x and session.scalar(select(Number.customer_id)
                                                   .where(Number.e164 == x))
            record = records.new_attempt(
                session, customer_id=customer_id, binding_id=None, out_id=None,
                direction="outbound" if outbound else "inbound", x=x, caller=caller,
                callee=callee, decision="refuse", reason=routing.Reason.UNAVAILABLE.value,
                pbx=self.pbx, node=self.node, call_uuid=call_uuid, started_at=now,
                flush=False)
            self._refused(session, record, routing.Reason.UNAVAILABLE, now)
        return record.id

    def call_event(self, record_id: str, kind: str, at: datetime | None = None,
                   **fields) -> CallRecord | None:
        """The one call-event function (see ``records.call_event``) in its own transaction.

        Storage failures raise StorageUnavailable so the adapter can retry or log them.
        """
        at = at or self._clock()
        with self._connection() as connection:
            return records.call_event(connection, record_id, kind, at=at, **fields)

    def call_events(self, events: list[tuple[str, str, datetime | None, dict]]) -> list:
        """Many call events in one transaction (see ``records.call_events``): for each, its
        record's columns, None, or the NotFound / InvalidInput it raised.

        Storage failures raise StorageUnavailable for the whole batch.
        """
        now = self._clock()
        events = [(record_id, kind, at or now, fields) for record_id, kind, at, fields in events]
        with self._connection() as connection:
            return records.call_events(connection, events)

    def open_records(self) -> list[CallRecord]:
        """This node's records without an end, for reconciliation after a restart."""
        with self._transaction() as session:
            return records.open_records(session, self.pbx, self.node)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A transaction on a plain connection (the per-call paths)."""
        with _storage_errors(), self._store.transaction() as connection:
            yield connection

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with _storage_errors(), self._store.session() as session:
            yield session


@contextmanager
def _storage_errors() -> Iterator[None]:
    """Any database error, to the adapters, is storage being unavailable."""
    try:
        yield
    except SQLAlchemyError as exc:
        logger.warning("storage error: %s", type(exc).__name__)
        raise StorageUnavailable("storage unavailable") from exc


def _refusal(reason: routing.Reason) -> dict:
    refusal = causes.refusal_for(reason)
    return dict(outcome="refused", sip_status=refusal.sip_status, q850_cause=refusal.q850,
                hangup_by=causes.HangupBy.CONTROLLER.value)


def _number_view(number) -> NumberView:
    return NumberView(e164=number.e164, customer_id=number.customer_id, carrier=number.carrier,
                      state=NumberState(number.state), voice=bool(number.voice),
                      sms=bool(number.sms))


def _kind(decision: routing.Decision) -> str:
    return "connect" if decision.connected else "refuse"


def _callee(decision: routing.Decision) -> str | None:
    if not decision.connected:
        return None
    return decision.callee_party or decision.to
