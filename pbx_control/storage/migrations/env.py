"""Alembic environment: runs migrations on the connection or URL that pbx-control hands in."""

from alembic import context
from sqlalchemy import pool, text

from pbx_control.storage.db import make_engine
from pbx_control.storage.tables import Base

config = context.config
target_metadata = Base.metadata
# Key of the advisory lock that lets one `db upgrade` at a time migrate a PostgreSQL database.
MIGRATION_LOCK = 0x7062_7863  # "pbxc"


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return

    engine = make_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection) -> None:
    if connection.dialect.name == "postgresql":
        # Concurrent upgrades of an empty database would all create alembic_version and the
        # tables; the losers failed with IntegrityError. The lock is held to the end of the
        # session, so the next one waits, then finds the schema at head and does nothing.
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()

    _migrate(connection)

    # On failure the lock goes with the connection, which NullPool closes.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()


def _migrate(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
