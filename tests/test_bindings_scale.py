"""Many overlapping bindings, and binds racing each other on PostgreSQL.

The promise under test: no (X, party) pair is ever held twice, every (caller, X) finds its one
binding and routes to the other party, and a bind that loses a race gets the same clean
Conflict or PoolExhausted as any other refused bind, never a database error.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from pbx_control import bindings, pool
from pbx_control.bindings import BindRequest
from pbx_control.config import Settings
from pbx_control.customers import ensure_customer
from pbx_control.errors import Conflict, InvalidInput, PoolExhausted, Unprocessable
from pbx_control.routing import Call, Connect, Facts, Mode, NumberView, Reason, decide
from pbx_control.storage.tables import Binding, BindingParty, Number

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def people(count: int) -> list[str]:
    return [f"+86138{n:08d}" for n in range(1, count + 1)]


def pool_numbers(count: int) -> list[str]:
    return [f"+86139{n:08d}" for n in range(1, count + 1)]


def setup_pool(store, count: int) -> int:
    with store.session() as s:
        customer = ensure_customer(s, "acme", NOW)
        pool.add_numbers(s, customer.id, pool_numbers(count), now=NOW)
        return customer.id


def doubled_pairs(store) -> list:
    with store.session() as s:
        return s.execute(
            select(BindingParty.x, BindingParty.party, func.count())
            .where(BindingParty.active.is_(True))
            .group_by(BindingParty.x, BindingParty.party)
            .having(func.count() > 1)).all()


def counters_match(store) -> None:
    """numbers.active_bindings equals the active bindings actually on each X."""
    with store.session() as s:
        actual = dict(s.execute(select(Binding.x, func.count()).where(
            Binding.ended_at.is_(None)).group_by(Binding.x)).all())
        kept = dict(s.execute(select(Number.e164, Number.active_bindings)).all())
    assert {x: n for x, n in kept.items() if n} == actual


def route(session, caller: str, x: str):
    """Route a call the way the call path does: the caller's bindings on X, then decide."""
    rows = session.scalars(select(Binding).join(
        BindingParty, BindingParty.binding_id == Binding.id).where(
        BindingParty.x == x, BindingParty.party == caller,
        BindingParty.active.is_(True))).all()
    number = session.scalar(select(Number).where(Number.e164 == x))
    facts = Facts(
        number=NumberView(x, number.customer_id, number.carrier, number.state),
        bindings=tuple(bindings.binding_view(b) for b in rows))
    return rows, decide(Call(caller, x, NOW), facts, Settings().routing)


def test_a_thousand_overlapping_pairs_each_route_to_the_right_party(store):
    cid = setup_pool(store, 50)
    crowd = people(120)
    rng = random.Random(20261204)
    numbers = pool_numbers(50)
    made, refused = [], Counter()

    for i in range(1000):
        a, b = rng.sample(crowd, 2)
        # Every fifth bind names its X, as a customer with its own bookkeeping would.
        x = rng.choice(numbers) if i % 5 == 0 else None
        try:
            with store.session() as s:
                made.append(bindings.bind(s, cid, BindRequest(Mode.AXB, a, b, x=x), now=NOW,
                                          settings=Settings()))
        except Conflict as exc:  # PoolExhausted is a Conflict too
            assert x is not None, f"allocation failed: {exc.code} {exc.message}"
            refused[exc.code] += 1

    assert len(made) > 900, refused
    assert set(refused) <= {"pair_in_use"}
    assert doubled_pairs(store) == []
    held = Counter((b.x, p) for b in made for p in (b.a, b.b))
    assert max(held.values()) == 1

    with store.session() as s:
        for binding in made:
            for caller, callee in ((binding.a, binding.b), (binding.b, binding.a)):
                rows, decision = route(s, caller, binding.x)
                assert [r.id for r in rows] == [binding.id]
                assert isinstance(decision, Connect), decision
                assert (decision.to, decision.show, decision.binding_id) == (
                    callee, binding.x, binding.id)
        stranger = people(121)[-1]
        rows, decision = route(s, stranger, made[0].x)
        assert rows == [] and decision.reason == Reason.NO_BINDING
    counters_match(store)


def race(store, cid, jobs: list[list[BindRequest]]) -> tuple[list, Counter, list]:
    """Run each list of requests in its own thread, all starting together."""
    won, lost, crashed = [], Counter(), []
    lock = threading.Lock()
    start = threading.Barrier(len(jobs))

    def worker(requests):
        start.wait(timeout=30)
        for request in requests:
            try:
                with store.session() as s:
                    binding = bindings.bind(s, cid, request, now=NOW, settings=Settings())
                with lock:
                    won.append(binding)
            except (Conflict, PoolExhausted) as exc:
                with lock:
                    lost[exc.code] += 1
            except Exception as exc:  # the failure under test: anything unclean
                with lock:
                    crashed.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a binding thread hung"
    return won, lost, crashed


def test_eight_threads_binding_overlapping_parties_never_double_a_pair(pg_store):
    cid = setup_pool(pg_store, 6)
    crowd = people(10)
    numbers = pool_numbers(6)
    jobs = []
    for seed in range(8):
        rng = random.Random(seed)
        jobs.append([BindRequest(Mode.AXB, *rng.sample(crowd, 2),
                                 x=rng.choice(numbers) if i % 2 else None)
                     for i in range(30)])

    won, lost, crashed = race(pg_store, cid, jobs)

    assert crashed == [], crashed[:3]
    assert len(won) + sum(lost.values()) == 240
    assert won and lost, (len(won), lost)
    assert set(lost) <= {"pair_in_use", "pool_exhausted"}
    assert doubled_pairs(pg_store) == []
    counters_match(pg_store)


def test_eight_threads_racing_for_one_dedicated_number_leave_one_winner(pg_store):
    cid = setup_pool(pg_store, 1)
    x = pool_numbers(1)[0]
    jobs = [[BindRequest(Mode.AX, a, x=x)] for a in people(8)]

    won, lost, crashed = race(pg_store, cid, jobs)

    assert crashed == []
    assert len(won) == 1
    assert lost == Counter({"number_in_use": 7})
    counters_match(pg_store)


@pytest.mark.parametrize("mode", [Mode.AX, Mode.AXB])
def test_eight_threads_allocating_share_the_pool_without_doubles(pg_store, mode):
    cid = setup_pool(pg_store, 4)
    a = people(1)[0]
    others = people(40)[1:]
    jobs = [[BindRequest(mode, a if mode == Mode.AXB else others[t * 4 + i],
                         others[t * 4 + i] if mode == Mode.AXB else None)
             for i in range(4)] for t in range(8)]

    won, lost, crashed = race(pg_store, cid, jobs)

    # A can hold each of the 4 numbers once (AXB); each number takes one owner (AX).
    assert crashed == []
    assert len(won) == 4
    assert sum(lost.values()) == 28
    assert set(lost) <= {"pool_exhausted", "pair_in_use"}
    assert doubled_pairs(pg_store) == []
    counters_match(pg_store)


def test_binds_unbinds_updates_and_sweeps_racing_never_deadlock_or_double(pg_store):
    """Every writer locks the X row first, then its bindings: a mixed load cannot deadlock."""
    cid = setup_pool(pg_store, 4)
    crowd = people(12)
    numbers = pool_numbers(4)
    crashed, done, lock = [], Counter(), threading.Lock()
    start = threading.Barrier(8)
    later = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)

    def step(rng, mine):
        with pg_store.session() as s:
            action = rng.random()
            if action < 0.5 or not mine:
                request = BindRequest(Mode.AXB, *rng.sample(crowd, 2),
                                      x=rng.choice(numbers) if rng.random() < 0.5 else None,
                                      expires_at=later if rng.random() < 0.3 else None)
                mine.append(bindings.bind(s, cid, request, now=NOW, settings=Settings()).id)
                kind = "bind"
            elif action < 0.7:
                bindings.unbind(s, cid, mine.pop(rng.randrange(len(mine))), now=NOW)
                kind = "unbind"
            elif action < 0.9:
                bindings.update_binding(s, cid, rng.choice(mine), now=NOW,
                                        settings=Settings(), b=rng.choice(crowd))
                kind = "update"
            else:
                bindings.sweep_expired(s, later, settings=Settings())
                kind = "sweep"
        with lock:
            done[kind] += 1

    def worker(seed):
        rng, mine = random.Random(seed), []
        start.wait(timeout=30)
        for _ in range(40):
            try:
                step(rng, mine)
            except (Conflict, Unprocessable, InvalidInput):
                pass  # taken pairs, a binding swept meanwhile, b chosen equal to a
            except Exception as exc:  # the failure under test: deadlock, IntegrityError
                with lock:
                    crashed.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert crashed == [], crashed[:3]
    assert set(done) == {"bind", "unbind", "update", "sweep"}, done
    assert doubled_pairs(pg_store) == []
    counters_match(pg_store)


@pytest.mark.parametrize("named_x", [False, True], ids=["allocated", "named X"])
def test_a_pair_written_past_the_x_lock_is_still_refused_by_the_unique_index(pg_store,
                                                                            named_x, caplog):
    """The pair check inside a bind cannot see a pair another transaction has not committed
    yet; the unique index waits for that transaction and refuses the pair once it commits.
    Allocation then goes on to the next X; a named X is ``pair_in_use``. Nothing half-written
    is left behind (the binding row, the other pair, the counter)."""
    cid = setup_pool(pg_store, 2)
    x1, x2 = pool_numbers(2)
    a, c, d, e, f = people(5)
    with pg_store.session() as s:
        # One binding on each X, so that allocation tries X1 first (same use, lower id).
        first = bindings.bind(s, cid, BindRequest(Mode.AXB, d, e, x=x1), now=NOW,
                              settings=Settings())
        bindings.bind(s, cid, BindRequest(Mode.AXB, d, f, x=x2), now=NOW, settings=Settings())
    with pg_store.engine.connect() as other:
        # A writer that adds a pair without locking X first, which no code path does: only
        # the unique index can stop it.
        other.execute(BindingParty.__table__.insert().values(
            binding_id=first.id, x=x1, party=a, role="b", active=True))

        outcome = {}

        def bind_a_and_c():
            try:
                with pg_store.session() as s:
                    outcome["x"] = bindings.bind(
                        s, cid, BindRequest(Mode.AXB, a, c, x=x1 if named_x else None),
                        now=NOW, settings=Settings()).x
            except Exception as exc:  # the outcome under test
                outcome["error"] = exc

        thread = threading.Thread(target=bind_a_and_c)
        thread.start()
        _wait_for_a_lock_wait(pg_store)
        other.commit()
        thread.join(timeout=60)

    assert not thread.is_alive()
    if named_x:
        assert isinstance(outcome.get("error"), Conflict), outcome
        assert outcome["error"].code == "pair_in_use"
    else:
        assert outcome == {"x": x2}
        assert "lost the race" in caplog.text
    assert doubled_pairs(pg_store) == []
    with pg_store.session() as s:
        pairs = sorted(s.execute(select(BindingParty.x, BindingParty.party)).all())
        kept = dict(s.execute(select(Number.e164, Number.active_bindings)).all())
    before = [(x1, d), (x1, e), (x2, d), (x2, f), (x1, a)]
    assert pairs == sorted(before + ([] if named_x else [(x2, a), (x2, c)]))
    assert kept == {x1: 1, x2: 1 if named_x else 2}


def _wait_for_a_lock_wait(store, timeout_s: float = 10.0) -> None:
    """Until a session of this database waits on a lock (the bind, on the uncommitted pair)."""
    deadline = time.monotonic() + timeout_s
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND wait_event_type = 'Lock'")
    with store.engine.connect() as conn:
        while conn.execute(query).scalar_one() == 0:
            assert time.monotonic() < deadline, "the bind never waited on the pair"
            time.sleep(0.01)
            conn.rollback()
