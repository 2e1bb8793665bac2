"""End to end: the FreeSWITCH controller with the real CallService and storage (SQLite and
PostgreSQL) against the FreeSWITCH protocol double, one scenario per test.

The double replays recorded FreeSWITCH 1.10.12 behaviour; tests whose names say
``per_docs`` use commands the recordings do not contain (the double follows the
FreeSWITCH documentation there, to be checked on a real FreeSWITCH).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from pbx_control.bindings import BindRequest, bind
from pbx_control.calls import CallService
from pbx_control.customers import ensure_customer
from pbx_control.errors import StorageUnavailable
from pbx_control.freeswitch.harness import SCENARIOS, Harness, run_scenario
from pbx_control.pool import add_numbers
from pbx_control.routing import Mode
from pbx_control.softphones import add_softphone

A, B, X = "8613900000000", "8613800000000", "8617000000001"
X2, TARGET, STRANGER = "8617000000002", "8613700000099", "8613700000009"

PRIVACY_SETS = [
    ("set", f"effective_callee_id_number={X}"),
    ("set", f"effective_callee_id_name={X}"),
    ("set", "ignore_display_updates=true"),
    ("set", "hangup_after_bridge=true"),
    ("set", "continue_on_fail=true"),
]


def bridge_to(number: str, shown: str = X, gateway: str = "carrier") -> str:
    return (f"{{origination_caller_id_number={shown},origination_caller_id_name={shown},"
            f"originate_timeout=20}}sofia/gateway/{gateway}/{number}")


@pytest.fixture
def bound(store, settings):
    """X bound AXB to A and B; X2 dedicated (AX) to A, who has softphone 1001."""
    now = datetime.now(UTC)
    with store.session() as session:
        customer = ensure_customer(session, "acme", now)
        add_numbers(session, customer.id, ["+" + X, "+" + X2], now=now)
        bind(session, customer.id, BindRequest(mode=Mode.AXB, a="+" + A, b="+" + B, x="+" + X),
             now=now, settings=settings)
        bind(session, customer.id, BindRequest(mode=Mode.AX, a="+" + A, x="+" + X2),
             now=now, settings=settings)
        add_softphone(session, customer.id, "1001", "+" + A, now)
    return store


@pytest.fixture
def harness(bound, settings):
    with Harness(settings, bound) as h:
        yield h


def test_a_calling_x_is_bridged_to_b_showing_x_with_every_privacy_variable(harness):
    played = harness.run("answered", caller=A, dialed=X, hold_s=2)

    executed = played.result.executed()
    assert executed[:5] == PRIVACY_SETS
    assert executed[-1] == ("bridge", bridge_to(B))
    assert ("sched_hangup", "+7200 ALLOTTED_TIMEOUT") in executed
    assert played.commands[:3] == ["connect", "myevents", "linger"]
    assert played.commands[-1] == "exit" and not played.result.errors
    record = played.record
    assert (record["decision"], record["reason"], record["outcome"]) == (
        "connect", "a_to_b", "answered")
    assert (record["hangup_by"], record["sip_status"], record["q850_cause"]) == (
        "caller", 200, 16)
    assert record["pbx_cause"] == "NORMAL_CLEARING/16"
    assert record["billsec_s"] == 2 and record["ringing_at"] and record["answered_at"]
    assert (record["x"], record["caller"], record["callee"]) == ("+" + X, "+" + A, "+" + B)


def test_b_calling_x_is_bridged_to_a(harness):
    played = harness.run("answered", caller=B, dialed=X)

    assert played.result.bridge == bridge_to(A)
    assert played.result.executed()[:5] == PRIVACY_SETS
    assert (played.record["reason"], played.record["outcome"]) == ("b_to_a", "answered")


def test_a_stranger_calling_x_is_refused_403_cause_21(harness):
    played = harness.run("answered", caller=STRANGER, dialed=X)

    assert played.result.executed() == [("respond", "403")]
    assert played.result.sip_status == 403 and played.result.bridge is None
    record = played.record
    assert (record["decision"], record["reason"], record["outcome"]) == (
        "refuse", "no_binding", "refused")
    assert (record["sip_status"], record["q850_cause"], record["hangup_by"]) == (
        403, 21, "controller")


def test_a_call_after_the_binding_expired_is_refused(bound, settings):
    later = datetime.now(UTC) + timedelta(days=1)
    with bound.session() as session:
        from pbx_control.storage.tables import Binding
        for binding in session.query(Binding).filter(Binding.mode == "axb"):
            binding.expires_at = datetime.now(UTC) + timedelta(hours=1)
    service = CallService(bound, settings, pbx="freeswitch", node="freeswitch",
                          clock=lambda: later)
    with Harness(settings, bound, service=service) as h:
        played = h.run("answered", caller=A, dialed=X)

    assert played.result.executed() == [("respond", "403")]
    assert (played.record["reason"], played.record["sip_status"]) == ("expired", 403)


def test_b_busy_hangs_the_caller_up_486_and_records_busy(harness):
    played = harness.run("busy", caller=A, dialed=X)

    assert played.result.sip_status == 486
    assert "sendmsg\ncall-command: hangup\nhangup-cause: USER_BUSY" in played.commands
    record = played.record
    assert (record["outcome"], record["hangup_by"], record["sip_status"]) == (
        "busy", "callee", 486)
    assert (record["q850_cause"], record["pbx_cause"]) == (17, "USER_BUSY/17")
    assert record["answered_at"] is None and record["billsec_s"] == 0


def test_b_not_answering_ends_no_answer_480_after_the_ring_timeout_per_docs(harness):
    played = harness.run("no_answer", caller=A, dialed=X)

    assert "originate_timeout=20" in played.result.bridge
    assert played.result.sip_status == 480
    record = played.record
    assert (record["outcome"], record["hangup_by"], record["sip_status"]) == (
        "no_answer", "pbx", 480)
    assert (record["q850_cause"], record["pbx_cause"]) == (19, "NO_ANSWER/19")
    assert record["ringing_at"] is not None


def test_caller_cancelling_while_b_rings_is_recorded_cancelled(harness):
    played = harness.run("cancel", caller=A, dialed=X)

    record = played.record
    assert (record["outcome"], record["hangup_by"], record["sip_status"]) == (
        "cancelled", "caller", 487)
    assert record["pbx_cause"] == "ORIGINATOR_CANCEL/487" and record["q850_cause"] == 16


def test_b_hanging_up_first_is_recorded_as_the_callee(harness):
    played = harness.run("callee_hangs_up", caller=A, dialed=X, hold_s=3)

    assert played.result.hangup_cause == "NORMAL_CLEARING"  # hangup_after_bridge did it
    record = played.record
    assert (record["outcome"], record["hangup_by"], record["billsec_s"]) == (
        "answered", "callee", 3)


def test_a_caller_hanging_up_before_the_decision_still_leaves_a_record(harness):
    played = harness.run("hangup_early", caller=A, dialed=X)

    record = played.record
    assert record is not None and record["ended_at"] is not None
    assert (record["outcome"], record["hangup_by"]) == ("cancelled", "caller")


def test_a_socket_closed_mid_call_is_completed_from_the_inbound_connection(harness):
    played = harness.run("socket_lost", caller=A, dialed=X, hold_s=4)

    assert not played.result.exit_received
    record = played.record
    assert (record["outcome"], record["hangup_by"], record["billsec_s"]) == (
        "answered", "caller", 4)
    assert record["reconciled"] is False


def test_records_of_calls_that_vanished_are_reconciled_at_start(bound, settings):
    with Harness(settings, bound, inbound=False) as h:
        played = h.run("socket_lost", caller=A, dialed=X, wait_end=False, publish_end=False)
        assert played.record["ended_at"] is None

    with Harness(settings, bound) as h:
        record = h.wait_record(played.result.uuid)

    assert record["ended_at"] is not None and record["reconciled"] is True


def test_an_ax_subscriber_softphone_calls_out_showing_its_x(harness):
    played = harness.run("answered", caller=A, dialed=TARGET, entry="softphone", user="1001")

    assert played.result.executed()[:2] == [
        ("set", f"effective_callee_id_number={X2}"), ("set", f"effective_callee_id_name={X2}")]
    assert played.result.bridge == bridge_to(TARGET, shown=X2)
    record = played.record
    assert (record["direction"], record["reason"], record["outcome"]) == (
        "outbound", "outbound", "answered")


def test_an_unauthenticated_softphone_call_is_refused(harness):
    played = harness.run("answered", caller=A, dialed=TARGET, entry="softphone", user="1001",
                         authorized=False)

    assert played.result.executed() == [("respond", "403")]
    assert played.record["reason"] == "unknown_subscriber"


def test_a_carrier_call_from_an_untrusted_address_is_a_stranger(harness):
    played = harness.run("answered", caller=A, dialed=X, source_ip="203.0.113.7")

    assert played.result.bridge is None and played.result.sip_status == 403
    assert played.record["reason"] == "no_binding"


def test_a_caller_name_cannot_forge_the_source_address_header(harness):
    forged = "Alice\nvariable_sip_network_ip: 127.0.0.1\nChannel-Name: sofia/carrier/x"
    played = harness.run("answered", caller=A, dialed=X, source_ip="203.0.113.7",
                         display_name=forged)

    assert played.result.bridge is None and played.record["reason"] == "no_binding"


def test_a_caller_asserted_by_a_trusted_trunk_in_pai_is_believed(harness):
    played = harness.run("answered", caller="+" + A, dialed=X, pai=True)

    assert played.result.bridge == bridge_to(B)


def test_an_unknown_x_is_refused_404_cause_1_per_docs(harness):
    played = harness.run("answered", caller=A, dialed="8617000000999")

    assert played.result.executed() == []
    assert "sendmsg\ncall-command: hangup\nhangup-cause: UNALLOCATED_NUMBER" in played.commands
    assert played.result.sip_status == 404
    assert (played.record["reason"], played.record["sip_status"],
            played.record["q850_cause"]) == ("unknown_number", 404, 1)


def test_a_refusal_announcement_plays_as_early_media_before_the_403_per_docs(bound, settings):
    settings.freeswitch.refuse_announcement = "/usr/share/freeswitch/sounds/refused.wav"
    with Harness(settings, bound) as h:
        played = h.run("answered", caller=STRANGER, dialed=X)

    assert played.result.executed() == [
        ("pre_answer", ""), ("playback", "/usr/share/freeswitch/sounds/refused.wav"),
        ("respond", "403")]
    assert played.result.early_media and not played.result.answered
    assert played.result.sip_status == 403


def test_recording_and_the_maximum_duration_are_left_to_freeswitch_per_docs(bound, settings):
    settings.freeswitch.recordings_dir = "/var/spool/pbx"
    with bound.session() as session:
        from pbx_control.storage.tables import Binding
        binding = session.query(Binding).filter(Binding.mode == "axb").one()
        binding.record, binding.max_call_s = True, 600
    with Harness(settings, bound) as h:
        played = h.run("answered", caller=A, dialed=X)

    record = played.record
    path = f"/var/spool/pbx/{record['id']}.wav"
    executed = played.result.executed()
    assert ("record_session", path) in executed
    assert ("sched_hangup", "+600 ALLOTTED_TIMEOUT") in executed
    assert executed.index(("sched_hangup", "+600 ALLOTTED_TIMEOUT")) < len(executed) - 1
    assert record["recording_path"] == path


class SlowService(CallService):
    def route_inbound(self, *args, **kwargs):
        time.sleep(0.5)
        return super().route_inbound(*args, **kwargs)


class DownService(CallService):
    def route_inbound(self, *args, **kwargs):
        raise StorageUnavailable("storage unavailable")


def test_a_decision_past_its_deadline_is_refused_503_cause_41(bound, settings):
    settings.freeswitch.decision_deadline_s = 0.05
    service = SlowService(bound, settings, pbx="freeswitch", node="freeswitch")
    with Harness(settings, bound, service=service) as h:
        played = h.run("answered", caller=A, dialed=X)
        late = _wait_all_ended(h, played.result.uuid, count=2)

    assert "sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_TEMPORARY_FAILURE" in (
        played.commands)
    assert played.result.sip_status == 503 and played.result.bridge is None
    refusal = next(r for r in late if r["reason"] == "unavailable")
    assert (refusal["sip_status"], refusal["q850_cause"]) == (503, 41)
    connected = next(r for r in late if r["reason"] == "a_to_b")
    assert connected["outcome"] == "refused"  # the late decision's record is closed


def test_storage_down_refuses_503(bound, settings):
    service = DownService(bound, settings, pbx="freeswitch", node="freeswitch")
    with Harness(settings, bound, service=service) as h:
        played = h.run("answered", caller=A, dialed=X)

    assert played.result.sip_status == 503
    assert (played.record["reason"], played.record["q850_cause"]) == ("unavailable", 41)


def _wait_all_ended(h: Harness, uuid: str, count: int) -> list[dict]:
    h.wait(lambda: len(h.records(uuid)) >= count and all(
        r["ended_at"] for r in h.records(uuid)))
    return h.records(uuid)


def test_a_connection_from_outside_the_pbx_addresses_is_closed_before_any_byte(
        bound, settings):
    settings.freeswitch.pbx_addresses = ["192.0.2.10"]
    with Harness(settings, bound) as h:
        result = h.double.call(caller=A, dialed=X)

    assert result.closed_without_bytes and result.commands == []


def test_many_concurrent_calls_are_each_decided_and_recorded(bound, settings):
    # SQLite takes one writer at a time: the deadline here is about concurrency, not speed.
    settings.freeswitch.decision_deadline_s = 30
    settings.routing.rate_limit_attempts = 1000  # A and B call X 20 times each in a burst
    with Harness(settings, bound, timeout=60) as harness:
        _many_calls(harness)


def _many_calls(harness):
    specs = [dict(caller=A if i % 2 else B, dialed=X, scenario="answered", hold_s=1)
             for i in range(40)]
    results = harness.double.calls(specs)

    records = [harness.wait_record(r.uuid) for r in results]
    assert all(r.sip_status == 200 and r.exit_received for r in results)
    assert all(rec["outcome"] == "answered" for rec in records)


@pytest.mark.parametrize("name", ["answered_caller_hangs_up", "busy", "disconnect_mid_call"])
def test_shared_scenarios_run_by_name(bound, settings, name):
    record = run_scenario(name, bound, settings, caller="+" + A, x="+" + X)

    expected = {"answered_caller_hangs_up": "answered", "busy": "busy",
                "disconnect_mid_call": "answered"}
    assert record["outcome"] == expected[name]
    assert set(SCENARIOS) >= {name}


def test_a_call_on_an_ax_number_owned_by_a_softphone_rings_the_registered_user(
        bound, settings):
    # A carrier call's channel has no domain_name of its own (recording 1_answered; 8a has
    # one because the user authenticated): ${domain_name} resolves to the global that
    # freeswitch-conf/vars.xml sets.
    now = datetime.now(UTC)
    with bound.session() as session:
        from pbx_control.customers import customer_by_name
        customer = customer_by_name(session, "acme")
        add_numbers(session, customer.id, ["+8617000000003"], now=now)
        add_softphone(session, customer.id, "1002", "+8613900000002", now)
        bind(session, customer.id, BindRequest(mode=Mode.AX, a="+8613900000002",
                                               x="+8617000000003", softphone="1002"),
             now=now, settings=settings)
    with Harness(settings, bound) as h:
        played = h.run("answered", caller=STRANGER, dialed="8617000000003")

    assert played.result.bridge == (
        "{origination_caller_id_number=8617000000003,origination_caller_id_name=8617000000003,"
        "originate_timeout=20}user/1002@${domain_name}")
    assert (played.record["reason"], played.record["outcome"]) == ("to_owner", "answered")


def test_a_caller_gone_before_linger_took_effect_still_leaves_a_complete_record(harness):
    played = harness.run("hangup_before_linger", caller=A, dialed=X)

    assert "linger" in played.commands and not played.result.exit_received
    record = played.record
    assert (record["decision"], record["outcome"], record["hangup_by"]) == (
        "connect", "cancelled", "caller")
