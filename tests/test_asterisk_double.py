"""The ARI double against the recordings of a real Asterisk 22.10.1 (tests/fixtures/asterisk).

The same requests are replayed against the double and the meaningful events (variable sets,
caller-id and dialplan notices left out) must come in the recorded order with the recorded
states and causes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from pbx_control.asterisk.client import AriClient, AriConflict, AriNotFound, AriRequestError
from pbx_control.asterisk.double import AriDouble, FarParty

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk"
KEPT = {"StasisStart", "StasisEnd", "Dial", "ChannelStateChange", "ChannelEnteredBridge",
        "ChannelLeftBridge", "ChannelHangupRequest", "ChannelDestroyed", "BridgeDestroyed"}


def recorded(case: str) -> list[dict]:
    lines = (FIXTURES / f"{case}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def shape(events: list[dict], roles: dict[str, str]) -> list[tuple]:
    """(type, role, state, dialstatus, cause, soft) of each meaningful event."""
    out = []
    for event in events:
        if event["type"] not in KEPT:
            continue
        channel = event.get("channel") or event.get("peer") or {}
        out.append((event["type"], roles.get(channel.get("id"), "-"), channel.get("state"),
                    event.get("dialstatus"), event.get("cause"), event.get("soft")))
    return out


def recorded_events(case: str) -> list[dict]:
    return [r["event"] for r in recorded(case) if r["kind"] == "ws_event"]


@contextlib.asynccontextmanager
async def listening(ari: AriDouble):
    """A raw client with every event it receives collected in a list."""
    client = AriClient(ari.url, ari.username, ari.password, ari.app)
    seen: list[dict] = []
    async with client.events() as events:
        async def collect():
            async for event in events:
                seen.append(event)

        task = asyncio.create_task(collect())
        await ari.wait_until(lambda: ari.connected)
        try:
            yield client, seen
        finally:
            task.cancel()
    await client.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_refusal_with_reason_code_21_gives_403_and_the_events_of_case2a():
    async def scenario():
        async with AriDouble() as ari, listening(ari) as (client, seen):
            caller = await ari.incoming_call("sipp", "8613800000000", entry="8613800000000")
            await client.hangup(caller, reason_code=21)
            await ari.wait_until(lambda: any(e["type"] == "StasisEnd" for e in seen))
            return shape(seen, {caller: "A"}), ari.caller_results[caller]

    events, result = run(scenario())
    case = recorded_events("case2a")
    assert events == shape(case, {case[0]["channel"]["id"]: "A"})
    assert result == {"status": 403, "q850": 21}


def test_create_and_dial_flow_matches_w2v_event_for_event():
    """case12 W2v: the created leg enters Stasis at the dial, still Down; the caller's hang-up
    gives a request without cause, StasisEnd, a soft request with 16, ChannelDestroyed 16."""
    w2v = recorded("case12_W2v")
    record_roles = {"1796360523.124": "A", "bleg-9185fdc95caf": "B"}
    body = next(r for r in w2v if r.get("path") == "/ari/channels/create")["body"]

    async def scenario():
        async with AriDouble() as ari, listening(ari) as (client, seen):
            a = await ari.incoming_call("8613900000000", "8617000000001")
            await client.ring(a)
            bridge = (await client.create_bridge(f"call-{a}"))["id"]
            await client.create_channel("PJSIP/8613800000000@trunk_b", "bleg-1", f"bleg,{a}",
                                        a, body["variables"])
            await client.dial("bleg-1", 30)
            await ari.wait_until(lambda: ari.channels["bleg-1"].state == "Up")
            await client.answer(a)
            await client.request("POST", f"/bridges/{bridge}/addChannel",
                                 {"channel": f"{a},bleg-1"})
            await ari.party_hangup(a)
            await client.hangup("bleg-1")
            await client.delete_bridge(bridge)
            await ari.wait_until(lambda: seen and seen[-1]["type"] == "BridgeDestroyed")
            return shape(seen, {a: "A", "bleg-1": "B"}), ari.requests

    events, requests = run(scenario())
    assert events == shape([r["event"] for r in w2v if r["kind"] == "ws_event"], record_roles)
    create = [r for r in requests if r.path == "/ari/channels/create"][0]
    assert create.body == body


def test_busy_far_leg_ends_with_cause_17_and_tech_cause_486_as_case3():
    async def scenario():
        async with AriDouble() as ari, listening(ari) as (client, seen):
            ari.default_far = FarParty("busy")
            a = await ari.incoming_call("8613900000000", "8617000000001")
            await client.create_channel("PJSIP/8613800000000@carrier", "bleg-1", f"bleg,{a}",
                                        a, {})
            await client.dial("bleg-1", 30)
            await ari.wait_until(lambda: any(e["type"] == "ChannelDestroyed" for e in seen))
            return [e for e in seen if e.get("channel", e.get("peer", {})).get("id") == "bleg-1"]

    far = run(scenario())
    kinds = [(e["type"], e.get("dialstatus"), e.get("cause"), e.get("tech_cause")) for e in far
             if e["type"] in ("Dial", "ChannelHangupRequest", "ChannelDestroyed")]
    # case3 (an originated leg) shows exactly these; the created leg adds StasisEnd.
    assert kinds == [("Dial", "", None, None), ("ChannelHangupRequest", None, 17, 486),
                     ("Dial", "BUSY", None, None), ("ChannelDestroyed", None, 17, 486)]


def test_no_answer_ends_with_cause_19_and_no_final_dial_event_as_case6():
    async def scenario():
        async with AriDouble() as ari, listening(ari) as (client, seen):
            ari.default_far = FarParty("ring")
            a = await ari.incoming_call("8613900000000", "8617000000001")
            await client.create_channel("PJSIP/8613800000000@carrier", "bleg-1", f"bleg,{a}",
                                        a, {})
            await client.dial("bleg-1", 1)
            await ari.wait_until(lambda: any(e["type"] == "ChannelDestroyed" for e in seen))
            return seen

    seen = run(scenario())
    dials = [e["dialstatus"] for e in seen if e["type"] == "Dial"]
    destroyed = [e for e in seen if e["type"] == "ChannelDestroyed"][0]
    assert dials == ["", "RINGING"]
    assert (destroyed["cause"], destroyed["tech_cause"]) == (19, 480)


def test_caller_cancel_gives_cause_127_with_tech_cause_487_as_case4():
    async def scenario():
        async with AriDouble() as ari, listening(ari) as (client, seen):
            a = await ari.incoming_call("8613900000000", "8617000000001")
            await ari.party_hangup(a)
            await ari.wait_until(lambda: any(e["type"] == "StasisEnd" for e in seen))
            return shape(seen, {a: "A"})

    case = recorded_events("case4")
    caller = case[0]["channel"]["id"]
    expected = [s for s in shape(case, {caller: "A"}) if s[1] == "A"]
    assert run(scenario()) == expected


def test_events_are_dropped_not_queued_while_the_socket_is_away_and_calls_stay_up():
    async def scenario():
        async with AriDouble() as ari:
            async with listening(ari) as (client, seen):
                a = await ari.incoming_call("8613900000000", "8617000000001")
                await ari.wait_until(lambda: seen)
            await ari.wait_until(lambda: not ari.connected)
            await ari.party_hangup(a)  # lost: nobody listens
            refused = await ari.incoming_call("8613900000000", "8617000000001")
            async with listening(ari) as (client, seen_again):
                app = await client.application()
                marker = await ari.incoming_call("8613900000000", "8617000000001")
                await ari.wait_until(lambda: seen_again)
            return seen_again, marker, refused, app, list(ari.caller_results.values())

    seen_again, marker, refused, app, results = run(scenario())
    # The first event after the reopen is the new call's: nothing of the gap was replayed.
    assert seen_again[0]["type"] == "StasisStart"
    assert seen_again[0]["channel"]["id"] == marker
    assert refused is None and {"status": 603, "q850": 16} in results
    assert app["name"] == "pbx-control" and app["channel_ids"] == []


def test_unknown_resources_answer_404_with_a_message_and_bad_requests_4xx():
    async def scenario():
        async with AriDouble() as ari:
            async with AriClient(ari.url, ari.username, ari.password, ari.app) as client:
                errors = []
                for call in (client.hangup("nope"), client.delete_bridge("nope"),
                             client.dial("nope", 20)):
                    with pytest.raises(AriNotFound) as caught:
                        await call
                    errors.append(caught.value.message)
                bridge = (await client.create_bridge("b"))["id"]
                with pytest.raises(AriRequestError):
                    await client.add_channel(bridge, "nope")
                a = await ari.incoming_call("1", "2")
                await client.create_channel("PJSIP/3@carrier", "bleg-1", f"bleg,{a}", a, {})
                with pytest.raises(AriConflict):  # created legs are not in Stasis until dialled
                    await client.add_channel(bridge, "bleg-1")
                return errors

    assert run(scenario()) == ["Channel not found", "Bridge not found", "Channel not found"]


def test_wrong_credentials_are_refused():
    async def scenario():
        async with AriDouble() as ari:
            async with AriClient(ari.url, ari.username, "wrong", ari.app) as client:
                with pytest.raises(AriRequestError) as caught:
                    await client.list_channels()
                return caught.value.status

    assert run(scenario()) == 401


def test_the_asterisk_docs_point_to_the_recordings_copied_into_the_repository():
    root = Path(__file__).parent.parent
    texts = [root / "asterisk-conf" / "README.md", root / "docs" / "asterisk-client.md",
             *sorted((root / "pbx_control" / "asterisk").glob("*.py"))]

    assert FIXTURES.is_dir()
    for path in texts:
        text = path.read_text()
        assert "shared/fixtures" not in text, path  # outside the repository: not in a clone
    assert "tests/fixtures/asterisk/" in texts[0].read_text()
