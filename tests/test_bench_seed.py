"""The seeder's rows are the ones the service would write: routing, bind and unbind work on
them, counters match, and the bindings benchmark runs on them without doubling a pair."""

import os
from datetime import UTC, datetime

import psycopg
import pytest

from pbx_control import config
from pbx_control.bench import bindbench, seed
from pbx_control.bench.workload import Workload, party_a, party_b, stranger, x_number
from pbx_control.bindings import BindRequest, bind, unbind
from pbx_control.calls import CallService
from pbx_control.routing import Mode
from pbx_control.storage import Store

PG_ADMIN_URL = os.environ.get("PBX_CONTROL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
WORKLOAD = Workload(bindings=60, numbers=7)


def _seeded(workload: Workload):
    if os.environ.get("PBX_CONTROL_TEST_SKIP_PG") == "1":
        pytest.skip("PBX_CONTROL_TEST_SKIP_PG=1")
    url = seed.create_database(PG_ADMIN_URL, prefix="pbx_test_seed")
    try:
        seed.seed(url, workload)
        yield url
    finally:
        seed.drop_database(PG_ADMIN_URL, url)


@pytest.fixture(scope="module")
def seeded_url():
    """Shared by the tests that leave the seeded bindings as they are."""
    yield from _seeded(WORKLOAD)


@pytest.fixture
def own_store():
    """A seeded database of the test's own, for a test that ends seeded bindings."""
    for url in _seeded(Workload(bindings=10, numbers=3)):
        store = Store(url, application_name="pbx-control-tests")
        yield store
        store.dispose()


@pytest.fixture
def service_store(seeded_url):
    store = Store(seeded_url, application_name="pbx-control-tests")
    yield store
    store.dispose()


def test_seeding_loads_every_binding_pair_and_counter(seeded_url):
    with psycopg.connect(seed.libpq_url(seeded_url)) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM numbers), (SELECT count(*) FROM bindings),"
            " (SELECT count(*) FROM binding_parties WHERE active),"
            " (SELECT sum(active_bindings) FROM numbers)").fetchone()
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        foreign = {r[0] for r in conn.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f' AND convalidated")}

    assert counts == (7, 60, 120, 60)
    assert {"ix_bindings_x_active", "ix_binding_parties_party",
            "ux_binding_parties_active"} <= indexes
    # Dropped for the load, added back and checked after it.
    assert {"fk_bindings_number_id_numbers", "fk_binding_parties_binding_id_bindings"} <= foreign
    assert bindbench.integrity(seeded_url) == {
        "doubled_pairs": 0, "counter_mismatches": 0, "numbers_over_limit": 0}


def test_a_seeded_database_is_not_seeded_twice(seeded_url):
    with pytest.raises(RuntimeError):
        seed.seed(seeded_url, WORKLOAD)


def test_routing_reads_the_seeded_bindings_like_bound_ones(service_store):
    service = CallService(service_store, config.Settings(), pbx="freeswitch", node="t")

    decision, _ = service.explain(party_b(12), x_number(12 % 7))
    assert decision.connected and decision.to == party_a(12) and decision.show == x_number(5)
    decision, _ = service.explain(stranger(1), x_number(5))
    assert not decision.connected


def test_the_service_binds_and_unbinds_on_the_seeded_pool(own_store):
    settings = config.Settings()
    now = datetime.now(UTC)
    with own_store.session() as session:
        created = bind(session, 1, BindRequest(mode=Mode.AXB, a=party_a(0), b=stranger(9)),
                       now=now, settings=settings)
        assert created.x != x_number(0)  # A already holds a pair on X(0)
    with own_store.session() as session:
        unbind(session, 1, created.id, now=now, settings=settings)
        unbind(session, 1, seed.binding_id(3, _created_ms(own_store)), now=now,
               settings=settings)

    assert bindbench.integrity(own_store.url) == {
        "doubled_pairs": 0, "counter_mismatches": 0, "numbers_over_limit": 0}


def _created_ms(store) -> int:
    with psycopg.connect(seed.libpq_url(store.url)) as conn:
        first = conn.execute("SELECT id FROM bindings WHERE a = %s", (party_a(3),)).fetchone()
    return int(first[0][1:13], 16)


def test_the_bindings_benchmark_runs_its_phases_without_doubling_a_pair(seeded_url):
    phases, checks = bindbench.run_phases(seeded_url, WORKLOAD, clients=2, seconds=0.3,
                                          settle_s=0.5)

    names = [p.name for p in phases]
    assert names[:3] == ["bind (allocated X)", "look up by id", "unbind"]
    bound, _, unbound = phases[:3]
    assert bound.done > 0 and unbound.done == bound.done and not unbound.errors
    assert all(p.wrong == 0 for p in phases)
    assert checks == {"doubled_pairs": 0, "counter_mismatches": 0, "numbers_over_limit": 0}
