"""CallService end to end on both databases: real binding rows, decisions and their records."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from pbx_control import blacklist, groups, records, softphones
from pbx_control.bindings import BindRequest, bind, sweep_expired
from pbx_control.calls import CallService
from pbx_control.customers import ensure_customer
from pbx_control.errors import StorageUnavailable
from pbx_control.pool import add_numbers
from pbx_control.routing import Connect, Direction, Mode, Reason, Refuse
from pbx_control.storage import Store
from pbx_control.storage.tables import CallEvent, CallRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
XS, XAX, XAXN, XAXG, XFREE = (f"+861700000000{i}" for i in range(1, 6))
A, B, C, D = "+8613800000001", "+8613900000002", "+8615000000003", "+8618600000004"
A2, A3, G = "+8613800000012", "+8613800000013", "+8613700000005"
P, Q = "+8613600000006", "+8613600000007"  # a second pair on the shared X


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock(T0 + timedelta(minutes=1))


@pytest.fixture
def world(store, settings):
    """One customer: a shared X with two AXB pairs, and one X each for AX, AXN and AXG."""
    with store.session() as s:
        cid = ensure_customer(s, "acme", T0).id
        add_numbers(s, cid, [XS, XAX, XAXN, XAXG, XFREE], carrier="east", now=T0)
        softphones.add_softphone(s, cid, "alice", A, T0)
        groups.create_group(s, cid, "vip", T0)
        groups.add_members(s, cid, "vip", [G], T0)

        def make(**fields):
            return bind(s, cid, BindRequest(**fields), now=T0, settings=settings).id

        ids = {
            "axb": make(mode=Mode.AXB, a=A, b=B, x=XS, out_id="order-1", record=True),
            "axb2": make(mode=Mode.AXB, a=P, b=Q, x=XS,
                         expires_at=T0 + timedelta(hours=1)),
            "ax": make(mode=Mode.AX, a=A, x=XAX, softphone="alice"),
            "axn": make(mode=Mode.AXN, a=A2, x=XAXN, default_party=D),
            "axg": make(mode=Mode.AXG, a=A3, x=XAXG, group="vip", default_party=D,
                        direction=Direction.B_ONLY),
        }
    return {"customer_id": cid, **ids}


@pytest.fixture
def service(store, settings, clock):
    return CallService(store, settings, pbx="freeswitch", node="fs1", clock=clock)


def record_of(store, record_id) -> CallRecord:
    with store.session() as session:
        return session.get(CallRecord, record_id)


def events_of(store, record_id) -> list[CallEvent]:
    with store.session() as session:
        return list(session.scalars(select(CallEvent).where(CallEvent.record_id == record_id)))


def count_records(store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(CallRecord))


def test_axb_pair_reaches_each_other_and_the_attempt_is_recorded(store, service, world):
    routed = service.route_inbound("13800000001", "017000000001", "uuid-1")

    assert routed.decision == Connect(
        to=B, show=XS, reason=Reason.A_TO_B, binding_id=world["axb"],
        customer_id=world["customer_id"], record=True, carrier="east", callee_party=B)
    record = record_of(store, routed.record_id)
    assert (record.caller, record.callee, record.x) == (A, B, XS)
    assert (record.decision, record.reason, record.out_id) == ("connect", "a_to_b", "order-1")
    assert (record.pbx, record.node, record.call_uuid) == ("freeswitch", "fs1", "uuid-1")
    assert record.ended_at is None and events_of(store, routed.record_id) == []
    assert service.route_inbound(B, XS, "uuid-2").decision.to == A


def test_each_pair_on_a_shared_x_routes_on_its_own(service, world):
    assert service.route_inbound(P, XS, None).decision.to == Q
    assert service.route_inbound(Q, XS, None).decision.to == P
    assert service.route_inbound(B, XS, None).decision.binding_id == world["axb"]


def test_stranger_on_a_shared_x_is_refused_and_the_refusal_queued(store, service, world):
    routed = service.route_inbound(C, XS, "uuid-3")

    assert routed.decision == Refuse(Reason.NO_BINDING, customer_id=world["customer_id"])
    record = record_of(store, routed.record_id)
    assert (record.decision, record.outcome, record.hangup_by) == ("refuse", "refused",
                                                                   "controller")
    assert (record.sip_status, record.q850_cause, record.duration_s) == (403, 21, 0)
    [event] = events_of(store, routed.record_id)
    assert (event.kind, event.customer_id, event.payload["reason"]) == (
        "refused", world["customer_id"], "no_binding")


@pytest.mark.parametrize("dialed", ["+8617099999999", "not a number", ""])
def test_a_number_outside_the_pool_gets_404_and_a_record_without_customer(
        store, service, world, dialed):
    routed = service.route_inbound(C, dialed, "uuid-4")

    assert routed.decision.reason == Reason.UNKNOWN_NUMBER
    record = record_of(store, routed.record_id)
    assert (record.customer_id, record.sip_status, record.q850_cause) == (None, 404, 1)
    assert record.x == ("+8617099999999" if dialed.startswith("+") else None)


def test_refused_attempts_count_towards_the_rate_limit(service, world, clock):
    reasons = [service.route_inbound(C, XS, None).decision.reason for _ in range(7)]
    assert reasons == [Reason.NO_BINDING] * 5 + [Reason.RATE_LIMITED] * 2

    assert service.route_inbound(C, XAX, None).decision.reason == Reason.TO_OWNER
    clock.now += timedelta(seconds=61)
    assert service.route_inbound(C, XS, None).decision.reason == Reason.NO_BINDING


def test_connected_attempts_count_too(service, world):
    reasons = [service.route_inbound(A, XS, None).decision.reason for _ in range(6)]
    assert reasons == [Reason.A_TO_B] * 5 + [Reason.RATE_LIMITED]


def test_blacklist_applies_per_customer_and_per_x(store, service, world):
    with store.session() as session:
        blacklist.add_entry(session, world["customer_id"], C, x=XAX, now=T0)
        blacklist.add_entry(session, world["customer_id"], G, now=T0)

    assert service.route_inbound(C, XAX, None).decision.reason == Reason.BLACKLISTED
    assert service.route_inbound(C, XAXN, None).decision.reason == Reason.TO_OWNER
    assert service.route_inbound(G, XAXG, None).decision.reason == Reason.BLACKLISTED


def test_ax_rings_the_softphone_of_a(service, world):
    decision = service.route_inbound(C, XAX, None).decision
    assert (decision.to, decision.to_kind, decision.callee_party) == ("alice", "softphone", A)


@pytest.mark.parametrize("caller_raw", [None, "", "anonymous", "Anonymous", "12"])
def test_withheld_or_unusable_caller_is_a_stranger(store, service, world, caller_raw):
    routed = service.route_inbound(caller_raw, XAX, None)
    assert routed.decision.reason == Reason.WITHHELD
    assert record_of(store, routed.record_id).caller == caller_raw


def test_caller_from_outside_the_trunks_is_not_believed(store, service, world):
    routed = service.route_inbound(A, XS, "uuid-5", trusted=False)
    assert routed.decision.reason == Reason.NO_BINDING
    assert service.route_inbound(C, XAX, None, trusted=False).decision.reason == (
        Reason.WITHHELD)
    assert record_of(store, routed.record_id).caller == A


def test_an_overlong_caller_id_is_kept_truncated(store, service, world):
    routed = service.route_inbound("x" * 300, XAX, None)
    assert record_of(store, routed.record_id).caller == "x" * 64


def test_axn_owner_reaches_the_default_party(service, world):
    assert service.route_inbound(A2, XAXN, None).decision.to == D
    assert service.route_inbound(C, XAXN, None).decision.to == A2


def test_axg_admits_only_group_members(service, world):
    assert service.route_inbound(G, XAXG, None).decision.to == A3
    assert service.route_inbound(C, XAXG, None).decision.reason == Reason.NOT_IN_GROUP
    # b_only: the members reach A, A cannot call through X.
    assert service.route_inbound(A3, XAXG, None).decision.reason == (
        Reason.DIRECTION_NOT_ALLOWED)


def test_binding_stops_at_its_expiry_before_any_sweep(store, service, world, clock, settings):
    clock.now = T0 + timedelta(hours=1) - timedelta(microseconds=1)
    assert service.route_inbound(P, XS, None).decision.to == Q

    clock.now = T0 + timedelta(hours=1)
    refused = service.route_inbound(P, XS, None).decision
    assert (refused.reason, refused.binding_id) == (Reason.EXPIRED, world["axb2"])

    with store.session() as session:
        assert sweep_expired(session, clock.now, settings=settings) == 1
    assert service.route_inbound(Q, XS, None).decision.reason == Reason.NO_BINDING


def test_explain_decides_without_writing_or_counting(store, service, world):
    for _ in range(8):
        decision, facts = service.explain(C, XS)
    assert decision.reason == Reason.NO_BINDING and facts.recent_attempts == 0
    assert count_records(store) == 0

    decision, facts = service.explain("13800000001", "17000000001")
    assert decision.to == B and [b.id for b in facts.bindings] == [world["axb"]]


# -- outbound ------------------------------------------------------------------------------

def test_softphone_calls_out_showing_its_x(store, service, world):
    routed = service.route_outbound("alice", "13900000002", "uuid-6")

    decision = routed.decision
    assert (decision.to, decision.show, decision.carrier) == (B, XAX, "east")
    record = record_of(store, routed.record_id)
    assert (record.direction, record.caller, record.callee, record.x) == (
        "outbound", A, B, XAX)
    assert (record.binding_id, record.customer_id) == (world["ax"], world["customer_id"])


def test_unknown_softphone_is_refused_and_recorded(store, service, world):
    routed = service.route_outbound("mallory", "13900000002", None)
    assert routed.decision.reason == Reason.UNKNOWN_SUBSCRIBER
    record = record_of(store, routed.record_id)
    assert (record.caller, record.customer_id, record.callee) == ("mallory", None, B)


def test_softphone_calling_a_pool_number_is_a_loop(service, world):
    assert service.route_outbound("alice", XFREE, None).decision.reason == Reason.LOOP


def test_softphone_emergency_call_shows_the_subscriber(store, service, world):
    routed = service.route_outbound("alice", "120", None)
    assert (routed.decision.to, routed.decision.show) == ("120", A)
    record = record_of(store, routed.record_id)
    assert (record.callee, record.x, record.customer_id) == ("120", None, world["customer_id"])


def test_softphone_with_two_ax_numbers_needs_a_primary(store, service, world, settings):
    with store.session() as session:
        bind(session, world["customer_id"], BindRequest(mode=Mode.AX, a=A, x=XFREE),
             now=T0, settings=settings)
    assert service.route_outbound("alice", B, None).decision.reason == Reason.NO_PRIMARY


# -- failures, events, reconciliation --------------------------------------------------

def test_unavailable_refusal_is_recorded_as_503(store, service, world):
    record_id = service.refuse_unavailable(C, XS, "uuid-7")
    record = record_of(store, record_id)
    assert (record.reason, record.sip_status, record.q850_cause) == ("unavailable", 503, 41)
    assert record.customer_id == world["customer_id"]
    assert [e.kind for e in events_of(store, record_id)] == ["refused"]


def test_unavailable_refusal_of_a_softphone_call_is_outbound(store, service, world):
    record = record_of(store, service.refuse_unavailable("alice", "13900000002", None,
                                                         outbound=True))
    assert (record.direction, record.caller, record.callee, record.x) == ("outbound", A, B,
                                                                          None)
    assert record.customer_id == world["customer_id"] and record.sip_status == 503


@pytest.fixture
def broken_service(tmp_path, settings, clock):
    store = Store(f"sqlite:///{tmp_path}/missing/dir/db.sqlite")
    yield CallService(store, settings, pbx="freeswitch", node="fs1", clock=clock)
    store.dispose()


def test_unavailable_refusal_never_raises_and_logs_no_number(broken_service, caplog):
    with caplog.at_level(logging.WARNING):
        assert broken_service.refuse_unavailable(C, XS, "uuid-8") is None
    assert "uuid-8" in caplog.text
    assert C[4:] not in caplog.text and XS[4:] not in caplog.text


def test_storage_failure_is_raised_as_unavailable(broken_service):
    with pytest.raises(StorageUnavailable):
        broken_service.route_inbound(C, XS, None)
    with pytest.raises(StorageUnavailable):
        broken_service.call_event("0" * 32, "ended")


def test_call_event_completes_the_record_once(store, service, world, clock):
    record_id = service.route_inbound(A, XS, None).record_id
    service.call_event(record_id, "answered")
    clock.now += timedelta(seconds=42)
    assert service.call_event(record_id, "ended", hangup_by="caller") is not None
    assert service.call_event(record_id, "ended") is None

    record = record_of(store, record_id)
    assert (record.billsec_s, record.outcome, record.hangup_by) == (42, "answered", "caller")
    assert [e.kind for e in events_of(store, record_id)] == ["answered", "ended"]


def test_open_records_are_this_nodes_calls_without_an_end(store, settings, world, clock):
    here = CallService(store, settings, pbx="freeswitch", node="fs1", clock=clock)
    there = CallService(store, settings, pbx="asterisk", node="ast1", clock=clock)
    open_id = here.route_inbound(A, XS, None).record_id
    here.route_inbound(C, XS, None)  # refused: ended at once
    there.route_inbound(B, XS, None)

    assert [r.id for r in here.open_records()] == [open_id]



def test_concurrent_ends_of_one_call_are_recorded_once(pg_store, settings, clock):
    with pg_store.session() as session:
        customer_id = ensure_customer(session, "acme", T0).id
        record_id = records.new_attempt(
            session, customer_id=customer_id, binding_id=None, out_id=None,
            direction="inbound", x=XS, caller=A, callee=B, decision="connect",
            reason="a_to_b", pbx="freeswitch", node="fs1", call_uuid=None,
            started_at=T0).id
    service = CallService(pg_store, settings, pbx="freeswitch", node="fs1", clock=clock)

    # The hangup seen on two connections at once, and retried: one end only.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: service.call_event(record_id, "ended"), range(8)))
    assert sum(r is not None for r in results) == 1
    assert [e.kind for e in events_of(pg_store, record_id)] == ["ended"]


def test_a_call_on_a_shared_x_reads_in_one_statement_and_writes_one(store, world, service):
    """The caller's pair comes with X's row; a second pair on X is not confused with it."""
    from sqlalchemy import event

    statements = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement.split(None, 1)[0].upper())

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        routed = service.route_inbound(P, XS, "shared-1")
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)

    assert isinstance(routed.decision, Connect)
    assert (routed.decision.to, routed.decision.binding_id) == (Q, world["axb2"])
    assert [s for s in statements if s not in ("BEGIN",)] == ["SELECT", "INSERT"]
