"""Alembic migrations of the pbx-control schema (run by ``pbx-control db upgrade``)."""
