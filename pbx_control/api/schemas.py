"""Request and response bodies. Requests are strict: unknown fields, wrong JSON types and
control characters are refused (400) before any handler runs.

Numbers are plain strings here; the core parses them (any form ``numbers.parse`` takes) and
names the field when one is malformed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ..routing import Direction, Mode

# No control characters: they have no place in any value here, and PostgreSQL refuses NUL.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


def _encodable(value: str) -> str:
    value.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, a ValueError
    return value


def text(max_length: int, min_length: int = 0):
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length,
                                            pattern=PRINTABLE), AfterValidator(_encodable)]


Number = text(32, 1)
Name = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class BindBody(Strict):
    """A bind request. ``x`` picks the number; without it one is allocated by ``city``."""

    # Enums take their text values: FastAPI validates the already-decoded JSON, where strict
    # mode would insist on Python enum members.
    mode: Mode = Field(strict=False)
    a: Number
    b: Number | None = None
    x: Number | None = None
    city: text(64, 1) | None = None
    city_strict: bool = True
    expires_at: text(40, 1) | None = Field(
        None, description="'90s', '30m', '2h', '7d' from now, or an ISO 8601 time with zone")
    out_id: text(128, 1) | None = None
    record: bool = False
    direction: Direction = Field(Direction.BOTH, strict=False)
    sms: bool = True
    allow_withheld: bool = False
    default_party: Number | None = None
    group: Name | None = Field(None, description="AXG: the name of the allow-group")
    softphone: text(64, 1) | None = None
    primary: bool = False
    max_call_s: int | None = Field(None, ge=1, le=86_400)


class BindingPatch(Strict):
    """Only the fields present change; ``expires_at: null`` or ``default_party: null``
    removes the expiry or the default party."""

    expires_at: text(40, 1) | None = None
    a: Number | None = None
    b: Number | None = None
    default_party: Number | None = None


class BindingOut(BaseModel):
    id: str
    mode: Mode
    x: str
    a: str
    b: str | None
    default_party: str | None
    softphone: str | None
    group: str | None
    group_id: int | None
    direction: Direction
    record: bool
    sms: bool
    allow_withheld: bool
    primary: bool
    max_call_s: int | None
    out_id: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    active: bool


class BindingPage(BaseModel):
    items: list[BindingOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page")


class GroupBody(Strict):
    name: Name
    members: list[Number] = Field(default_factory=list, max_length=1000)


class MembersBody(Strict):
    members: list[Number] = Field(min_length=1, max_length=1000)


class GroupOut(BaseModel):
    id: int
    name: str
    members: list[str]
    created_at: datetime


class MembersOut(BaseModel):
    changed: list[str] = Field(description="The numbers added (or removed) by this request")
    group: GroupOut


class NumberOut(BaseModel):
    x: str
    carrier: str
    city: str | None
    capabilities: list[str]
    state: str
    cooling_until: datetime | None
    active_bindings: int
    total_bindings: int
    created_at: datetime
    retired_at: datetime | None


class NumberPage(BaseModel):
    items: list[NumberOut]
    next_cursor: str | None = None


class NumberCount(BaseModel):
    city: str | None
    state: str
    count: int


class CallOut(BaseModel):
    id: str
    binding_id: str | None
    out_id: str | None
    direction: str
    x: str | None
    caller: str | None
    callee: str | None
    decision: str
    reason: str
    pbx: str
    node: str | None
    call_uuid: str | None
    started_at: datetime
    ringing_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    duration_s: int | None
    billsec_s: int | None
    outcome: str | None
    hangup_by: str | None
    sip_status: int | None
    q850_cause: int | None
    pbx_cause: str | None
    reconciled: bool
    has_recording: bool


class CallPage(BaseModel):
    items: list[CallOut]
    next_cursor: str | None = None


class BlacklistBody(Strict):
    number: Number
    x: Number | None = Field(None, description="Refuse on this X only; absent: on every X")
    reason: text(256) | None = None


class BlacklistOut(BaseModel):
    id: int
    number: str
    x: str | None
    scope: str
    reason: str | None
    created_at: datetime


class WebhookBody(Strict):
    url: text(2048, 1)
    rotate_secret: bool = Field(False, description="Issue a new signing secret")


class WebhookOut(BaseModel):
    url: str | None
    secret: str | None = Field(
        None, description="The signing secret: shown only when created or rotated")


class Health(BaseModel):
    status: str
    database: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    code: str
    field: str | None
    detail: str
