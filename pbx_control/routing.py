"""The routing decision: connect a call on X, or refuse it, and why.

Pure: it sees only what storage found (``Facts``) and the time; no sockets, SQL or HTTP.
Both PBX adapters and the ``route`` command call it through ``pbx_control.calls``, so a table
of cases here tests every mode and direction without a PBX.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from .config import RoutingSettings
from .errors import InvalidInput
from .numbers import parse


class Mode(StrEnum):
    AXB = "axb"
    AX = "ax"
    AXN = "axn"
    AXG = "axg"


DEDICATED_MODES = frozenset({Mode.AX, Mode.AXN, Mode.AXG})


class Direction(StrEnum):
    BOTH = "both"
    # Only party A may place calls through X (AXB: A->B only; AX/AXN/AXG: only A's own calls).
    A_ONLY = "a_only"
    # Only the other side may call (AXB: B->A only; dedicated modes: callers reach A, A
    # cannot call out through X).
    B_ONLY = "b_only"


class NumberState(StrEnum):
    AVAILABLE = "available"
    DEDICATED = "dedicated"
    COOLING = "cooling"
    RETIRED = "retired"


class Reason(StrEnum):
    """Why a call was connected or refused; stored in the call record and shown by ``route``."""

    # connected
    A_TO_B = "a_to_b"
    B_TO_A = "b_to_a"
    TO_OWNER = "to_owner"
    TO_DEFAULT = "to_default"
    OUTBOUND = "outbound"
    EMERGENCY_OWN_NUMBER = "emergency_own_number"
    # refused
    UNKNOWN_NUMBER = "unknown_number"
    NO_BINDING = "no_binding"
    EXPIRED = "expired"
    DIRECTION_NOT_ALLOWED = "direction_not_allowed"
    WITHHELD = "withheld"
    BLACKLISTED = "blacklisted"
    RATE_LIMITED = "rate_limited"
    LOOP = "loop"
    NOT_IN_GROUP = "not_in_group"
    NO_DEFAULT_PARTY = "no_default_party"
    UNKNOWN_SUBSCRIBER = "unknown_subscriber"
    DESTINATION_NOT_ALLOWED = "destination_not_allowed"
    NO_PRIMARY = "no_primary"
    EMERGENCY = "emergency"
    # refused by the adapter, not by this module: no decision in time, storage down
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class NumberView:
    """A pool number as routing needs it."""

    e164: str
    customer_id: int
    carrier: str
    state: NumberState
    voice: bool = True
    sms: bool = True


@dataclass(frozen=True)
class BindingView:
    """A binding as routing needs it. ``group`` holds AXG's allowed callers (E.164)."""

    id: str
    customer_id: int
    mode: Mode
    x: str
    a: str
    b: str | None = None
    default_party: str | None = None
    softphone: str | None = None
    group: frozenset[str] = frozenset()
    direction: Direction = Direction.BOTH
    record: bool = False
    allow_withheld: bool = False
    primary: bool = False
    max_call_s: int | None = None
    expires_at: datetime | None = None
    carrier: str = "default"

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class Facts:
    """What storage found for one inbound call on X.

    ``bindings``: the bindings on X that concern this caller (the AXB bindings the caller is a
    party of, and X's dedicated binding if any), expired ones not yet swept included, so that
    routing can say ``expired`` rather than ``no_binding``.
    """

    number: NumberView | None
    bindings: tuple[BindingView, ...] = ()
    blacklisted: bool = False
    recent_attempts: int = 0


@dataclass(frozen=True)
class OutboundFacts:
    """What storage found for an outbound call of an authenticated subscriber."""

    subscriber: str | None
    ax_bindings: tuple[BindingView, ...] = ()
    target_is_pool_number: bool = False


@dataclass(frozen=True)
class Connect:
    """Connect the call to ``to`` showing ``show``.

    ``to_kind`` is 'number' (an E.164 number, dialed through X's carrier) or 'softphone' (a
    registered user; ``to`` is its user name). ``carrier`` picks the trunk of the carrier
    that owns X.
    """

    to: str
    show: str
    reason: Reason
    to_kind: str = "number"
    binding_id: str | None = None
    customer_id: int | None = None
    record: bool = False
    max_call_s: int | None = None
    carrier: str = "default"
    callee_party: str | None = None

    connected = True


@dataclass(frozen=True)
class Refuse:
    reason: Reason
    binding_id: str | None = None
    customer_id: int | None = None
    detail: str = ""

    connected = False


Decision = Connect | Refuse


@dataclass(frozen=True)
class Call:
    """An inbound call as the adapter read it: caller None when withheld or unusable."""

    caller: str | None
    dialed: str
    now: datetime


def decide(call: Call, facts: Facts, policy: RoutingSettings) -> Decision:
    """Decide an inbound call on X from what storage found."""
    number = facts.number
    if number is None or number.state == NumberState.RETIRED or not number.voice:
        # A number without voice is an SMS-only number: for calls it does not exist.
        return Refuse(Reason.UNKNOWN_NUMBER)

    customer = number.customer_id
    if call.caller is not None and call.caller == call.dialed:
        return Refuse(Reason.LOOP, customer_id=customer)
    if facts.blacklisted:
        return Refuse(Reason.BLACKLISTED, customer_id=customer)
    if call.caller is not None and facts.recent_attempts >= policy.rate_limit_attempts:
        return Refuse(Reason.RATE_LIMITED, customer_id=customer)

    live = [b for b in facts.bindings if not b.expired(call.now)]
    pair = _axb_for_caller(live, call.caller)
    if pair is not None:
        return _route_axb(pair, call.caller, number)

    dedicated = next((b for b in live if b.mode in DEDICATED_MODES), None)
    if dedicated is not None:
        return _route_dedicated(dedicated, call.caller, number)

    # Whatever concerns the caller and is not live has expired (not yet swept): name it.
    stale = _axb_for_caller(facts.bindings, call.caller) or next(
        (b for b in facts.bindings if b.mode in DEDICATED_MODES), None)
    if stale is not None:
        return Refuse(Reason.EXPIRED, binding_id=stale.id, customer_id=customer)
    return Refuse(Reason.NO_BINDING, customer_id=customer)


def _axb_for_caller(bindings, caller: str | None) -> BindingView | None:
    if caller is None:
        return None
    for binding in bindings:
        if binding.mode == Mode.AXB and caller in (binding.a, binding.b):
            return binding
    return None


def _route_axb(binding: BindingView, caller: str, number: NumberView) -> Decision:
    if caller == binding.a:
        allowed, to, reason = binding.direction != Direction.B_ONLY, binding.b, Reason.A_TO_B
    else:
        allowed, to, reason = binding.direction != Direction.A_ONLY, binding.a, Reason.B_TO_A
    if not allowed:
        return Refuse(Reason.DIRECTION_NOT_ALLOWED, binding.id, binding.customer_id)
    return _connect(binding, to, reason, number)


def _route_dedicated(binding: BindingView, caller: str | None, number: NumberView) -> Decision:
    refuse = _refusal_for_dedicated(binding, caller)
    if refuse is not None:
        return Refuse(refuse, binding.id, binding.customer_id)

    if caller == binding.a:
        return _connect(binding, binding.default_party, Reason.TO_DEFAULT, number)
    if binding.softphone:
        return _connect(binding, binding.softphone, Reason.TO_OWNER, number, kind="softphone")
    return _connect(binding, binding.a, Reason.TO_OWNER, number)


def _refusal_for_dedicated(binding: BindingView, caller: str | None) -> Reason | None:
    if caller == binding.a:
        if binding.mode == Mode.AX or not binding.default_party:
            # A calling its own X would ring A: nothing to connect.
            return Reason.LOOP if binding.mode == Mode.AX else Reason.NO_DEFAULT_PARTY
        if binding.direction == Direction.B_ONLY:
            return Reason.DIRECTION_NOT_ALLOWED
        return None

    if binding.direction == Direction.A_ONLY:
        return Reason.DIRECTION_NOT_ALLOWED
    if caller is None:
        allowed = binding.allow_withheld and binding.mode in (Mode.AX, Mode.AXN)
        return None if allowed else Reason.WITHHELD
    if binding.mode == Mode.AXG and caller not in binding.group:
        return Reason.NOT_IN_GROUP
    return None


def _connect(
    binding: BindingView, to: str, reason: Reason, number: NumberView, kind: str = "number"
) -> Connect:
    return Connect(
        to=to,
        show=binding.x,
        reason=reason,
        to_kind=kind,
        binding_id=binding.id,
        customer_id=binding.customer_id,
        record=binding.record,
        max_call_s=binding.max_call_s,
        carrier=number.carrier,
        callee_party=binding.a if kind == "softphone" else to,
    )


@dataclass(frozen=True)
class OutboundCall:
    """A call placed by an authenticated softphone: ``target`` exactly as the user dialed."""

    target: str
    now: datetime
    region: str = "CN"


def decide_outbound(call: OutboundCall, facts: OutboundFacts, policy: RoutingSettings) -> Decision:
    """Decide a call of subscriber A to target T, on the authenticated user, never a caller id."""
    subscriber = facts.subscriber
    if subscriber is None:
        return Refuse(Reason.UNKNOWN_SUBSCRIBER)

    target = call.target.strip()
    if target in policy.emergency_codes:
        if policy.emergency_policy == "refuse":
            return Refuse(Reason.EMERGENCY)
        # The emergency service must be able to call the subscriber back: show A's number.
        return Connect(to=target, show=subscriber, reason=Reason.EMERGENCY_OWN_NUMBER)

    try:
        target_e164 = parse(target, "target", call.region)
    except InvalidInput:
        return Refuse(Reason.DESTINATION_NOT_ALLOWED, detail="target is not a number")
    if not any(re.fullmatch(p, target_e164) for p in policy.outbound_patterns):
        return Refuse(Reason.DESTINATION_NOT_ALLOWED)
    if facts.target_is_pool_number or target_e164 == subscriber:
        return Refuse(Reason.LOOP)

    binding = _shown_number(facts.ax_bindings, call.now)
    if isinstance(binding, Reason):
        return Refuse(binding)
    if binding.direction == Direction.B_ONLY:
        return Refuse(Reason.DIRECTION_NOT_ALLOWED, binding.id, binding.customer_id)
    return Connect(
        to=target_e164,
        show=binding.x,
        reason=Reason.OUTBOUND,
        binding_id=binding.id,
        customer_id=binding.customer_id,
        record=binding.record,
        max_call_s=binding.max_call_s,
        carrier=binding.carrier,
        callee_party=target_e164,
    )


def _shown_number(bindings: tuple[BindingView, ...], now: datetime) -> BindingView | Reason:
    live = [b for b in bindings if b.mode == Mode.AX and not b.expired(now)]
    if not live:
        return Reason.EXPIRED if bindings else Reason.NO_BINDING
    if len(live) == 1:
        return live[0]
    primary = [b for b in live if b.primary]
    return primary[0] if len(primary) == 1 else Reason.NO_PRIMARY
