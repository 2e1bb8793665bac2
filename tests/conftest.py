"""Fixtures shared by the suite: a database of each kind per run, emptied between tests.

Every storage test runs on SQLite and on the PostgreSQL server at 127.0.0.1:5432
(``PBX_CONTROL_TEST_PG``, default ``postgresql://postgres@127.0.0.1:5432/test``). Each run
creates a database of its own there and drops it at the end, so runs never see each other's
rows. ``PBX_CONTROL_TEST_SKIP_PG=1`` runs SQLite only (for a machine without PostgreSQL); CI
never sets it.
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from pbx_control.config import Settings
from pbx_control.storage import Store
from pbx_control.storage.migrate import upgrade
from pbx_control.storage.tables import Base

PG_ADMIN_URL = os.environ.get(
    "PBX_CONTROL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"
)
SKIP_PG = os.environ.get("PBX_CONTROL_TEST_SKIP_PG") == "1"


def _pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}".replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL database of this run's own, migrated to head."""
    if SKIP_PG:
        pytest.skip("PBX_CONTROL_TEST_SKIP_PG=1")
    name = f"pbx_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(_pg_url(PG_ADMIN_URL.rpartition("/")[2]), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _pg_url(name)
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
        ), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "pbx.sqlite"
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


def _empty(store: Store) -> None:
    with store.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request):
    """A Store on an empty, migrated database; runs each test once per database kind."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    store = Store(url, application_name="pbx-control-tests")
    _empty(store)
    yield store
    store.dispose()


@pytest.fixture
def pg_store(pg_url):
    """A Store on PostgreSQL only, for tests of concurrency that SQLite cannot show."""
    store = Store(pg_url, application_name="pbx-control-tests")
    _empty(store)
    yield store
    store.dispose()


@pytest.fixture
def sqlite_store(sqlite_url):
    store = Store(sqlite_url, application_name="pbx-control-tests")
    _empty(store)
    yield store
    store.dispose()


@pytest.fixture
def settings(tmp_path):
    settings = Settings()
    settings.database_url = f"sqlite:///{tmp_path / 'settings.sqlite'}"
    return settings


@pytest.fixture
def empty_pg_url():
    """A PostgreSQL database of this test's own with no schema at all (never migrated)."""
    if SKIP_PG:
        pytest.skip("PBX_CONTROL_TEST_SKIP_PG=1")
    name = f"pbx_empty_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(_pg_url(PG_ADMIN_URL.rpartition("/")[2]), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield _pg_url(name)
    with admin.connect() as conn:
        conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
        ), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()
