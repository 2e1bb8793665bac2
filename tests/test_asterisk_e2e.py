"""End to end: the Asterisk controller with the real CallService and storage (SQLite and
PostgreSQL) against the ARI double, one scenario per test."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from pbx_control.asterisk.scenarios import SCENARIOS, Harness, disconnect_gap, run_scenario
from pbx_control.bindings import BindRequest, bind
from pbx_control.customers import ensure_customer
from pbx_control.pool import add_numbers
from pbx_control.routing import Mode
from pbx_control.softphones import add_softphone
from pbx_control.storage.tables import Binding, CallRecord

A, B, X = "8613900000000", "8613800000000", "8617000000001"
X2, TARGET = "8617000000002", "8613800000099"
STRANGER = "8613700000009"


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


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def essentials(record: dict) -> dict:
    keys = ("decision", "reason", "outcome", "hangup_by", "sip_status", "q850_cause",
            "reconciled")
    return {k: record[k] for k in keys}


def test_a_calls_b_through_x_and_b_sees_only_x(bound, settings):
    async def scenario():
        async with Harness(bound, settings) as h:
            caller_id, far_id = await h.answered_call(A, X)
            await h.double.party_hangup(caller_id)
            return h.double, far_id, await h.record(caller_id)

    ari, far_id, record = run(scenario())
    create = ari.requests_to("POST", r"/channels/create$")[0]
    assert create.params["endpoint"] == f"PJSIP/{B}@carrier"
    identity = {k: v for k, v in create.body["variables"].items() if "TIMEOUT" not in k}
    assert identity == {"CALLERID(num)": X, "CALLERID(name)": X, "CONNECTEDLINE(num)": X,
                        "CONNECTEDLINE(name)": X}
    assert [r.params for r in ari.requests_to("POST", rf"/channels/{far_id}/dial$")] == [
        {"timeout": "20"}]
    assert essentials(record) == {
        "decision": "connect", "reason": "a_to_b", "outcome": "answered", "hangup_by": "caller",
        "sip_status": 200, "q850_cause": 16, "reconciled": False}
    assert record["ringing_at"] and record["answered_at"] and record["ended_at"]
    assert record["caller"] == "+" + A and record["callee"] == "+" + B


def test_b_calls_a_through_x_and_a_hangs_up_last(bound, settings):
    async def scenario():
        async with Harness(bound, settings) as h:
            caller_id, far_id = await h.answered_call(B, X)
            await h.double.party_hangup(far_id)
            return h.double, caller_id, await h.record(caller_id)

    ari, caller_id, record = run(scenario())
    create = ari.requests_to("POST", r"/channels/create$")[0]
    assert create.params["endpoint"] == f"PJSIP/{A}@carrier"
    assert {k: v for k, v in create.body["variables"].items() if "TIMEOUT" not in k} == {
        "CALLERID(num)": X, "CALLERID(name)": X, "CONNECTEDLINE(num)": X,
        "CONNECTEDLINE(name)": X}
    assert not any("caller" in r.params for r in ari.requests)
    assert essentials(record)["reason"] == "b_to_a"
    assert record["outcome"] == "answered" and record["hangup_by"] == "callee"
    assert ari.caller_results[caller_id]["bye"] is True  # the caller was hung up by us


@pytest.mark.parametrize("name, expected", [
    ("busy", {"outcome": "busy", "hangup_by": "callee", "sip_status": 486, "q850_cause": 17}),
    ("no_answer", {"outcome": "no_answer", "hangup_by": "pbx", "sip_status": 480,
                   "q850_cause": 19}),
    ("cancel_while_ringing", {"outcome": "cancelled", "hangup_by": "caller", "sip_status": 487,
                              "q850_cause": None}),
    ("answered_callee_hangs_up", {"outcome": "answered", "hangup_by": "callee",
                                  "sip_status": 200, "q850_cause": 16}),
    ("answered_caller_hangs_up", {"outcome": "answered", "hangup_by": "caller",
                                  "sip_status": 200, "q850_cause": 16}),
])
def test_call_ends_are_recorded_with_the_shared_outcomes(bound, settings, name, expected):
    record = run_scenario(name, bound, settings, caller=A, x=X)
    assert {k: record[k] for k in expected} == expected
    assert record["reconciled"] is False


def test_stranger_is_refused_403_with_cause_21(bound, settings):
    async def scenario():
        async with Harness(bound, settings) as h:
            caller_id = await h.double.incoming_call(STRANGER, X)
            return h.double, caller_id, await h.record(caller_id)

    ari, caller_id, record = run(scenario())
    assert ari.caller_results[caller_id] == {"status": 403, "q850": 21}
    assert essentials(record) == {
        "decision": "refuse", "reason": "no_binding", "outcome": "refused",
        "hangup_by": "controller", "sip_status": 403, "q850_cause": 21, "reconciled": False}
    assert not ari.requests_to("POST", r"/channels/create$")


def test_expired_binding_is_refused(bound, settings):
    with bound.session() as session:
        session.execute(update(Binding).where(Binding.mode == "axb").values(
            expires_at=datetime.now(UTC) - timedelta(minutes=1)))

    record = run_scenario("refused", bound, settings, caller=A, x=X)
    assert (record["reason"], record["sip_status"], record["q850_cause"]) == ("expired", 403, 21)


def test_unknown_number_is_refused_404_with_cause_1(bound, settings):
    async def scenario():
        async with Harness(bound, settings) as h:
            caller_id = await h.double.incoming_call(A, "8617000000999")
            return h.double.caller_results, caller_id, await h.record(caller_id)

    results, caller_id, record = run(scenario())
    assert results[caller_id] == {"status": 404, "q850": 1}
    assert record["reason"] == "unknown_number"


def test_a_from_an_endpoint_that_is_not_a_carrier_trunk_is_a_stranger(bound, settings):
    """Trust: A's own number arriving through a non-trunk endpoint is not believed."""
    async def scenario():
        async with Harness(bound, settings) as h:
            caller_id = await h.double.incoming_call(A, X, endpoint="from-local")
            return h.double.caller_results, caller_id, await h.record(caller_id)

    results, caller_id, record = run(scenario())
    assert results[caller_id]["status"] == 403
    assert record["decision"] == "refuse" and record["reason"] == "no_binding"


def test_older_recordings_entry_without_kind_is_a_stranger(bound, settings):
    """case1-case8 entered Stasis with args = the dialed number and caller 'sipp'."""
    async def scenario():
        async with Harness(bound, settings) as h:
            caller_id = await h.double.incoming_call("sipp", X, entry=X)
            return h.double.caller_results, caller_id, await h.record(caller_id)

    results, caller_id, record = run(scenario())
    assert results[caller_id]["status"] == 403 and record["decision"] == "refuse"


def test_softphone_of_an_ax_subscriber_calls_out_showing_its_x(bound, settings):
    async def scenario():
        async with Harness(bound, settings) as h:
            caller_id, far_id = await h.answered_call(
                "1001", TARGET, entry="softphone", endpoint="1001")
            await h.double.party_hangup(caller_id)
            return h.double, await h.record(caller_id)

    ari, record = run(scenario())
    create = ari.requests_to("POST", r"/channels/create$")[0]
    assert create.params["endpoint"] == f"PJSIP/{TARGET}@carrier"
    assert create.body["variables"]["CALLERID(num)"] == X2
    assert create.body["variables"]["CONNECTEDLINE(name)"] == X2
    assert record["direction"] == "outbound" and record["reason"] == "outbound"
    assert record["outcome"] == "answered"


def test_softphone_claiming_another_number_as_caller_id_is_known_by_its_endpoint(bound, settings):
    async def scenario():
        async with Harness(bound, settings) as h:
            caller_id = await h.double.incoming_call(
                "8613800000000", TARGET, entry="softphone", endpoint="1002")
            return await h.record(caller_id)

    record = run(scenario())
    assert record["reason"] == "unknown_subscriber" and record["sip_status"] == 403


def test_websocket_drop_mid_call_tears_down_the_far_leg_left_alone_and_reconciles(
        bound, settings):
    async def scenario():
        async with Harness(bound, settings) as h:
            ari = h.double
            caller_id, far_id = await h.answered_call(A, X)
            await h.wait_recorded(caller_id, "answered_at")
            # case5a: the caller hangs up while the events are lost; B stays up alone.
            await disconnect_gap(h, lambda: ari.party_hangup(caller_id))
            record = await h.record(caller_id)
            await ari.wait_until(lambda: far_id not in ari.channels)
            return ari, far_id, record

    ari, far_id, record = run(scenario())
    assert ari.requests_to("DELETE", rf"/channels/{far_id}$")
    assert record["outcome"] == "answered" and record["reconciled"] is True
    assert record["sip_status"] == 200
    assert not ari.bridges


def test_events_resume_after_a_drop_when_both_legs_survived(bound, settings):
    """case5b: nothing is replayed, the call goes on and its end is seen normally."""
    async def scenario():
        async with Harness(bound, settings) as h:
            ari = h.double
            caller_id, far_id = await h.answered_call(A, X)

            async def nothing():
                return None

            await disconnect_gap(h, nothing)
            await asyncio.sleep(0)  # let the reconnect's reconciliation run
            await ari.wait_until(lambda: h.controller.health()["connected"])
            await ari.party_hangup(far_id)
            return await h.record(caller_id)

    record = run(scenario())
    assert record["hangup_by"] == "callee" and record["reconciled"] is False


def test_controller_restart_reconciles_what_it_left_behind(bound, settings):
    async def scenario():
        async with Harness(bound, settings) as h:
            ari = h.double
            caller_id, far_id = await h.answered_call(A, X)
            await h.wait_recorded(caller_id, "answered_at")
            await h.stop_controller()
            await ari.party_hangup(caller_id)  # nobody listens: B stays up alone
            stray = ari.bridges.copy()
            await h.start_controller()
            record = await h.record(caller_id)
            await ari.wait_until(lambda: far_id not in ari.channels and not ari.bridges)
            return ari, far_id, stray, record

    ari, far_id, stray, record = run(scenario())
    assert stray  # the bridge outlived the controller
    assert ari.requests_to("DELETE", rf"/channels/{far_id}$")
    assert essentials(record) == {
        "decision": "connect", "reason": "a_to_b", "outcome": "answered", "hangup_by": "caller",
        "sip_status": 200, "q850_cause": None, "reconciled": True}


def test_new_calls_while_the_controller_is_away_get_603_from_asterisk(bound, settings):
    async def scenario():
        async with Harness(bound, settings) as h:
            await h.stop_controller()
            refused = await h.double.incoming_call(A, X)
            await h.start_controller()
            return refused, list(h.double.caller_results.values())

    refused, results = run(scenario())
    assert refused is None and results == [{"status": 603, "q850": 16}]


def test_disconnect_scenario_completes_the_record_as_reconciled(bound, settings):
    record = run_scenario("disconnect_mid_call", bound, settings, caller=A, x=X)
    assert (record["outcome"], record["sip_status"], record["reconciled"]) == (
        "answered", 200, True)


def test_unknown_scenario_name_is_refused_before_anything_runs(bound, settings):
    assert "nonsense" not in SCENARIOS
    with pytest.raises(ValueError):
        run_scenario("nonsense", bound, settings, caller=A, x=X)
    with bound.session() as session:
        assert session.scalars(select(CallRecord)).first() is None


def test_caller_left_alone_by_a_far_side_that_hung_up_unseen_is_hung_up_at_reconcile(
        bound, settings):
    """case10: B's leg gone, A stays up alone in the bridge until someone deletes it."""
    async def scenario():
        async with Harness(bound, settings) as h:
            ari = h.double
            caller_id, far_id = await h.answered_call(A, X)
            await h.wait_recorded(caller_id, "answered_at")
            await disconnect_gap(h, lambda: ari.party_hangup(far_id))
            record = await h.record(caller_id)
            await ari.wait_until(lambda: caller_id not in ari.channels)
            return ari, caller_id, record

    ari, caller_id, record = run(scenario())
    assert [r.params for r in ari.requests_to("DELETE", rf"/channels/{caller_id}$")] == [{}]
    assert ari.caller_results[caller_id]["bye"] is True
    assert (record["outcome"], record["hangup_by"], record["reconciled"]) == (
        "answered", "callee", True)


def test_asterisk_not_answering_rest_in_time_fails_the_call_503(bound, settings):
    async def scenario():
        async with Harness(bound, settings, rest_timeout_s=0.3) as h:
            h.double.stall("POST", r"/ari/bridges$")
            caller_id = await h.double.incoming_call(A, X)
            return h.double.caller_results, caller_id, await h.record(caller_id)

    results, caller_id, record = run(scenario())
    # chan_pjsip answers 503 for cause 34; it has no SIP answer for 41
    assert results[caller_id] == {"status": 503, "q850": 34}
    assert essentials(record) == {
        "decision": "connect", "reason": "a_to_b", "outcome": "failed",
        "hangup_by": "controller", "sip_status": 503, "q850_cause": 41, "reconciled": False}


def test_a_bridged_call_a_restart_left_up_is_adopted_and_its_end_recorded(bound, settings):
    async def scenario():
        async with Harness(bound, settings) as h:
            ari = h.double
            caller_id, far_id = await h.answered_call(A, X)
            await h.wait_recorded(caller_id, "answered_at")
            await h.stop_controller()
            await h.start_controller()
            await ari.wait_until(lambda: caller_id in h.controller.app.followed())
            await ari.party_hangup(far_id)
            record = await h.record(caller_id)
            await ari.wait_until(lambda: caller_id not in ari.channels and not ari.bridges)
            return record

    record = run(scenario())
    assert (record["outcome"], record["hangup_by"], record["sip_status"]) == (
        "answered", "callee", 200)
    assert record["reconciled"] is False  # its end was seen, not inferred
