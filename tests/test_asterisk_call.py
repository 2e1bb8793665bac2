"""The Stasis application's call flow against the ARI double, with a fake CallService.

The fake stands for the core so that these tests show what the controller asks Asterisk and
what it reports, decision by decision; tests/test_asterisk_e2e.py runs the real core.
"""

from __future__ import annotations

import asyncio
import threading
import time

from pbx_control.asterisk.double import FarParty
from pbx_control.asterisk.scenarios import Harness
from pbx_control.calls import Routed
from pbx_control.config import Settings
from pbx_control.errors import StorageUnavailable
from pbx_control.routing import Connect, Reason, Refuse

A, B, X = "8613900000000", "8613800000000", "8617000000001"


class FakeCalls:
    """Answers every route with ``decision``; records what the controller reports."""

    def __init__(self, decision, delay_s: float = 0.0, error: Exception | None = None):
        self.decision, self.delay_s, self.error = decision, delay_s, error
        self.routed: list[tuple] = []
        self.events: list[tuple[str, str, dict]] = []
        self.unavailable: list[tuple] = []
        self.open: list = []
        self._released = threading.Event()

    def route_inbound(self, caller_raw, dialed_raw, call_uuid, *, trusted=True):
        self.routed.append(("inbound", caller_raw, dialed_raw, call_uuid, trusted))
        return self._answer()

    def route_outbound(self, username, target_raw, call_uuid):
        self.routed.append(("outbound", username, target_raw, call_uuid))
        return self._answer()

    def _answer(self):
        if self.delay_s:
            self._released.wait(self.delay_s)
        if self.error:
            raise self.error
        return Routed(self.decision, "rec-1")

    def refuse_unavailable(self, caller_raw, dialed_raw, call_uuid):
        self.unavailable.append((caller_raw, dialed_raw, call_uuid))
        return "rec-unavailable"

    def call_event(self, record_id, kind, at=None, **fields):
        self.events.append((record_id, kind, fields))

    def open_records(self):
        return list(self.open)

    def ended(self) -> dict | None:
        return next((f for _, kind, f in self.events if kind == "ended"), None)


def connect(**overrides) -> Connect:
    fields = dict(to="+" + B, show="+" + X, reason=Reason.A_TO_B, binding_id="b1",
                  customer_id=1, carrier="default")
    fields.update(overrides)
    return Connect(**fields)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def settings(**asterisk) -> Settings:
    result = Settings()
    for name, value in asterisk.items():
        setattr(result.asterisk, name, value)
    return result


async def wait_ended(calls: FakeCalls, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if calls.ended() is not None:
            return calls.ended()
        await asyncio.sleep(0.01)
    raise TimeoutError("no ended event")


def test_far_leg_is_created_with_x_as_caller_id_and_connected_line_and_dialled_without_caller():
    calls = FakeCalls(connect())

    async def scenario():
        async with Harness(None, settings(), calls=calls) as h:
            caller_id, far_id = await h.answered_call(A, X)
            return h.double, caller_id, far_id

    ari, caller_id, far_id = run(scenario())
    create = ari.requests_to("POST", r"/channels/create$")[0]
    assert create.params == {"endpoint": f"PJSIP/{B}@carrier", "app": "pbx-control",
                             "appArgs": f"bleg,{caller_id}", "channelId": far_id,
                             "originator": caller_id}
    assert create.body == {"variables": {
        "CALLERID(num)": X, "CALLERID(name)": X, "CONNECTEDLINE(num)": X,
        "CONNECTEDLINE(name)": X, "TIMEOUT(absolute)": str(7200 + 20)}}
    dial = ari.requests_to("POST", rf"/channels/{far_id}/dial$")
    assert [d.params for d in dial] == [{"timeout": "20"}]
    assert not any("caller" in r.params for r in ari.requests)


def test_caller_is_bridged_before_the_dial_and_answered_only_when_the_far_leg_answers():
    """Not recorded on a real Asterisk: the caller joins the bridge before it is answered
    (ARI docs: addChannel sets no state condition)."""
    calls = FakeCalls(connect())

    async def scenario():
        async with Harness(None, settings(), calls=calls) as h:
            await h.answered_call(A, X)
            return [(r.method, r.path.rsplit("/", 1)[-1]) for r in h.double.requests]

    order = run(scenario())
    steps = [step for step in order if step[1] in ("ring", "addChannel", "dial", "answer")]
    assert steps[:4] == [("POST", "ring"), ("POST", "addChannel"), ("POST", "dial"),
                         ("POST", "addChannel")]
    assert steps[4] == ("POST", "answer")


def test_answered_call_sets_the_absolute_timeout_of_the_binding_on_both_legs():
    """Not recorded: TIMEOUT(absolute) through /variable, per the Asterisk docs, so that
    Asterisk itself ends the call while the controller is away."""
    calls = FakeCalls(connect(max_call_s=600))

    async def scenario():
        async with Harness(None, settings(), calls=calls) as h:
            caller_id, far_id = await h.answered_call(A, X)
            await h.double.wait_until(
                lambda: len(h.double.requests_to("POST", r"/variable$")) == 2)
            return h.double, caller_id, far_id

    ari, caller_id, far_id = run(scenario())
    assert ari.channels[caller_id].variables["TIMEOUT(absolute)"] == "600"
    assert ari.channels[far_id].variables["TIMEOUT(absolute)"] == "600"


def test_binding_with_recording_records_the_bridge_and_keeps_the_path_in_the_record():
    """Not recorded on a real Asterisk: POST /bridges/{id}/record as the ARI docs give it."""
    calls = FakeCalls(connect(record=True))

    async def scenario():
        async with Harness(None, settings(recordings_dir="/rec"), calls=calls) as h:
            caller_id, _ = await h.answered_call(A, X)
            await h.double.wait_until(lambda: h.double.requests_to("POST", r"/record$"))
            await h.double.party_hangup(caller_id)
            return h.double, await wait_ended(calls)

    ari, ended = run(scenario())
    record = ari.requests_to("POST", r"/record$")[0]
    assert record.params["name"] == "rec-1" and record.params["format"] == "wav"
    assert ended["recording_path"] == "/rec/rec-1.wav"


def test_softphone_target_is_dialled_as_its_pjsip_endpoint():
    calls = FakeCalls(connect(to="1002", to_kind="softphone"))

    async def scenario():
        async with Harness(None, settings(), calls=calls) as h:
            await h.answered_call(A, X)
            return h.double.requests_to("POST", r"/channels/create$")[0]

    assert run(scenario()).params["endpoint"] == "PJSIP/1002"


def test_far_leg_leaves_through_the_trunk_of_the_carrier_that_owns_x():
    calls = FakeCalls(connect(carrier="telco2"))
    trunks = {"default": "carrier", "telco2": "trunk-telco2"}

    async def scenario():
        async with Harness(None, settings(trunks=trunks), calls=calls) as h:
            await h.answered_call(A, X)
            return h.double.requests_to("POST", r"/channels/create$")[0]

    assert run(scenario()).params["endpoint"] == f"PJSIP/{B}@trunk-telco2"


def test_each_refusal_reason_hangs_up_with_its_q850_cause():
    cases = [(Reason.NO_BINDING, 21, 403), (Reason.UNKNOWN_NUMBER, 1, 404),
             (Reason.EXPIRED, 21, 403)]
    for reason, q850, status in cases:
        calls = FakeCalls(Refuse(reason))

        async def scenario(calls=calls):
            async with Harness(None, settings(), calls=calls) as h:
                caller_id = await h.double.incoming_call(A, X)
                await h.double.wait_until(lambda: caller_id in h.double.caller_results)
                return h.double, caller_id

        ari, caller_id = run(scenario())
        hangup = ari.requests_to("DELETE", rf"/channels/{caller_id}$")
        assert [r.params for r in hangup] == [{"reason_code": str(q850)}], reason
        assert ari.caller_results[caller_id] == {"status": status, "q850": q850}
        assert not ari.requests_to("POST", r"/channels/create$")


def test_refusal_announcement_is_played_as_early_media_before_the_hangup():
    """Not recorded on a real Asterisk: per the ARI docs, media played to a channel not yet
    answered goes out as early media."""
    calls = FakeCalls(Refuse(Reason.NO_BINDING))

    async def scenario():
        async with Harness(None, settings(refuse_announcement="ss-noservice"),
                           calls=calls) as h:
            caller_id = await h.double.incoming_call(A, X)
            await h.double.wait_until(lambda: caller_id in h.double.caller_results)
            return h.double, caller_id

    ari, caller_id = run(scenario())
    steps = [(r.method, r.path, r.params.get("media")) for r in ari.requests
             if caller_id in r.path]
    assert steps[0] == ("POST", f"/ari/channels/{caller_id}/play", "sound:ss-noservice")
    assert steps[-1][:2] == ("DELETE", f"/ari/channels/{caller_id}")
    assert not ari.requests_to("POST", r"/answer$")


def test_decision_missing_its_deadline_refuses_503_and_records_unavailable():
    calls = FakeCalls(connect(), delay_s=2.0)

    async def scenario():
        async with Harness(None, settings(decision_deadline_s=0.1), calls=calls,
                           decision_deadline_s=None) as h:
            caller_id = await h.double.incoming_call(A, X)
            await h.double.wait_until(lambda: caller_id in h.double.caller_results)
            await h.double.wait_until(lambda: calls.unavailable)
            calls._released.set()
            return h.double, caller_id

    ari, caller_id = run(scenario())
    # chan_pjsip answers 503 for cause 34; it has no SIP answer for 41
    assert ari.caller_results[caller_id] == {"status": 503, "q850": 34}
    assert calls.unavailable == [(A, X, caller_id)]
    assert not ari.requests_to("POST", r"/channels/create$")


def test_storage_down_refuses_503():
    calls = FakeCalls(connect(), error=StorageUnavailable("down"))

    async def scenario():
        async with Harness(None, settings(), calls=calls) as h:
            caller_id = await h.double.incoming_call(A, X)
            await h.double.wait_until(lambda: caller_id in h.double.caller_results)
            return h.double.caller_results[caller_id]

    # chan_pjsip answers 503 for cause 34; it has no SIP answer for 41

    assert run(scenario()) == {"status": 503, "q850": 34}


def test_asterisk_not_answering_rest_in_time_fails_the_call_with_503():
    calls = FakeCalls(connect())

    async def scenario():
        async with Harness(None, settings(), calls=calls, rest_timeout_s=0.3) as h:
            h.double.stall("POST", r"/ari/bridges$")
            caller_id = await h.double.incoming_call(A, X)
            ended = await wait_ended(calls)
            return h.double, caller_id, ended

    ari, caller_id, ended = run(scenario())
    assert ended["outcome"] == "failed" and ended["sip_status"] == 503
    assert ended["q850_cause"] == 41 and ended["hangup_by"] == "controller"
    # chan_pjsip answers 503 for cause 34; it has no SIP answer for 41
    assert ari.caller_results[caller_id] == {"status": 503, "q850": 34}


def test_many_calls_at_once_are_followed_independently():
    calls = FakeCalls(connect())

    async def scenario():
        async with Harness(None, settings(), calls=calls) as h:
            ari = h.double
            ids = [await ari.incoming_call(A, X) for _ in range(10)]
            await ari.wait_until(lambda: all(ari.channels[i].state == "Up" for i in ids))
            await asyncio.gather(*(ari.party_hangup(i) for i in ids))
            await ari.wait_until(lambda: sum(k == "ended" for _, k, _ in calls.events) == 10)
            return ari

    ari = run(scenario())
    assert not ari.channels  # every far leg hung up with its caller
    assert not ari.bridges


def test_far_side_busy_gives_the_caller_486_and_a_busy_record():
    calls = FakeCalls(connect())

    async def scenario():
        async with Harness(None, settings(), calls=calls) as h:
            h.double.default_far = FarParty("busy")
            caller_id = await h.double.incoming_call(A, X)
            return h.double, caller_id, await wait_ended(calls)

    ari, caller_id, ended = run(scenario())
    assert ari.caller_results[caller_id] == {"status": 486, "q850": 17}
    assert ended == {"outcome": "busy", "hangup_by": "callee", "sip_status": 486,
                     "q850_cause": 17, "pbx_cause": "17/486"}


def test_health_reports_the_connection_and_reconnects_after_asterisk_drops_it():
    calls = FakeCalls(connect())

    async def scenario():
        async with Harness(None, settings(), calls=calls) as h:
            first = h.controller.health()
            h.double.accepting = False
            await h.double.drop_websocket()
            await h.double.wait_until(lambda: not h.controller.health()["connected"])
            down = h.controller.health()
            h.double.accepting = True
            await h.double.wait_until(lambda: h.controller.health()["connected"])
            return first, down, h.controller.health()

    first, down, again = run(scenario())
    assert first["connected"] and first["connects"] == 1
    assert not down["connected"]
    assert again["connected"] and again["connects"] >= 2


def test_asterisk_ends_the_call_at_the_binding_maximum_and_the_record_says_pbx():
    """Not recorded: the double hangs up on TIMEOUT(absolute) as the Asterisk docs describe."""
    calls = FakeCalls(connect(max_call_s=1))

    async def scenario():
        async with Harness(None, settings(), calls=calls) as h:
            await h.answered_call(A, X)
            return await wait_ended(calls)

    ended = run(scenario())
    assert ended["outcome"] == "answered" and ended["hangup_by"] == "pbx"
    assert ended["sip_status"] == 200


def test_caller_hanging_up_while_the_decision_is_made_is_a_cancelled_call_and_no_far_leg():
    calls = FakeCalls(connect(), delay_s=0.5)

    async def scenario():
        async with Harness(None, settings(), calls=calls) as h:
            caller_id = await h.double.incoming_call(A, X)
            await h.double.wait_until(lambda: calls.routed)
            await h.double.party_hangup(caller_id)
            calls._released.set()
            return h.double, await wait_ended(calls)

    ari, ended = run(scenario())
    assert ended["outcome"] == "cancelled" and ended["hangup_by"] == "caller"
    assert ended["sip_status"] == 487
    assert not ari.requests_to("POST", r"/channels/create$")
