"""The pure routing decision, table-driven: every mode, direction and reason, no storage."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from pbx_control.config import RoutingSettings
from pbx_control.routing import (
    BindingView,
    Call,
    Connect,
    Direction,
    Facts,
    Mode,
    NumberState,
    NumberView,
    OutboundCall,
    OutboundFacts,
    Reason,
    Refuse,
    decide,
    decide_outbound,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
X = "+8617000000001"
X2 = "+8617000000002"
A = "+8613800000001"
B = "+8613900000002"
C = "+8615000000003"  # a stranger
D = "+8618600000004"  # AXN/AXG default party
G = "+8613700000005"  # an allow-group member
POLICY = RoutingSettings()


def number(state=NumberState.AVAILABLE, voice=True) -> NumberView:
    return NumberView(e164=X, customer_id=7, carrier="east", state=state, voice=voice)


def binding(mode: Mode, **overrides) -> BindingView:
    fields = dict(id=f"{mode.value}-1", customer_id=7, mode=mode, x=X, a=A)
    if mode == Mode.AXB:
        fields["b"] = B
    if mode == Mode.AXG:
        fields["group"] = frozenset({G})
    fields.update(overrides)
    return BindingView(**fields)


def inbound(caller, bindings=(), *, num=None, blacklisted=False, recent=0, now=NOW,
            dialed=X, policy=POLICY):
    facts = Facts(number=num or number(), bindings=tuple(bindings), blacklisted=blacklisted,
                  recent_attempts=recent)
    return decide(Call(caller=caller, dialed=dialed, now=now), facts, policy)


def connect(to, reason, kind="number"):
    return ("connect", to, reason, kind)


def refuse(reason):
    return ("refuse", reason)


def outcome(decision):
    if isinstance(decision, Connect):
        return ("connect", decision.to, decision.reason, decision.to_kind)
    assert isinstance(decision, Refuse)
    return ("refuse", decision.reason)


AXB = binding(Mode.AXB)
AX = binding(Mode.AX)
AXN = binding(Mode.AXN, default_party=D)
AXG = binding(Mode.AXG, default_party=D)

INBOUND_CASES = [
    # AXB: the pair (caller, X) picks the binding; everyone else is refused.
    ("axb a reaches b", A, [AXB], connect(B, Reason.A_TO_B)),
    ("axb b reaches a", B, [AXB], connect(A, Reason.B_TO_A)),
    ("axb stranger has no binding", C, [], refuse(Reason.NO_BINDING)),
    ("axb stranger even if a binding is handed in", C, [AXB], refuse(Reason.NO_BINDING)),
    ("axb withheld caller has no binding", None, [], refuse(Reason.NO_BINDING)),
    ("axb a_only lets a call", A, [binding(Mode.AXB, direction=Direction.A_ONLY)],
     connect(B, Reason.A_TO_B)),
    ("axb a_only refuses b", B, [binding(Mode.AXB, direction=Direction.A_ONLY)],
     refuse(Reason.DIRECTION_NOT_ALLOWED)),
    ("axb b_only refuses a", A, [binding(Mode.AXB, direction=Direction.B_ONLY)],
     refuse(Reason.DIRECTION_NOT_ALLOWED)),
    ("axb b_only lets b call", B, [binding(Mode.AXB, direction=Direction.B_ONLY)],
     connect(A, Reason.B_TO_A)),
    ("axb the caller's own pair among several on x", C,
     [AXB, binding(Mode.AXB, id="axb-2", a=C, b=D)], connect(D, Reason.A_TO_B)),
    # AX: anyone reaches A; A calling its own X is a loop.
    ("ax anyone reaches a", C, [AX], connect(A, Reason.TO_OWNER)),
    ("ax reaches a's softphone", C, [binding(Mode.AX, softphone="alice")],
     connect("alice", Reason.TO_OWNER, "softphone")),
    ("ax a calling own x is a loop", A, [AX], refuse(Reason.LOOP)),
    ("ax withheld refused by default", None, [AX], refuse(Reason.WITHHELD)),
    ("ax withheld allowed by flag", None, [binding(Mode.AX, allow_withheld=True)],
     connect(A, Reason.TO_OWNER)),
    ("ax a_only refuses callers", C, [binding(Mode.AX, direction=Direction.A_ONLY)],
     refuse(Reason.DIRECTION_NOT_ALLOWED)),
    ("ax b_only still lets callers reach a", C, [binding(Mode.AX, direction=Direction.B_ONLY)],
     connect(A, Reason.TO_OWNER)),
    # AXN: anyone reaches A; A reaches the default party.
    ("axn anyone reaches a", C, [AXN], connect(A, Reason.TO_OWNER)),
    ("axn a reaches the default party", A, [AXN], connect(D, Reason.TO_DEFAULT)),
    ("axn a without default party", A, [binding(Mode.AXN)], refuse(Reason.NO_DEFAULT_PARTY)),
    ("axn b_only stops a", A, [binding(Mode.AXN, default_party=D, direction=Direction.B_ONLY)],
     refuse(Reason.DIRECTION_NOT_ALLOWED)),
    ("axn a_only stops callers", C,
     [binding(Mode.AXN, default_party=D, direction=Direction.A_ONLY)],
     refuse(Reason.DIRECTION_NOT_ALLOWED)),
    ("axn withheld refused", None, [AXN], refuse(Reason.WITHHELD)),
    ("axn withheld allowed by flag", None, [binding(Mode.AXN, allow_withheld=True)],
     connect(A, Reason.TO_OWNER)),
    # AXG: AXN with an allow-group.
    ("axg member reaches a", G, [AXG], connect(A, Reason.TO_OWNER)),
    ("axg non-member refused", C, [AXG], refuse(Reason.NOT_IN_GROUP)),
    ("axg withheld refused even when flagged", None, [binding(Mode.AXG, allow_withheld=True)],
     refuse(Reason.WITHHELD)),
    ("axg a reaches the default party", A, [AXG], connect(D, Reason.TO_DEFAULT)),
    # Refusals before any binding.
    ("nothing bound on x", C, [], refuse(Reason.NO_BINDING)),
    ("x calling itself is a loop", X, [AX], refuse(Reason.LOOP)),
]


@pytest.mark.parametrize("caller, bindings, expected",
                         [c[1:] for c in INBOUND_CASES], ids=[c[0] for c in INBOUND_CASES])
def test_inbound_decision(caller, bindings, expected):
    assert outcome(inbound(caller, bindings)) == expected


@pytest.mark.parametrize("num", [None, number(NumberState.RETIRED), number(voice=False)],
                         ids=["not in the pool", "retired", "sms only"])
def test_unknown_or_retired_number_is_refused_whatever_is_bound(num):
    facts = Facts(number=num, bindings=(AX,))
    decision = decide(Call(C, X, NOW), facts, POLICY)
    assert outcome(decision) == refuse(Reason.UNKNOWN_NUMBER)
    assert decision.customer_id is None


@pytest.mark.parametrize("state", [NumberState.AVAILABLE, NumberState.DEDICATED,
                                   NumberState.COOLING])
def test_numbers_in_service_route(state):
    assert inbound(C, [AX], num=number(state)).connected


def test_connect_carries_binding_flags_and_xs_carrier():
    view = binding(Mode.AXB, record=True, max_call_s=600)
    decision = inbound(A, [view])
    assert decision == Connect(to=B, show=X, reason=Reason.A_TO_B, binding_id="axb-1",
                               customer_id=7, record=True, max_call_s=600, carrier="east",
                               callee_party=B)


def test_softphone_connect_names_the_party_behind_it():
    decision = inbound(C, [binding(Mode.AX, softphone="alice")])
    assert (decision.to, decision.callee_party, decision.show) == ("alice", A, X)


def test_blacklisted_caller_is_refused_before_its_binding():
    decision = inbound(A, [AXB], blacklisted=True)
    assert outcome(decision) == refuse(Reason.BLACKLISTED)
    assert decision.customer_id == 7


def test_rate_limit_lets_n_attempts_through_then_refuses():
    decisions = [inbound(A, [AXB], recent=n) for n in range(POLICY.rate_limit_attempts + 2)]
    reasons = [d.reason for d in decisions]
    assert reasons == [Reason.A_TO_B] * 5 + [Reason.RATE_LIMITED] * 2


def test_rate_limit_follows_the_policy():
    strict = dataclasses.replace(POLICY, rate_limit_attempts=1)
    assert inbound(C, [AX], recent=0, policy=strict).connected
    assert inbound(C, [AX], recent=1, policy=strict).reason == Reason.RATE_LIMITED


def test_withheld_callers_are_not_counted_against_a_rate():
    view = binding(Mode.AX, allow_withheld=True)
    assert inbound(None, [view], recent=99).connected


@pytest.mark.parametrize("view", [AXB, AX, AXN, AXG], ids=lambda v: v.mode.value)
def test_binding_stops_routing_at_its_expiry_instant(view):
    caller = {Mode.AXB: A, Mode.AXG: G}.get(view.mode, C)
    at_expiry = dataclasses.replace(view, expires_at=NOW)
    just_after = dataclasses.replace(view, expires_at=NOW + timedelta(microseconds=1))

    refused = inbound(caller, [at_expiry])
    assert outcome(refused) == refuse(Reason.EXPIRED)
    assert refused.binding_id == view.id
    assert inbound(caller, [just_after]).connected


def test_expired_pair_names_the_callers_binding():
    other = binding(Mode.AXB, id="axb-other", a=C, b=D, expires_at=NOW)
    mine = binding(Mode.AXB, expires_at=NOW - timedelta(hours=1))
    assert inbound(A, [other, mine]).binding_id == "axb-1"


def test_live_pair_wins_over_an_expired_one_of_the_same_caller():
    old = binding(Mode.AXB, id="axb-old", b=D, expires_at=NOW)
    assert inbound(A, [old, AXB]).to == B


# -- outbound ------------------------------------------------------------------------------

def outbound(target, bindings=(AX,), *, subscriber=A, in_pool=False, policy=POLICY, now=NOW):
    facts = OutboundFacts(subscriber=subscriber, ax_bindings=tuple(bindings),
                          target_is_pool_number=in_pool)
    return decide_outbound(OutboundCall(target=target, now=now), facts, policy)


AX_EAST = binding(Mode.AX, carrier="east")
AX2 = binding(Mode.AX, id="ax-2", x=X2, carrier="west")
OUTBOUND_CASES = [
    ("unknown subscriber", "13900000002", [AX], None, refuse(Reason.UNKNOWN_SUBSCRIBER)),
    ("national form", "13900000002", [AX], A, connect(B, Reason.OUTBOUND)),
    ("e164 form", "+8613900000002", [AX], A, connect(B, Reason.OUTBOUND)),
    ("fixed line", "02012345678", [AX], A, connect("+862012345678", Reason.OUTBOUND)),
    ("international", "+14155550100", [AX], A, refuse(Reason.DESTINATION_NOT_ALLOWED)),
    ("international with 00", "0014155550100", [AX], A,
     refuse(Reason.DESTINATION_NOT_ALLOWED)),
    ("not a number", "sip:bob", [AX], A, refuse(Reason.DESTINATION_NOT_ALLOWED)),
    ("short code not on the emergency list", "10086", [AX], A,
     refuse(Reason.DESTINATION_NOT_ALLOWED)),
    ("own number is a loop", A, [AX], A, refuse(Reason.LOOP)),
    ("no ax binding", "13900000002", [], A, refuse(Reason.NO_BINDING)),
    ("only an expired binding", "13900000002", [binding(Mode.AX, expires_at=NOW)], A,
     refuse(Reason.EXPIRED)),
    ("b_only binding cannot call out", "13900000002",
     [binding(Mode.AX, direction=Direction.B_ONLY)], A,
     refuse(Reason.DIRECTION_NOT_ALLOWED)),
    ("a_only binding calls out", "13900000002",
     [binding(Mode.AX, direction=Direction.A_ONLY)], A, connect(B, Reason.OUTBOUND)),
    ("several without primary", "13900000002", [AX, AX2], A, refuse(Reason.NO_PRIMARY)),
    ("several with two primaries", "13900000002",
     [binding(Mode.AX, primary=True), dataclasses.replace(AX2, primary=True)], A,
     refuse(Reason.NO_PRIMARY)),
    ("several, one live", "13900000002", [binding(Mode.AX, expires_at=NOW), AX2], A,
     connect(B, Reason.OUTBOUND)),
    ("emergency with no binding at all", "120", [], A,
     connect("120", Reason.EMERGENCY_OWN_NUMBER)),
]


@pytest.mark.parametrize("target, bindings, subscriber, expected",
                         [c[1:] for c in OUTBOUND_CASES], ids=[c[0] for c in OUTBOUND_CASES])
def test_outbound_decision(target, bindings, subscriber, expected):
    assert outcome(outbound(target, bindings, subscriber=subscriber)) == expected


def test_outbound_shows_the_primary_x_and_leaves_through_its_carrier():
    decision = outbound("13900000002", [AX_EAST, dataclasses.replace(AX2, primary=True)])
    assert (decision.show, decision.carrier, decision.binding_id) == (X2, "west", "ax-2")


def test_outbound_single_binding_shows_its_x():
    decision = outbound("13900000002", [AX_EAST])
    assert (decision.to, decision.show, decision.carrier) == (B, X, "east")
    assert decision.callee_party == B and decision.customer_id == 7


def test_target_that_is_a_pool_number_is_a_loop():
    assert outbound("+8617000000009", in_pool=True).reason == Reason.LOOP


@pytest.mark.parametrize("code", ["110", "119", "120", "122"])
def test_emergency_goes_out_with_the_subscribers_own_number_by_default(code):
    decision = outbound(code)
    assert decision == Connect(to=code, show=A, reason=Reason.EMERGENCY_OWN_NUMBER)


def test_emergency_refused_when_the_policy_says_so():
    policy = dataclasses.replace(POLICY, emergency_policy="refuse")
    assert outcome(outbound("110", policy=policy)) == refuse(Reason.EMERGENCY)


def test_emergency_codes_come_from_the_policy():
    policy = dataclasses.replace(POLICY, emergency_codes=["112"])
    assert outbound("112", policy=policy).reason == Reason.EMERGENCY_OWN_NUMBER
    assert outbound("110", policy=policy).reason == Reason.DESTINATION_NOT_ALLOWED


def test_destination_patterns_come_from_the_policy():
    mobile_only = dataclasses.replace(POLICY, outbound_patterns=[r"^\+861\d{10}$"])
    assert outbound("13900000002", policy=mobile_only).connected
    refused = outbound("02012345678", policy=mobile_only)
    assert refused.reason == Reason.DESTINATION_NOT_ALLOWED
