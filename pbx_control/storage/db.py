"""The engine and its sessions, for SQLite (embedded default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from ..config import ConfigError
from ..errors import StorageUnavailable

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
SCHEMA_MISSING = "database schema missing or outdated: run 'pbx-control db upgrade'"
# PostgreSQL's undefined_table and undefined_column: the schema is behind the code.
_SCHEMA_SQLSTATES = {"42P01", "42703"}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for timezone-aware columns: they were stored as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def normalise_url(url: str) -> str:
    """Accept postgresql:// and postgres:// for psycopg 3, as operators write them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str, application_name: str = "pbx-control", **kwargs) -> Engine:
    url = normalise_url(url)
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        # The URL may hold a password: it is not echoed.
        raise ConfigError("database_url: not a database URL (sqlite:///FILE or "
                          "postgresql://USER@HOST/DB)") from None
    if backend == "postgresql":
        connect_args = {"application_name": application_name, "connect_timeout": 5}
        kwargs.setdefault("pool_pre_ping", True)
        if "poolclass" not in kwargs:
            kwargs.setdefault("pool_size", 10)
            kwargs.setdefault("max_overflow", 20)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
    elif backend == "sqlite":
        _create_private(make_url(url).database)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    else:
        raise ConfigError(f"database_url: unsupported database {backend!r}: use sqlite or "
                          "postgresql")
    return engine


def _create_private(database: str | None) -> None:
    """Create a new SQLite file readable by its owner only: it holds every real number.

    SQLite gives its -wal and -shm files the mode of the database file. An existing file
    keeps its mode (the operator may have chosen it); a missing directory is left for
    SQLite to report.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except (FileExistsError, FileNotFoundError, NotADirectoryError):
        return
    logger.info("created the SQLite database file with mode 0600")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # pysqlite's own transaction handling is turned off so that BEGIN IMMEDIATE below takes
    # the write lock at the start: two binds then queue instead of failing on upgrade.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    """The database as the rest of the code sees it: an engine and a session factory.

    Passed through constructors so that tests hand in a store on their own database.
    """

    def __init__(self, url: str, application_name: str = "pbx-control", **engine_kwargs):
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, application_name, **engine_kwargs)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on any error."""
        with self._translated(), self.sessions.begin() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction on a plain connection, for the per-call paths: without the ORM
        session, whose set-up and unit of work cost more than their few statements."""
        with self._translated(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) not in _SCHEMA_SQLSTATES:
                raise
            # Not chained: the statement's parameters hold phone numbers.
            logger.info("storage: %s", SCHEMA_MISSING)
            raise StorageUnavailable(SCHEMA_MISSING, code="schema_missing") from None
        except OperationalError as exc:
            if "no such table" in str(exc.orig) or "no such column" in str(exc.orig):
                logger.info("storage: %s", SCHEMA_MISSING)
                raise StorageUnavailable(SCHEMA_MISSING, code="schema_missing") from None
            logger.warning("storage unavailable: %s", type(exc).__name__)
            raise StorageUnavailable("storage unavailable") from exc

    def dispose(self) -> None:
        self.engine.dispose()
