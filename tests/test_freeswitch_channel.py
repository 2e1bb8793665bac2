"""Trust rules over recorded channel data, and the end of a call read from recorded events."""

from __future__ import annotations

import pytest

from pbx_control.config import FreeSwitchSettings
from pbx_control.freeswitch import recordings as rec
from pbx_control.freeswitch.channel import Entry, read_channel
from pbx_control.freeswitch.double_channel import Caller, Channel
from pbx_control.freeswitch.outcome import bridge_failure, ending
from pbx_control.freeswitch.protocol import Event, ProtocolError

SETTINGS = FreeSwitchSettings(carrier_addresses=["192.0.2.20"])


def data(**caller) -> dict[str, str]:
    caller.setdefault("source_ip", "192.0.2.20")
    return dict(Channel(Caller(**caller), "8617000000001").channel_data())


def test_a_call_from_a_configured_trunk_is_trusted_with_its_caller_number():
    info = read_channel(data(number="8613900000000"), SETTINGS)

    assert info.entry == Entry.CARRIER
    assert (info.caller_raw, info.dialed_raw) == ("8613900000000", "8617000000001")


def test_the_number_a_trunk_asserts_in_pai_is_the_caller_recording_10a():
    info = read_channel(data(number="+8613900000000", pai=True), SETTINGS)

    assert info.entry == Entry.CARRIER and info.caller_raw == "+8613900000000"


@pytest.mark.parametrize("change", [
    {"variable_sip_network_ip": "203.0.113.7"},
    {"variable_pbx_control_entry": ""},
    {"Channel-Name": "sofia/internal/8613900000000@192.0.2.20:5060"},
])
def test_anything_short_of_the_full_trunk_rule_is_untrusted(change):
    channel = {**data(number="8613900000000"), **change}

    assert read_channel(channel, SETTINGS).entry == Entry.UNTRUSTED


def test_the_recorded_peer_profile_call_without_the_entry_variable_is_untrusted():
    recorded = dict(rec.connect_reply("1_answered"))

    assert read_channel(recorded, FreeSwitchSettings()).entry == Entry.UNTRUSTED


def test_a_softphone_is_its_authenticated_user_never_its_from():
    channel = data(entry="softphone", user="1002")
    channel["variable_sip_from_user"] = "13900000000"
    channel["Caller-Caller-ID-Number"] = "13900000000"

    info = read_channel(channel, SETTINGS)

    assert (info.entry, info.username, info.caller_raw) == (Entry.SOFTPHONE, "1002", None)


def test_an_unauthenticated_softphone_call_is_a_stranger():
    info = read_channel(data(entry="softphone", authorized=False), SETTINGS)

    assert info.entry == Entry.STRANGER and info.username is None


@pytest.mark.parametrize("change", [
    {"Unique-ID": "not-a-uuid", "variable_uuid": ""},
    {"Caller-Destination-Number": "8617000000001\r\nexecute-app-name: bridge"},
    {"Caller-Destination-Number": ""},
])
def test_unusable_channel_data_is_a_protocol_error(change):
    with pytest.raises(ProtocolError):
        read_channel({**data(number="8613900000000"), **change}, SETTINGS)


def recorded(case: str, name: str, application: str | None = None) -> Event:
    return Event(dict(rec.find(case, name, application).pairs))


@pytest.mark.parametrize("case,answered,expected", [
    ("1_answered", True, ("answered", "caller", 200, 16, "NORMAL_CLEARING/16")),
    ("1b_b_hangs_up", True, ("answered", "callee", 200, 16, "NORMAL_CLEARING/16")),
    ("3_busy", False, ("busy", "callee", 486, 17, "USER_BUSY/17")),
    ("3b_busy_continue_on_fail", False, ("busy", "callee", 486, 17, "USER_BUSY/17")),
    ("4_cancel", False, ("cancelled", "caller", 487, 16, "ORIGINATOR_CANCEL/487")),
])
def test_recorded_ends_read_into_the_common_outcome(case, answered, expected):
    end = ending(recorded(case, "CHANNEL_HANGUP_COMPLETE"), answered=answered)

    assert (end.outcome.value, end.hangup_by.value, end.sip_status, end.q850_cause,
            end.pbx_cause) == expected


def test_the_scheduled_maximum_duration_is_an_end_by_the_pbx():
    event = recorded("1_answered", "CHANNEL_HANGUP_COMPLETE")
    event.headers.update({"Hangup-Cause": "ALLOTTED_TIMEOUT",
                          "variable_sip_hangup_disposition": "send_bye"})

    assert ending(event, answered=True).hangup_by.value == "pbx"


def test_a_failed_bridge_is_told_by_its_execute_complete_recording_3b():
    busy = recorded("3b_busy_continue_on_fail", "CHANNEL_EXECUTE_COMPLETE", "bridge")
    fine = recorded("1_answered", "CHANNEL_EXECUTE_COMPLETE", "bridge")

    assert bridge_failure(busy) == "USER_BUSY"
    assert bridge_failure(fine) is None
