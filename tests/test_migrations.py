"""The migrations build exactly the schema storage/tables.py describes, and go both ways."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from pbx_control.storage.db import normalise_url
from pbx_control.storage.migrate import current, downgrade, upgrade
from pbx_control.storage.tables import Base


def _differences(url: str) -> list:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.sqlite'}"
    return request.getfixturevalue("empty_pg_url")


def test_head_matches_the_tables_module(fresh_url):
    upgrade(fresh_url)

    assert current(fresh_url) is not None
    assert _differences(fresh_url) == []


def test_downgrade_to_base_and_back_leaves_the_same_schema(fresh_url):
    upgrade(fresh_url)
    downgrade(fresh_url, "base")

    assert current(fresh_url) is None

    upgrade(fresh_url)
    assert _differences(fresh_url) == []
