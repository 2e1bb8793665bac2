"""Housekeeping: expired bindings are ended and cooled-down numbers come back."""

from datetime import timedelta

from pbx_control import bindings, customers, housekeeping, pool
from pbx_control.config import Settings
from pbx_control.routing import Mode
from pbx_control.storage import utcnow
from pbx_control.storage.tables import Binding, Number


def _setup(store, settings, now):
    with store.session() as s:
        customer = customers.ensure_customer(s, "default", now)
        pool.add_numbers(s, customer.id, ["+8617000000001", "+8617000000002"], now=now)
        bound = bindings.bind(
            s, customer.id,
            bindings.BindRequest(mode=Mode.AXB, a="13900000001", b="13800000001",
                                 x="+8617000000001", expires_at=now + timedelta(minutes=5)),
            now=now, settings=settings)
        dedicated = bindings.bind(
            s, customer.id,
            bindings.BindRequest(mode=Mode.AX, a="13900000002", x="+8617000000002"),
            now=now, settings=settings)
        return customer.id, bound.id, dedicated.id


def test_given_expired_binding_when_housekeeping_runs_then_it_is_ended_and_pair_freed(store):
    settings = Settings()
    now = utcnow()
    _, bound_id, _ = _setup(store, settings, now)

    before = housekeeping.run_once(store, settings, now=now)
    upkeep = housekeeping.run_once(store, settings, now=now + timedelta(minutes=6))

    assert before.expired == 0
    assert upkeep.expired == 1
    with store.session() as s:
        binding = s.get(Binding, bound_id)
        assert binding.ended_at is not None and binding.end_reason == "expired"


def test_given_released_dedicated_number_when_cooldown_ends_then_it_is_available(store):
    settings = Settings()
    settings.routing.dedicated_cooldown_s = 60
    now = utcnow()
    customer_id, _, dedicated_id = _setup(store, settings, now)
    with store.session() as s:
        bindings.unbind(s, customer_id, dedicated_id, now=now, settings=settings)

    early = housekeeping.run_once(store, settings, now=now + timedelta(seconds=30))
    late = housekeeping.run_once(store, settings, now=now + timedelta(seconds=61))

    assert early.cooled == 0 and late.cooled == 1
    with store.session() as s:
        number = s.query(Number).filter_by(e164="+8617000000002").one()
        assert number.state == "available"


def _expired_binding(store, settings):
    now = utcnow()
    _, bound_id, _ = _setup(store, settings, now)
    with store.session() as s:
        s.get(Binding, bound_id).expires_at = now - timedelta(seconds=1)
    return bound_id


def _ended(store, binding_id) -> bool:
    with store.session() as s:
        return s.get(Binding, binding_id).ended_at is not None


def test_asyncio_timer_sweeps_without_being_asked(sqlite_store):
    import asyncio

    settings = Settings()
    bound_id = _expired_binding(sqlite_store, settings)

    async def scenario():
        task = asyncio.create_task(housekeeping.every_async(sqlite_store, settings, 0.01))
        try:
            for _ in range(500):
                if await asyncio.to_thread(_ended, sqlite_store, bound_id):
                    return True
                await asyncio.sleep(0.01)
            return False
        finally:
            task.cancel()

    assert asyncio.run(scenario())


def test_gevent_timer_sweeps_without_being_asked(sqlite_store):
    import gevent
    from gevent.threadpool import ThreadPool

    settings = Settings()
    bound_id = _expired_binding(sqlite_store, settings)
    pool = ThreadPool(2)

    keeper = housekeeping.every_greenlet(sqlite_store, settings, pool, 0.01)
    try:
        for _ in range(500):
            if pool.apply(_ended, (sqlite_store, bound_id)):
                break
            gevent.sleep(0.01)
        assert pool.apply(_ended, (sqlite_store, bound_id))
    finally:
        keeper.kill()
        pool.kill()


def test_an_unexpected_failure_is_logged_without_its_message_and_returns_none(
        sqlite_store, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ValueError("about +8613900000001")

    monkeypatch.setattr(housekeeping.bindings, "sweep_expired", broken)

    assert housekeeping.safe_run_once(sqlite_store, Settings()) is None
    assert "ValueError" in caplog.text and "13900000001" not in caplog.text
