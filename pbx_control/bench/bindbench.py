"""``scripts/bench_bindings``: bind (with allocation from the pool), look up and unbind
throughput with concurrent clients, and the routing lookup rate, against PostgreSQL holding
the seeded bindings.

Each client is a process of its own with its own connection, as API workers would be, so the
figures are not bounded by one interpreter's lock. Every phase runs the product's own service
functions (``bindings.bind``, ``get_binding``, ``unbind``, ``CallService.explain``), one
transaction per operation, exactly as the CLI and the HTTP API call them.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from sqlalchemy import text

from .. import config
from ..bindings import BindRequest, bind, get_binding, unbind
from ..errors import PbxControlError
from ..routing import Mode
from ..storage import Store
from ..storage.db import utcnow
from . import arguments, experiments, procs, seed
from .loadgen import format_table, now_utc
from .workload import Workload, call_mix, fresh_party

logger = logging.getLogger(__name__)

FRESH_PER_CLIENT = 1_000_000  # fresh party numbers reserved for each client's binds


@dataclass
class PhaseResult:
    name: str
    clients: int
    done: int = 0
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    wrong: int = 0
    ids: list[str] = field(default_factory=list)  # what the bind phase created

    @property
    def per_s(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def row(self) -> dict:
        values = sorted(self.latencies)

        def pct(p: float) -> str:
            if not values:
                return "-"
            return f"{values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000:.1f}"

        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "0"
        return {"operation": self.name, "clients": str(self.clients), "done": str(self.done),
                "per s": f"{self.per_s:.0f}", "p50 ms": pct(50), "p99 ms": pct(99),
                "errors": errors, "wrong": str(self.wrong)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_bindings", description=__doc__.split("\n\n")[0])
    p.add_argument("--bindings", type=arguments.positive_int, default=1_000_000,
                   help="seeded bindings (1000000)")
    p.add_argument("--numbers", type=arguments.positive_int, default=10_000,
                   help="pool numbers (10000)")
    p.add_argument("--clients", type=arguments.int_from_to(1, 64), default=8,
                   help="concurrent clients (8)")
    p.add_argument("--seconds", type=arguments.positive_float, default=10.0,
                   help="length of each timed phase")
    p.add_argument("--database-url", help="an already seeded database (seed_bindings)")
    p.add_argument("--admin-url", default=seed.DEFAULT_ADMIN_URL)
    p.add_argument("--keep-database", action="store_true")
    p.add_argument("--experiment", action="append", choices=experiments.DATABASE, default=[],
                   help="what-if change made to the benchmark's database before the run")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    workload = arguments.workload(p, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # The product logs each bind and unbind at INFO: thousands of lines a second here.
    logging.getLogger("pbx_control.bindings").setLevel(logging.WARNING)
    with arguments.database_errors("bench_bindings"):
        return _run(args, workload)


def _run(args, workload: Workload) -> int:
    created = args.database_url is None
    if created:
        url, _ = seed.create_and_seed(args.admin_url, workload)
    else:
        url = args.database_url
        seed.check_seeded(url, workload)
    try:
        _experiments(url, args.experiment)
        phases, checks = run_phases(url, workload, args.clients, args.seconds)
        _report(url, args, phases, checks)
        return 0 if not checks["doubled_pairs"] and not checks["counter_mismatches"] else 1
    finally:
        if created and not args.keep_database:
            seed.drop_database(args.admin_url, url)


def _experiments(url: str, names: list[str]) -> None:
    if "least-used-index" in names:
        with psycopg.connect(seed.libpq_url(url), autocommit=True) as conn:
            conn.execute(experiments.LEAST_USED_INDEX)
            conn.execute("ANALYZE numbers")
        logger.warning("experiment: index ix_bench_numbers_least_used created on %s", url)


def run_phases(url: str, workload: Workload, clients: int, seconds: float,
               settle_s: float = 2.0):
    """Bind, look up, unbind, route; then the integrity checks.

    Each phase starts ``settle_s`` after its clients were forked, once all are connected.
    """
    def phase(name, worker, n, timed, payload):
        return _phase(name, worker, url, n, timed, payload, settle_s)

    bound = phase("bind (allocated X)", _bind_worker, clients, seconds, None)
    phases = [bound,
              phase("look up by id", _lookup_worker, clients, seconds, bound.ids),
              phase("unbind", _unbind_worker, clients, None, bound.ids),
              phase("route lookup (explain)", _route_worker, clients, seconds, workload),
              phase("route lookup (explain)", _route_worker, 1, seconds, workload)]
    return phases, integrity(url)


def integrity(url: str) -> dict:
    """What must hold after any run: no active (X, party) pair twice, counters right."""
    with psycopg.connect(seed.libpq_url(url)) as conn:
        doubled = conn.execute(
            "SELECT count(*) FROM (SELECT x, party FROM binding_parties WHERE active "
            "GROUP BY x, party HAVING count(*) > 1) d").fetchone()[0]
        mismatched = conn.execute(
            "SELECT count(*) FROM numbers n LEFT JOIN (SELECT number_id, count(*) c "
            "FROM bindings WHERE ended_at IS NULL GROUP BY number_id) b "
            "ON b.number_id = n.id WHERE n.active_bindings <> coalesce(b.c, 0)").fetchone()[0]
        over = conn.execute("SELECT count(*) FROM numbers WHERE active_bindings > %s",
                            (config.RoutingSettings().max_axb_per_number,)).fetchone()[0]
    return {"doubled_pairs": doubled, "counter_mismatches": mismatched,
            "numbers_over_limit": over}


def _ignore_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _phase(name, worker, url, clients, seconds, payload, settle_s) -> PhaseResult:
    start_at = time.time() + settle_s  # every client connected before the clock starts
    jobs = [(w, clients, url, start_at, seconds, payload) for w in range(clients)]
    # Workers leave Ctrl-C to the parent, which ends the pool and drops its database.
    with multiprocessing.get_context("fork").Pool(clients, initializer=_ignore_interrupt) as pool:
        outputs = pool.starmap(worker, jobs)
    result = PhaseResult(name, clients)
    for out in outputs:
        result.done += out["done"]
        result.errors.update(out["errors"])
        result.latencies += out["latencies"]
        result.wrong += out.get("wrong", 0)
        result.ids += out.get("ids", [])
    result.seconds = max(out["ended"] for out in outputs) - start_at
    logger.info("%s: %s", name, result.row())
    return result


def _client(url: str, start_at: float):
    store = Store(url, application_name="pbx-control-bench", pool_size=1, max_overflow=0)
    settings = config.Settings(database_url=url)
    with store.session() as session:
        customer_id = session.execute(
            text("SELECT id FROM customers WHERE name = 'default'")).scalar_one()
    time.sleep(max(0.0, start_at - time.time()))
    return store, settings, customer_id


def _timed(store, op, errors: Counter, latencies: list[float]) -> bool:
    began = time.perf_counter()
    try:
        with store.session() as session:
            op(session)
    except PbxControlError as exc:
        errors[exc.code] += 1
        return False
    latencies.append(time.perf_counter() - began)
    return True


def _bind_worker(w, clients, url, start_at, seconds, _payload) -> dict:
    store, settings, customer_id = _client(url, start_at)
    out = {"done": 0, "errors": Counter(), "latencies": [], "ids": []}
    end, i = start_at + seconds, 0
    while time.time() < end:
        j = (w * FRESH_PER_CLIENT + i) * 2
        request = BindRequest(mode=Mode.AXB, a=fresh_party(j), b=fresh_party(j + 1))

        def op(session, request=request):
            out["ids"].append(bind(session, customer_id, request, now=utcnow(),
                                   settings=settings).id)

        out["done"] += _timed(store, op, out["errors"], out["latencies"])
        i += 1
    out["ended"] = time.time()
    store.dispose()
    return out


def _lookup_worker(w, clients, url, start_at, seconds, ids) -> dict:
    store, _settings, customer_id = _client(url, start_at)
    out = {"done": 0, "errors": Counter(), "latencies": []}
    rng, end = random.Random(w), start_at + seconds
    while time.time() < end and ids:
        binding_id = rng.choice(ids)
        out["done"] += _timed(store, lambda s, b=binding_id: get_binding(s, customer_id, b),
                              out["errors"], out["latencies"])
    out["ended"] = time.time()
    store.dispose()
    return out


def _unbind_worker(w, clients, url, start_at, _seconds, ids) -> dict:
    store, settings, customer_id = _client(url, start_at)
    out = {"done": 0, "errors": Counter(), "latencies": []}
    for binding_id in ids[w::clients]:
        out["done"] += _timed(
            store, lambda s, b=binding_id: unbind(s, customer_id, b, now=utcnow(),
                                                  settings=settings),
            out["errors"], out["latencies"])
    out["ended"] = time.time()
    store.dispose()
    return out


def _route_worker(w, clients, url, start_at, seconds, workload: Workload) -> dict:
    from ..calls import CallService

    store, settings, _customer_id = _client(url, start_at)
    service = CallService(store, settings, pbx="freeswitch", node="bench")
    out = {"done": 0, "errors": Counter(), "latencies": [], "wrong": 0}
    calls, end = call_mix(workload, seed=w + 1), start_at + seconds
    while time.time() < end:
        spec = next(calls)
        began = time.perf_counter()
        try:
            decision, _facts = service.explain(spec.caller, spec.dialed)
        except PbxControlError as exc:
            out["errors"][exc.code] += 1
            continue
        out["latencies"].append(time.perf_counter() - began)
        out["done"] += 1
        out["wrong"] += _wrong(decision, spec)
    out["ended"] = time.time()
    store.dispose()
    return out


def _wrong(decision, spec) -> int:
    if spec.expect_to is None:
        return int(decision.connected)
    return int(not decision.connected or decision.to != spec.expect_to
               or decision.show != spec.dialed)


def _report(url: str, args, phases: list[PhaseResult], checks: dict) -> None:
    print(f"\nbench_bindings, {now_utc()}")
    print(f"machine: {procs.machine_summary(url)}")
    if args.experiment:
        print(f"EXPERIMENT, not the schema as shipped: {', '.join(args.experiment)}")
    print(f"database: {args.bindings} seeded AXB bindings on {args.numbers} numbers; "
          f"{args.seconds:g} s per timed phase\n")
    print(format_table([p.row() for p in phases]))
    print(f"\nactive (X, party) pairs held twice: {checks['doubled_pairs']}")
    print(f"numbers whose active_bindings differs from their active bindings: "
          f"{checks['counter_mismatches']}")
    print(f"numbers over the AXB limit: {checks['numbers_over_limit']}")
