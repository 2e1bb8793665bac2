"""The schema: every table pbx-control keeps, as SQLAlchemy 2 mapped classes.

What must never happen twice is a constraint here, not a check in Python: an active (X, party)
pair (``ux_binding_parties_active``), an active out_id per customer (``ux_bindings_out_id``).
Alembic migrations in ``storage/migrations`` create and upgrade these tables; a change here
needs a migration.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: DateTime(timezone=True)}


def _where(condition: str) -> dict:
    """A partial index condition for both PostgreSQL and SQLite."""
    return {"postgresql_where": text(condition), "sqlite_where": text(condition)}


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled
    created_at: Mapped[datetime]
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_secret: Mapped[str | None] = mapped_column(String(128))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    # The first characters of the key, shown in listings and used to find the row; the key
    # itself is stored only as a hash.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    label: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Number(Base):
    """A virtual number X of the pool."""

    __tablename__ = "numbers"
    __table_args__ = (
        # The allocation order of pool._candidates, with a city and without one (0002).
        Index("ix_numbers_allocation", "customer_id", "state", "city", "active_bindings",
              "total_bindings", "id"),
        Index("ix_numbers_least_used", "customer_id", "state", "active_bindings",
              "total_bindings", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    e164: Mapped[str] = mapped_column(String(20), unique=True)
    carrier: Mapped[str] = mapped_column(String(64), default="default")
    city: Mapped[str | None] = mapped_column(String(64))
    voice: Mapped[bool] = mapped_column(Boolean, default=True)
    sms: Mapped[bool] = mapped_column(Boolean, default=True)
    # available | dedicated | cooling | retired (routing.NumberState)
    state: Mapped[str] = mapped_column(String(16), default="available")
    cooling_until: Mapped[datetime | None]
    # Kept in the same transaction as the bindings: the AXB share limit and "least used".
    active_bindings: Mapped[int] = mapped_column(Integer, default=0)
    total_bindings: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]


class Group(Base):
    """AXG's allow-group: the callers who may reach A."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("customer_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), primary_key=True)
    number: Mapped[str] = mapped_column(String(20), primary_key=True)
    created_at: Mapped[datetime]


class Softphone(Base):
    """A directory user (FreeSWITCH) or endpoint (Asterisk) and the subscriber it stands for."""

    __tablename__ = "softphones"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    username: Mapped[str] = mapped_column(String(64), unique=True)
    subscriber: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime]


class Binding(Base):
    __tablename__ = "bindings"
    __table_args__ = (
        Index(
            "ux_bindings_out_id", "customer_id", "out_id", unique=True,
            **_where("ended_at IS NULL AND out_id IS NOT NULL"),
        ),
        Index("ix_bindings_x_active", "x", **_where("ended_at IS NULL")),
        Index("ix_bindings_expires", "expires_at", **_where("ended_at IS NULL")),
        Index("ix_bindings_customer_created", "customer_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    mode: Mapped[str] = mapped_column(String(8))  # routing.Mode
    number_id: Mapped[int] = mapped_column(ForeignKey("numbers.id"))
    x: Mapped[str] = mapped_column(String(20))
    a: Mapped[str] = mapped_column(String(20))
    b: Mapped[str | None] = mapped_column(String(20))
    default_party: Mapped[str | None] = mapped_column(String(20))
    softphone: Mapped[str | None] = mapped_column(String(64))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id"))
    direction: Mapped[str] = mapped_column(String(8), default="both")  # routing.Direction
    record: Mapped[bool] = mapped_column(Boolean, default=False)
    sms: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_withheld: Mapped[bool] = mapped_column(Boolean, default=False)
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    max_call_s: Mapped[int | None] = mapped_column(Integer)
    out_id: Mapped[str | None] = mapped_column(String(128))
    # Hash of what a retry must repeat (parties, mode, flags) for out_id idempotency.
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(32))  # unbound | expired | retired


class BindingParty(Base):
    """One (X, party) pair of a binding. Active rows are unique per (X, party).

    After release the row stays, with ``released_at``, so allocation can keep the pair out of
    its cool-down.
    """

    __tablename__ = "binding_parties"
    __table_args__ = (
        Index("ux_binding_parties_active", "x", "party", unique=True, **_where("active")),
        Index("ix_binding_parties_party", "party", "x", "released_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    binding_id: Mapped[str] = mapped_column(ForeignKey("bindings.id"), index=True)
    x: Mapped[str] = mapped_column(String(20))
    party: Mapped[str] = mapped_column(String(20))
    role: Mapped[str] = mapped_column(String(1))  # a | b
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    released_at: Mapped[datetime | None]


class BlacklistEntry(Base):
    """A caller refused for a whole customer (``x`` empty) or on one X."""

    __tablename__ = "blacklist"
    __table_args__ = (
        UniqueConstraint("customer_id", "number", "x"),
        Index("ix_blacklist_number", "number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    number: Mapped[str] = mapped_column(String(20))
    # '' rather than NULL for "every X": NULLs never collide in a unique constraint.
    x: Mapped[str] = mapped_column(String(20), default="")
    reason: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime]


class CallRecord(Base):
    """One call attempt, connected or refused, from first sight to its end."""

    __tablename__ = "call_records"
    __table_args__ = (
        Index("ix_call_records_rate", "x", "caller", "started_at"),
        Index("ix_call_records_customer_started", "customer_id", "started_at"),
        Index("ix_call_records_call_uuid", "call_uuid"),
        Index("ix_call_records_binding", "binding_id"),
        Index("ix_call_records_open", "pbx", "node", **_where("ended_at IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    binding_id: Mapped[str | None] = mapped_column(String(32))
    out_id: Mapped[str | None] = mapped_column(String(128))
    direction: Mapped[str] = mapped_column(String(8), default="inbound")  # inbound | outbound
    x: Mapped[str | None] = mapped_column(String(20))
    # As received when it is not a usable number (withheld, a user name): up to 64 chars.
    caller: Mapped[str | None] = mapped_column(String(64))
    callee: Mapped[str | None] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(8))  # connect | refuse
    reason: Mapped[str] = mapped_column(String(32))  # routing.Reason
    pbx: Mapped[str] = mapped_column(String(16))  # freeswitch | asterisk | cli
    node: Mapped[str | None] = mapped_column(String(64))
    call_uuid: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime]
    ringing_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    duration_s: Mapped[int | None] = mapped_column(Integer)
    billsec_s: Mapped[int | None] = mapped_column(Integer)
    # answered | busy | no_answer | cancelled | refused | failed
    outcome: Mapped[str | None] = mapped_column(String(16))
    hangup_by: Mapped[str | None] = mapped_column(String(16))  # caller|callee|controller|pbx
    sip_status: Mapped[int | None] = mapped_column(Integer)
    q850_cause: Mapped[int | None] = mapped_column(Integer)
    pbx_cause: Mapped[str | None] = mapped_column(String(64))
    recording_path: Mapped[str | None] = mapped_column(String(1024))
    reconciled: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]


class CallEvent(Base):
    """The outbox of call-status events (ringing, answered, ended, refused) for webhooks.

    Written in the same transaction as the record change it reports, so an event is never
    lost across a restart; the pusher marks it delivered.
    """

    __tablename__ = "call_events"
    __table_args__ = (Index("ix_call_events_pending", "next_attempt_at", **_where(
        "delivered_at IS NULL")),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    record_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # ringing | answered | ended | refused
    at: Mapped[datetime]
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class IdempotencyKey(Base):
    """A bind request's Idempotency-Key and the answer given, for retries of the HTTP API."""

    __tablename__ = "idempotency_keys"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime]
