"""The core (calls.CallService) as the gevent side calls it: off the hub, under deadlines.

CallService is blocking SQLAlchemy (SQLite or psycopg 3). Run on the hub it would stop every
call while one transaction waits, and psycopg 3 only cooperates with gevent under
monkey-patching, which the rest of the process does not need. So each call runs in gevent's
thread pool and the session waits for it cooperatively, never past its deadline. A decision
that misses the deadline is answered 503 (Q.850 41) so the carrier can fail over; if it still
completes later, its record is closed as refused rather than left open.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import gevent
from gevent.event import AsyncResult, Event
from gevent.threadpool import ThreadPool
from sqlalchemy.exc import InterfaceError, OperationalError

from ..causes import UNAVAILABLE, HangupBy, Outcome
from ..errors import PbxControlError, StorageUnavailable
from ..failures import describe
from ..numbers import mask
from .channel import ChannelInfo, Entry

logger = logging.getLogger(__name__)

EVENT_DEADLINE_S = 10.0


class Unavailable(Exception):
    """No decision in time, or storage down: the call is refused with 503."""


@dataclass(frozen=True)
class Raised:
    """What a call in the pool raised, handed back as its value. An exception that leaves
    the pool is printed by gevent's hub with the repr of the call, whose arguments are the
    caller's and the dialed number; this way nothing leaves it."""

    error: Exception


def contained(func: Callable, args: tuple, kwargs: dict):
    """Runs in the pool: ``func``'s value, or Raised. The pool is given this function and
    not a partial, so even the context gevent would print names no argument."""
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - returned to the greenlet that waits for it
        return Raised(exc)


def guarded(what: str, func: Callable, *args, **kwargs) -> None:
    """The body of a greenlet spawned for one call: the hub prints an exception that ends a
    greenlet together with the greenlet's arguments (events, records, numbers)."""
    try:
        func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - logged here, by type and place only
        logger.error("%s failed: %s", what, describe(exc))


class CoreClient:
    """Runs CallService methods in thread pools; each wait is bounded.

    Decisions have a pool of their own when ``decision_pool`` is given: in one FIFO pool a new
    call's decision waited behind the ringing / answered / ended writes of the calls already
    connected (docs/benchmarks.md), while the caller hears nothing until it is made.
    """

    def __init__(self, service: Any, decision_deadline_s: float, pool: ThreadPool | None = None,
                 decision_pool: ThreadPool | None = None):
        self.service = service
        self.deadline = decision_deadline_s
        self.pool = pool or gevent.get_hub().threadpool
        self.decision_pool = decision_pool or self.pool
        self.events = EventWriter(service, self.pool)

    def close(self) -> None:
        self.events.close()

    def _run(self, deadline: float, func: Callable, *args, **kwargs):
        value = self.pool.spawn(contained, func, args, kwargs).get(timeout=deadline)
        if isinstance(value, Raised):
            raise value.error
        return value

    def decide(self, info: ChannelInfo):
        """Routed(decision, record_id); Unavailable when late or storage is down."""
        if info.outbound:
            call = partial(self.service.route_outbound, info.username, info.dialed_raw,
                           info.uuid)
        else:
            call = partial(self.service.route_inbound, info.caller_raw, info.dialed_raw,
                           info.uuid, trusted=info.entry == Entry.CARRIER)
        result = self.decision_pool.spawn(contained, call, (), {})
        try:
            value = result.get(timeout=self.deadline)
        except gevent.Timeout:
            logger.warning("call %s: no decision within %.2f s", info.uuid, self.deadline)
            result.rawlink(self._close_late)
            raise Unavailable("decision deadline") from None

        if isinstance(value, Raised) and isinstance(value.error, StorageUnavailable):
            logger.warning("call %s: storage unavailable", info.uuid)
            raise Unavailable("storage unavailable")
        if isinstance(value, Raised):
            # Fail closed: a decision that broke is a refusal the carrier can route around.
            # Its message may quote the numbers: the type and place are logged, no more.
            logger.error("call %s: the decision failed: %s", info.uuid, describe(value.error))
            raise Unavailable("decision failed")
        return value

    def _close_late(self, result) -> None:
        # Runs on the hub when the late decision finally returns: its record must not stay
        # open as if the call had been connected.
        if not result.successful() or isinstance(result.value, Raised):
            return
        if result.value.record_id is None:
            return
        gevent.spawn(guarded, "closing a late decision's record", self.event,
                     result.value.record_id, "ended", None,
                     outcome=Outcome.REFUSED.value, hangup_by=HangupBy.CONTROLLER.value,
                     sip_status=UNAVAILABLE.sip_status, q850_cause=UNAVAILABLE.q850,
                     pbx_cause="NORMAL_TEMPORARY_FAILURE/41")

    def refuse_unavailable(self, info: ChannelInfo) -> str | None:
        caller = info.username if info.outbound else info.caller_raw
        try:
            record_id = self._run(EVENT_DEADLINE_S, self.service.refuse_unavailable,
                                     caller, info.dialed_raw, info.uuid,
                                     outbound=info.outbound)
            return record_id
        except (gevent.Timeout, PbxControlError) as exc:
            logger.warning("call %s: 503 refusal not recorded (%s), caller %s", info.uuid,
                           type(exc).__name__, mask(caller))
            return None
        except Exception as exc:  # noqa: BLE001 - the caller is refused 503 all the same
            logger.error("call %s: 503 refusal not recorded: %s, caller %s", info.uuid,
                         describe(exc), mask(caller))
            return None

    def event(self, record_id: str, kind: str, at: datetime | None, **fields) -> bool:
        """One call event; False (logged) when it could not be stored in time."""
        try:
            result = self.events.write(record_id, kind, at, fields, EVENT_DEADLINE_S)
            if isinstance(result, Exception):
                raise result
            return True
        except (gevent.Timeout, PbxControlError) as exc:
            logger.warning("record %s: %s event not stored (%s)", record_id, kind,
                           type(exc).__name__)
            return False
        except Exception as exc:  # noqa: BLE001 - one lost event must not end the session
            logger.error("record %s: %s event not stored: %s", record_id, kind, describe(exc))
            return False

    def open_records(self) -> list:
        return self._run(EVENT_DEADLINE_S * 3, self.service.open_records)


class EventWriter:
    """Writes call events a batch per transaction, one batch at a time, in arrival order.

    An answered call brings three events (ringing, answered, ended); in a transaction each
    they cost more of the controller's core than the decision (docs/benchmarks.md). Here
    whatever arrives while a batch is being written goes into the next one: one event alone
    when calls are few, dozens under load. One writer keeps the order in which a call's events
    came, which two writers racing could swap. Nothing bounds the queue here: every caller
    waits for its own event, so it holds at most one event per session and connection.
    """

    MAX_BATCH = 500
    # A call event is not on any caller's path (the session only waits for it before reading
    # on), so a batch may wait for company: one event alone cost 1.1 ms of CPU, one of 20 in a
    # batch 0.12 ms; 25 ms instead of 5 ms used 5-8% less of the controller's core at 150
    # calls/s (docs/benchmarks.md).
    GATHER_S = 0.025

    def __init__(self, service: Any, pool: ThreadPool):
        self._service = service
        self._pool = pool
        self._queue: deque = deque()
        self._ready = Event()
        self._writer: gevent.Greenlet | None = None

    def write(self, record_id: str, kind: str, at: datetime | None, fields: dict,
              timeout: float):
        """The event's result (see ``CallService.call_events``), or what its batch raised;
        gevent.Timeout when not written in time (it may still be, later)."""
        done = AsyncResult()
        self._queue.append(((record_id, kind, at, fields), done))
        self._ready.set()
        if self._writer is None or self._writer.dead:
            self._writer = gevent.spawn(self._run)
        value = done.get(timeout=timeout)
        if isinstance(value, Raised):
            raise value.error
        return value

    def close(self) -> None:
        if self._writer is not None:
            self._writer.kill(block=False)

    def _run(self) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                self._ready.wait()
                continue
            # A call's events come in bursts (ringing and answer 0.4 ms apart in the
            # recordings): a moment's wait lets them share the transaction.
            gevent.sleep(self.GATHER_S)
            count = min(len(self._queue), self.MAX_BATCH)
            batch = [self._queue.popleft() for _ in range(count)]
            self._write(batch)

    def _write(self, batch: list) -> None:
        value = self._call([event for event, _ in batch])
        if isinstance(value, Raised) and len(batch) > 1 and not _storage_down(value.error):
            # One event the database refused must not cost the others: each on its own.
            for entry in batch:
                self._write([entry])
            return
        for index, (_, done) in enumerate(batch):
            done.set(value if isinstance(value, Raised) else value[index])

    def _call(self, events: list):
        try:
            return self._pool.spawn(contained, self._service.call_events, (events,), {}).get()
        except Exception as exc:  # noqa: BLE001 - the pool itself failed (killed at stop)
            return Raised(exc)


def _storage_down(error: Exception) -> bool:
    """The database cannot be reached, as opposed to refusing one statement."""
    cause = error.__cause__
    return isinstance(error, StorageUnavailable) and (
        cause is None or isinstance(cause, (OperationalError, InterfaceError)))
