"""A benchmark database of its own, loaded with AXB bindings by COPY.

The rows are what ``bindings.bind`` would have written (one ``bindings`` row, one active
``binding_parties`` row per party, ``numbers.active_bindings`` and ``total_bindings`` counted),
only without a transaction per binding: a million binds through the service would take the
better part of an hour. The secondary indexes are dropped during the load and rebuilt from
their own definitions afterwards, which PostgreSQL does far faster than index maintenance row
by row. The unique indexes (the active pair, the active out_id) are among them: building one
again fails on a doubled pair, so a doubled pair still fails the seed, only at the end. The
foreign keys are dropped and added again the same way; the primary keys stay.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from ..customers import ensure_customer
from ..storage import Store
from ..storage.migrate import upgrade
from . import arguments
from .workload import Workload, party_a, party_b, x_number

logger = logging.getLogger(__name__)

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CHUNK_ROWS = 50_000


def libpq_url(url: str) -> str:
    """psycopg wants the plain form; SQLAlchemy URLs carry the driver name."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def database_url(admin_url: str, name: str) -> str:
    base, _, _ = libpq_url(admin_url).rpartition("/")
    return f"{base}/{name}"


def create_database(admin_url: str, prefix: str = "pbx_bench") -> str:
    """Create and migrate a database named for this run; returns its URL."""
    name = f"{prefix}_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url(admin_url, name)
    try:
        upgrade(url)
    except BaseException:
        drop_database(admin_url, url)
        raise
    logger.info("database %s created and migrated", name)
    return url


def drop_database(admin_url: str, url: str) -> None:
    name = libpq_url(url).rpartition("/")[2]
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def create_and_seed(admin_url: str, workload: Workload) -> tuple[str, SeedResult]:
    """A new database holding ``workload``; dropped again if it could not be loaded."""
    url = create_database(admin_url)
    try:
        return url, seed(url, workload)
    except BaseException:
        drop_database(admin_url, url)
        raise


def check_seeded(url: str, workload: Workload) -> None:
    """Refuse a database that does not hold exactly the seeded ``workload``: the generator
    derives each binding's X and parties from the two counts, so other counts would make it
    expect wrong decisions and blame the controller."""
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            numbers = conn.execute("SELECT count(*) FROM numbers").fetchone()[0]
            active = conn.execute(
                "SELECT count(*) FROM bindings WHERE ended_at IS NULL").fetchone()[0]
    except psycopg.errors.UndefinedTable:
        raise SystemExit(f"{mask_url(url)}: no pbx-control tables (seed_bindings loads a "
                         "database)") from None
    if (numbers, active) != (workload.numbers, workload.bindings):
        raise SystemExit(f"{mask_url(url)}: {numbers} numbers and {active} active bindings, "
                         f"not --numbers {workload.numbers} --bindings {workload.bindings} "
                         "(seed_bindings loads them)")


def mask_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        return url


@dataclass
class SeedResult:
    customer_id: int
    numbers: int
    bindings: int
    parties: int
    seconds: float


def seed(url: str, workload: Workload, customer: str = "default") -> SeedResult:
    """Load ``workload`` into an empty, migrated PostgreSQL database at ``url``."""
    started = time.monotonic()
    customer_id = _customer(url, customer)
    now = datetime.now(UTC)

    with psycopg.connect(libpq_url(url)) as conn:
        _refuse_if_loaded(conn)
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        dropped = _drop_secondary_indexes(conn, ("bindings", "binding_parties"))
        foreign = _drop_foreign_keys(conn, ("bindings", "binding_parties"))
        number_ids = _copy_numbers(conn, workload, customer_id, now)
        created_ms = int(now.timestamp() * 1000)
        _copy_bindings(conn, workload, customer_id, number_ids, now, created_ms)
        _copy_parties(conn, workload, created_ms)
        _recreate_indexes(conn, dropped)
        _recreate_indexes(conn, foreign)
        conn.commit()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("ANALYZE numbers, bindings, binding_parties")

    seconds = time.monotonic() - started
    logger.info("seeded %d bindings on %d numbers in %.1f s", workload.bindings,
                workload.numbers, seconds)
    return SeedResult(customer_id, workload.numbers, workload.bindings, 2 * workload.bindings,
                      seconds)


def _customer(url: str, name: str) -> int:
    store = Store(url, application_name="pbx-control-bench-seed")
    try:
        with store.session() as session:
            return ensure_customer(session, name, datetime.now(UTC)).id
    finally:
        store.dispose()


def _refuse_if_loaded(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT EXISTS (SELECT 1 FROM numbers)").fetchone()[0]:
        raise RuntimeError("the database already holds numbers: seed an empty one")


def _drop_secondary_indexes(conn, tables) -> list[str]:
    """Drop the indexes of ``tables`` that back no constraint (the primary keys stay); return
    their DDL to build them again."""
    rows = conn.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i "
        "JOIN pg_class c ON c.relname = i.indexname AND c.relkind = 'i' "
        "WHERE i.schemaname = 'public' AND i.tablename = ANY(%s) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)",
        (list(tables),)).fetchall()
    for name, _ in rows:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    return [ddl for _, ddl in rows]


def _drop_foreign_keys(conn, tables) -> list[str]:
    """Drop the foreign keys of ``tables``; return the DDL that adds them again. Added again
    after the load, each is checked in one pass over the table instead of a lookup per row,
    and a row that breaks one still fails the seed."""
    rows = conn.execute(
        "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
        "FROM pg_constraint c WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY(%s)",
        (list(tables),)).fetchall()
    for table, name, _ in rows:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(table), sql.Identifier(name)))
    return [f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {ddl}' for table, name, ddl in rows]


def _recreate_indexes(conn, ddl: list[str]) -> None:
    for statement in ddl:
        conn.execute(statement)


def _copy_numbers(conn, workload: Workload, customer_id: int, now) -> dict[int, int]:
    columns = ("customer_id, e164, carrier, city, voice, sms, state, active_bindings, "
               "total_bindings, created_at")
    with conn.cursor().copy(f"COPY numbers ({columns}) FROM STDIN") as copy:
        for i in range(workload.numbers):
            used = workload.per_number(i)
            copy.write_row((customer_id, x_number(i), "default", None, True, True,
                            "available", used, used, now))
    rows = conn.execute("SELECT e164, id FROM numbers WHERE customer_id = %s",
                        (customer_id,)).fetchall()
    by_e164 = dict(rows)
    return {i: by_e164[x_number(i)] for i in range(workload.numbers)}


def binding_id(k: int, created_ms: int) -> str:
    """The shape of ``binding_rules.new_binding_id`` ('b', 12 hex of ms, 16 hex), made unique
    by the binding's index instead of randomness."""
    return f"b{created_ms:012x}{k:016x}"


def _copy_bindings(conn, workload, customer_id, number_ids, now, created_ms: int) -> None:
    columns = ("id, customer_id, mode, number_id, x, a, b, direction, record, sms, "
               "allow_withheld, is_primary, created_at, updated_at")
    stamp = now.isoformat()
    with conn.cursor().copy(f"COPY bindings ({columns}) FROM STDIN") as copy:
        lines = []
        for k in range(workload.bindings):
            i = k % workload.numbers
            lines.append(f"{binding_id(k, created_ms)}\t{customer_id}\taxb\t{number_ids[i]}\t"
                         f"{x_number(i)}\t{party_a(k)}\t{party_b(k)}\tboth\tf\tt\tf\tf\t"
                         f"{stamp}\t{stamp}\n")
            if len(lines) >= CHUNK_ROWS:
                copy.write("".join(lines))
                lines.clear()
        copy.write("".join(lines))


def _copy_parties(conn, workload: Workload, created_ms: int) -> None:
    with conn.cursor().copy(
            "COPY binding_parties (binding_id, x, party, role, active) FROM STDIN") as copy:
        lines = []
        for k in range(workload.bindings):
            bid, x = binding_id(k, created_ms), x_number(k % workload.numbers)
            lines.append(f"{bid}\t{x}\t{party_a(k)}\ta\tt\n{bid}\t{x}\t{party_b(k)}\tb\tt\n")
            if len(lines) >= CHUNK_ROWS:
                copy.write("".join(lines))
                lines.clear()
        copy.write("".join(lines))


def main(argv: list[str] | None = None) -> int:
    """``scripts/seed_bindings``: a new database (or an empty one named) loaded by COPY."""
    import argparse

    p = argparse.ArgumentParser(prog="seed_bindings", description=main.__doc__)
    p.add_argument("--bindings", type=arguments.positive_int, default=1_000_000,
                   help="AXB bindings (1000000)")
    p.add_argument("--numbers", type=arguments.positive_int, default=10_000,
                   help="pool numbers X (10000)")
    p.add_argument("--admin-url", default=DEFAULT_ADMIN_URL,
                   help="PostgreSQL server where the new database is created")
    p.add_argument("--database-url", help="seed this empty database instead (migrated here)")
    args = p.parse_args(argv)
    workload = arguments.workload(p, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    with arguments.database_errors("seed_bindings"):
        return _seed_and_say(args, workload)


def _seed_and_say(args, workload: Workload) -> int:
    if args.database_url:
        url = args.database_url
        upgrade(url)
        result = seed(url, workload)
    else:
        url, result = create_and_seed(args.admin_url, workload)
    print(f"{result.bindings} AXB bindings ({result.parties} pairs) on {result.numbers} numbers "
          f"loaded in {result.seconds:.1f} s")
    print(f"database: {url}")
    return 0
