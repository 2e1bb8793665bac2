"""The FreeSWITCH controller's call-event writer: batches, order, and failures kept apart."""

from __future__ import annotations

import threading

import gevent
import pytest
from gevent.threadpool import ThreadPool
from sqlalchemy.exc import DataError, OperationalError

from pbx_control.errors import NotFound, StorageUnavailable
from pbx_control.freeswitch.core import CoreClient, EventWriter


class Service:
    """call_events as CallService has it; the first batch can be held in the database."""

    def __init__(self, hold_first: bool = False):
        self.batches: list[list] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail: Exception | None = None

    def call_events(self, events):
        self.batches.append([(record_id, kind) for record_id, kind, _, _ in events])
        self.entered.set()
        self.release.wait(5)
        if self.fail is not None and (len(events) > 1 or events[0][0] == "poison"):
            raise self.fail
        return [NotFound("no record") if record_id == "missing" else {"id": record_id}
                for record_id, _, _, _ in events]


def storage_error(cause: Exception) -> StorageUnavailable:
    error = StorageUnavailable("storage unavailable")
    error.__cause__ = cause
    return error


@pytest.fixture
def pool():
    pool = ThreadPool(2)
    yield pool
    pool.kill()


def wait_until(condition) -> None:
    with gevent.Timeout(5):
        while not condition():
            gevent.sleep(0.005)


def test_events_that_arrive_during_a_write_go_together_into_the_next_in_order(pool):
    service = Service(hold_first=True)
    writer = EventWriter(service, pool)
    first = gevent.spawn(writer.write, "r0", "ringing", None, {}, 5)
    wait_until(service.entered.is_set)

    rest = [gevent.spawn(writer.write, f"r{n}", kind, None, {}, 5)
            for n in range(1, 6) for kind in ("ringing", "answered")]
    gevent.sleep(0.05)
    service.release.set()
    gevent.joinall([first, *rest], timeout=5, raise_error=True)

    assert service.batches[0] == [("r0", "ringing")]
    assert service.batches[1] == [(f"r{n}", kind) for n in range(1, 6)
                                  for kind in ("ringing", "answered")]
    assert first.value == {"id": "r0"} and rest[3].value == {"id": "r2"}
    writer.close()


def ended_behind_a_held_batch(service: Service, pool, names: list[str]) -> list:
    """'ended' for each record of ``names``, all sent while a first batch is held in the
    database, so that they are written together; the greenlets, once done."""
    writer = EventWriter(service, pool)
    gevent.spawn(writer.write, "r0", "ringing", None, {}, 5)
    wait_until(service.entered.is_set)
    waits = [gevent.spawn(writer.write, name, "ended", None, {}, 5) for name in names]
    gevent.sleep(0.05)
    service.release.set()
    gevent.joinall(waits, timeout=5)
    writer.close()
    return waits


def test_a_batch_the_database_refuses_is_retried_event_by_event(pool):
    service = Service(hold_first=True)
    service.fail = storage_error(DataError("stmt", {}, Exception("bad value")))
    names = ["r1", "poison", "r2", "missing"]
    waits = ended_behind_a_held_batch(service, pool, names)

    assert waits[0].value == {"id": "r1"} and waits[2].value == {"id": "r2"}
    assert isinstance(waits[1].exception, StorageUnavailable)
    assert isinstance(waits[3].value, NotFound)
    assert service.batches[1:] == [[(n, "ended") for n in names]] + [
        [(n, "ended")] for n in names]


def test_with_the_database_down_the_batch_fails_at_once_without_retries(pool):
    service = Service(hold_first=True)
    service.fail = storage_error(OperationalError("connect", {}, Exception("refused")))
    waits = ended_behind_a_held_batch(service, pool, [f"r{n}" for n in range(1, 4)])

    assert all(isinstance(w.exception, StorageUnavailable) for w in waits)
    assert len(service.batches) == 2


def test_core_client_reports_an_unstored_event_as_false(pool):
    service = Service()
    core = CoreClient(service, 1.0, pool)
    assert core.event("r1", "ringing", None) is True
    assert core.event("missing", "ringing", None) is False
    core.close()
