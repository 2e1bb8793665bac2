"""Storage: the schema, the engine and its sessions, and the Alembic migrations."""

from .db import Store, utcnow

__all__ = ["Store", "utcnow"]
