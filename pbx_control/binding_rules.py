"""What a bind or an update must satisfy before anything is written, and the plan it yields.

Every rule that needs no lock lives here: numbers parse (with the field named), flags fit the
mode, the group and softphone exist, no party is a pool number (a call would loop through the
platform). ``bindings`` then does what needs the X row locked.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Integer, bindparam, exists, literal_column, null, select, union_all
from sqlalchemy.orm import Session

from .customers import check_text
from .errors import InvalidInput, NotFound, PbxControlError, Unprocessable
from .groups import get_group
from .numbers import mask, parse
from .pool import pool_members
from .routing import DEDICATED_MODES, Direction, Mode, NumberState
from .softphones import get_softphone
from .storage.tables import Binding, Customer, Number

_DURATION = re.compile(r"(\d{1,9})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_LIFETIME = timedelta(days=3650)
MAX_CALL_S = 86400
OUT_ID = re.compile(r"[\x21-\x7e]{1,128}")


def parse_expires(text: str, now: datetime) -> datetime:
    """'90s', '30m', '2h', '7d' from now, or an ISO 8601 time with its zone; in UTC."""
    value = (text or "").strip()
    match = _DURATION.fullmatch(value)
    if match:
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        if seconds <= 0 or seconds > MAX_LIFETIME.total_seconds():
            raise InvalidInput("expires: a duration above zero and under ten years",
                               field="expires")
        return now + timedelta(seconds=seconds)

    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("expires: use a duration (90s, 30m, 2h, 7d) or an ISO 8601 time "
                           "with its zone", field="expires") from None
    if when.tzinfo is None:
        raise InvalidInput("expires: the time needs its zone (e.g. +08:00 or Z)",
                           field="expires")
    if when <= now:
        raise InvalidInput("expires: the time has passed", field="expires")
    return when.astimezone(now.tzinfo)


def new_binding_id(now: datetime) -> str:
    """'b' + milliseconds + randomness: unguessable, and sorted by creation time."""
    return f"b{int(now.timestamp() * 1000):012x}{secrets.token_hex(8)}"


@dataclass
class BindPlan:
    """A validated request: numbers in E.164, ids resolved, the pairs to insert."""

    mode: Mode
    a: str
    b: str | None
    x: str | None
    city: str | None
    city_strict: bool
    expires_at: datetime | None
    out_id: str | None
    record: bool
    direction: Direction
    sms: bool
    allow_withheld: bool
    default_party: str | None
    group_id: int | None
    softphone: str | None
    primary: bool
    max_call_s: int | None
    parties: list[tuple[str, str]] = field(default_factory=list)
    request_hash: str = ""
    # Whether a cool-down has ended: the bind runs the cool-down pass only then.
    cooling_due: bool = True

    @property
    def party_numbers(self) -> list[str]:
        return [p for _, p in self.parties]

    def binding_values(self, binding_id: str, customer_id: int, number_id: int, x: str,
                       now: datetime) -> dict:
        """The new binding's row, column by column (``bindings._insert`` writes it)."""
        return {
            "id": binding_id, "customer_id": customer_id, "mode": self.mode.value,
            "number_id": number_id, "x": x, "a": self.a, "b": self.b,
            "default_party": self.default_party, "softphone": self.softphone,
            "group_id": self.group_id, "direction": self.direction.value,
            "record": self.record, "sms": self.sms, "allow_withheld": self.allow_withheld,
            "is_primary": self.primary, "max_call_s": self.max_call_s, "out_id": self.out_id,
            "request_hash": self.request_hash, "created_at": now, "updated_at": now,
            "expires_at": self.expires_at}


def plan_bind(session: Session, customer_id: int, request, now: datetime,
              region: str) -> BindPlan:
    try:
        plan = _validated(request, now, region)
    except PbxControlError:
        # An unknown or disabled customer hears that first, whatever else is wrong.
        _require_active(session, customer_id)
        raise

    facts = _bind_facts(session, customer_id, [plan.a, plan.b, plan.default_party], now)
    _check_status(facts.status)
    _check_no_loop(facts.pool_members, {"a": plan.a, "b": plan.b,
                                        "default_party": plan.default_party})
    plan.cooling_due = facts.cooling_due
    _resolve_group_and_softphone(session, customer_id, plan, request)
    plan.request_hash = _request_hash(plan)
    return plan


def _validated(request, now: datetime, region: str) -> BindPlan:
    """Every rule of a bind that needs no database."""
    mode = _choice(Mode, request.mode, "mode")
    a = parse(request.a, "a", region)
    b = _optional_number(request.b, "b", region)
    _check_mode_fields(mode, request, b)

    plan = BindPlan(
        mode=mode, a=a, b=b, x=_optional_number(request.x, "x", region),
        city=_city(request.city), city_strict=bool(request.city_strict),
        expires_at=future_expiry(request.expires_at, now), out_id=_out_id(request.out_id),
        record=bool(request.record), direction=_choice(Direction, request.direction,
                                                       "direction"),
        sms=bool(request.sms), allow_withheld=bool(request.allow_withheld),
        default_party=_optional_number(request.default_party, "default_party", region),
        group_id=None, softphone=None, primary=bool(request.primary),
        max_call_s=_max_call(request.max_call_s))
    plan.parties = [("a", a)] + ([("b", b)] if b else [])
    _check_distinct(plan)
    return plan


@dataclass
class _BindFacts:
    status: str | None = None
    pool_members: set[str] = field(default_factory=set)
    cooling_due: bool = False


def _bind_facts(session: Session, customer_id: int, numbers: list[str | None],
                now: datetime) -> _BindFacts:
    """What a bind must know before it writes, in one round trip instead of three.

    The customer's status, which of the request's numbers are pool numbers (a party must not
    be one), and whether any of the customer's numbers has a cool-down that has ended (only
    then is the cool-down pass worth its UPDATE).
    """
    params = {"customer": customer_id, "numbers": [n for n in numbers if n], "now": now}
    facts = _BindFacts()
    # Core statements skip the session's autoflush: what the caller has pending (a customer
    # just created, a status changed) must be written before it is read here.
    session.flush()
    for kind, value in session.connection().execute(_facts_query(), params):
        if kind == _STATUS:
            facts.status = value
        elif kind == _POOL_MEMBER:
            facts.pool_members.add(value)
        else:
            facts.cooling_due = True
    return facts


_STATUS, _POOL_MEMBER, _COOLING_DUE = 1, 2, 3


@functools.cache
def _facts_query():
    def kind(value: int):
        return literal_column(str(value), Integer)

    status = select(kind(_STATUS), Customer.status).where(
        Customer.id == bindparam("customer"))
    members = select(kind(_POOL_MEMBER), Number.e164).where(
        Number.e164.in_(bindparam("numbers", expanding=True)))
    cooled = exists().where(Number.customer_id == bindparam("customer"),
                            Number.state == NumberState.COOLING.value,
                            Number.cooling_until <= bindparam("now"))
    due = select(kind(_COOLING_DUE), null().label("value")).where(cooled)
    return union_all(status, members, due)


def _require_active(session: Session, customer_id: int) -> None:
    _check_status(session.scalar(select(Customer.status).where(Customer.id == customer_id)))


def _check_status(status: str | None) -> None:
    if status is None:
        raise NotFound("no such customer", field="customer")
    if status != "active":
        raise Unprocessable("customer is disabled", field="customer", code="customer_disabled")


def _choice(kind, value, name: str):
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(v.value for v in kind)
        raise InvalidInput(f"{name}: one of {allowed}", field=name) from None


def _optional_number(value, field_name: str, region: str) -> str | None:
    return None if value is None or value == "" else parse(value, field_name, region)


def _check_mode_fields(mode: Mode, request, b: str | None) -> None:
    if mode == Mode.AXB and b is None:
        raise InvalidInput("b: axb binds two parties", field="b")
    if mode != Mode.AXB and b is not None:
        raise InvalidInput(f"b: only axb has a party b, not {mode.value}", field="b")
    if request.allow_withheld and mode not in (Mode.AX, Mode.AXN):
        raise InvalidInput("allow_withheld: only for ax and axn", field="allow_withheld")
    if request.default_party and mode not in (Mode.AXN, Mode.AXG):
        raise InvalidInput("default_party: only for axn and axg", field="default_party")
    if mode == Mode.AXG and not request.group:
        raise InvalidInput("group: axg needs an allow-group", field="group")
    if mode != Mode.AXG and request.group:
        raise InvalidInput("group: only for axg", field="group")
    if request.softphone and mode not in DEDICATED_MODES:
        raise InvalidInput("softphone: only for ax, axn and axg", field="softphone")
    if request.primary and mode != Mode.AX:
        raise InvalidInput("primary: only for ax", field="primary")


def _city(value: str | None) -> str | None:
    return check_text(value, "city")


def future_expiry(value: datetime | None, now: datetime) -> datetime | None:
    """An expiry must carry its zone and lie ahead; kept in ``now``'s zone."""
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput("expires: a time with its zone", field="expires")
    if value <= now:
        raise InvalidInput("expires: must be in the future", field="expires")
    return value.astimezone(now.tzinfo)


def _out_id(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not OUT_ID.fullmatch(value):
        raise InvalidInput("out_id: 1-128 printable characters, no spaces", field="out_id")
    return value


def _max_call(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_CALL_S:
        raise InvalidInput(f"max_call_s: 1 to {MAX_CALL_S} seconds", field="max_call_s")
    return value


def _check_distinct(plan: BindPlan) -> None:
    if plan.b is not None and plan.a == plan.b:
        raise InvalidInput("b: a and b are the same number", field="b")
    if plan.default_party is not None and plan.default_party == plan.a:
        raise InvalidInput("default_party: is party a itself", field="default_party")


def _check_no_loop(looping: set[str], parties: dict[str, str | None]) -> None:
    """``looping``: which of the parties are virtual numbers of the pool (``pool_members``)."""
    for name, number in parties.items():
        if number in looping:
            raise Unprocessable(f"{name}: {mask(number)} is a virtual number of the pool "
                                "(the call would loop)", field=name, code="loop")


def _resolve_group_and_softphone(session, customer_id, plan: BindPlan, request) -> None:
    if request.group:
        plan.group_id = get_group(session, customer_id, request.group).id
    if request.softphone:
        phone = get_softphone(session, customer_id, request.softphone)
        if phone.subscriber != plan.a:
            raise Unprocessable(f"softphone {phone.username} belongs to another subscriber",
                                field="softphone", code="softphone_mismatch")
        plan.softphone = phone.username


def _request_hash(plan: BindPlan) -> str:
    """What a retry must repeat. The expiry is left out: '2h' differs on every retry."""
    data = {k: getattr(plan, k) for k in (
        "mode", "a", "b", "x", "city", "city_strict", "out_id", "record", "direction", "sms",
        "allow_withheld", "default_party", "group_id", "softphone", "primary", "max_call_s")}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class PartiesUpdate:
    parties: list[tuple[str, str]]
    changed_roles: list[str]
    default_party: object


def plan_parties_update(session: Session, binding: Binding, region: str, *, a, b,
                        default_party, unset) -> PartiesUpdate:
    """Validate new parties of an existing binding, like a bind would."""
    mode = Mode(binding.mode)
    new_a = binding.a if a is unset else parse(a, "a", region)
    new_b = binding.b if b is unset else _optional_number(b, "b", region)
    if b is not unset and mode != Mode.AXB:
        raise InvalidInput(f"b: only axb has a party b, not {mode.value}", field="b")
    if mode == Mode.AXB and new_b is None:
        raise InvalidInput("b: axb binds two parties", field="b")
    if default_party is not unset:
        if mode not in (Mode.AXN, Mode.AXG):
            raise InvalidInput("default_party: only for axn and axg", field="default_party")
        default_party = _optional_number(default_party, "default_party", region)
    if new_a != binding.a and binding.softphone:
        raise Unprocessable("a: the binding rings a softphone of its subscriber",
                            field="a", code="softphone_mismatch")

    new_default = binding.default_party if default_party is unset else default_party
    if new_b is not None and new_a == new_b:
        raise InvalidInput("b: a and b are the same number", field="b")
    if new_default is not None and new_default == new_a:
        raise InvalidInput("default_party: is party a itself", field="default_party")
    news = {"a": new_a, "b": new_b, "default_party": new_default}
    _check_no_loop(pool_members(session, news.values()), news)

    parties = [("a", new_a)] + ([("b", new_b)] if new_b else [])
    changed = [r for r, p in parties if p != getattr(binding, r)]
    return PartiesUpdate(parties, changed, default_party)
