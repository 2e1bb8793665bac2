"""Trust rules for a call entering Stasis (docs/pbx_contract, Asterisk section)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pbx_control.asterisk.entry import (
    CARRIER,
    SOFTPHONE,
    STRANGER,
    endpoint_of,
    far_leg_owner,
    far_leg_owner_of_channel,
    read_entry,
)
from pbx_control.config import AsteriskSettings

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk"


def stasis_start(name: str, args: list, number: str = "8613900000000",
                 exten: str = "8617000000001") -> dict:
    return {"type": "StasisStart", "args": args, "channel": {
        "id": "1.1", "name": name, "caller": {"name": "Alice Real", "number": number},
        "dialplan": {"context": "from-carrier", "exten": exten}}}


@pytest.mark.parametrize("name, endpoint", [
    ("PJSIP/carrier-0000007c", "carrier"), ("PJSIP/trunk-b-00000001", "trunk-b"),
    ("PJSIP/1001-00000002", "1001"), ("SIP/carrier-00000001", None), ("PJSIP/", None),
])
def test_endpoint_is_read_from_the_channel_name(name, endpoint):
    assert endpoint_of(name) == endpoint


def test_carrier_call_from_a_trunk_endpoint_is_trusted_and_dialed_is_the_exten():
    entry = read_entry(stasis_start("PJSIP/carrier-0000007c", ["carrier"]), AsteriskSettings())
    assert (entry.kind, entry.trusted, entry.caller_raw, entry.dialed) == (
        CARRIER, True, "8613900000000", "8617000000001")


def test_carrier_entry_through_another_endpoint_is_a_stranger():
    entry = read_entry(stasis_start("PJSIP/from-local-00000001", ["carrier"]),
                       AsteriskSettings())
    assert entry.kind == STRANGER and entry.trusted is False


def test_softphone_is_its_endpoint_never_its_caller_id():
    event = stasis_start("PJSIP/1001-00000002", ["softphone"], number="8613800000000",
                         exten="13800000099")
    entry = read_entry(event, AsteriskSettings())
    assert (entry.kind, entry.username, entry.dialed) == (SOFTPHONE, "1001", "13800000099")


def test_a_trunk_endpoint_cannot_pose_as_a_softphone():
    entry = read_entry(stasis_start("PJSIP/carrier-00000003", ["softphone"]),
                       AsteriskSettings())
    assert entry.kind == STRANGER


def test_the_older_recordings_call_is_a_strangers():
    """case1: args = [dialed number], caller 'sipp' through endpoint from-local."""
    first = json.loads((FIXTURES / "case4.jsonl").read_text().splitlines()[2])
    assert first["type"] == "StasisStart"
    entry = read_entry(first["event"], AsteriskSettings())
    assert entry.kind == STRANGER and entry.dialed == "8613800000000"


def test_far_legs_are_recognised_by_their_stasis_args_and_dialplan():
    w2v = [json.loads(line) for line in (FIXTURES / "case12_W2v.jsonl").read_text().splitlines()]
    starts = [r["event"] for r in w2v if r.get("type") == "StasisStart"]
    caller, far = starts
    assert far_leg_owner(caller) is None
    assert far_leg_owner(far) == caller["channel"]["id"]
    assert far_leg_owner_of_channel(far["channel"]) == caller["channel"]["id"]
    assert far_leg_owner_of_channel(caller["channel"]) is None
