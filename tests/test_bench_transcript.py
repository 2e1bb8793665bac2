"""The recordings as templates: the recorded bytes come back, and a call's values land in the
right headers with every Content-Length counted again."""

import json
import re

import pytest

from pbx_control.bench import transcript as t

RECORDED_ARGS = {
    "1_answered": "{origination_caller_id_number=8617000000001}"
                  "sofia/peer/8613800000000@127.0.0.1:5090",
    "1c_answered_nolinger": "{origination_caller_id_number=8617000000001}"
                            "sofia/peer/8613800000000@127.0.0.1:5090",
    "2a_respond403": "403 Forbidden",
    "2b_hangup_rejected": None,
}


def _recorded_values(name: str) -> t.Values:
    text = (t.RECORDINGS / f"{name}.jsonl").read_text()
    far = re.search(r"Other-Leg-Unique-ID: ([0-9a-f-]{36})", text)
    arg = RECORDED_ARGS[name]
    return t.Values(
        0, CALLER=t.REC_CALLER, SHOWN=t.REC_SHOWN, DIALED=t.REC_DIALED, FAR=t.REC_DIALED,
        SIP_CALL_ID=t.REC_SIP_CALL_ID,
        UUID=re.search(r"\\nUnique-ID: ([0-9a-f-]{36})", text).group(1),
        FAR_UUID=far.group(1) if far else "unused",
        CORE_UUID=re.search(r"Core-UUID: ([0-9a-f-]{36})", text).group(1),
        APP_ARG=t.fs_url_encode(arg) if arg else "")


def _render_everything(recording: t.Recording, values: t.Values) -> str:
    parts = [recording.connect_reply.render(values)]
    parts += [recording.replies[word].render(values) for word in recording.replies]
    parts += [m.render(values) for _, messages in recording.events for m in messages]
    parts += [m.render(values) for m in recording.exit_reply]
    return b"".join(parts).decode()


@pytest.mark.parametrize("name", sorted(RECORDED_ARGS))
def test_given_the_recorded_values_the_templates_give_back_the_recorded_bytes(name):
    recording = t.load(name)
    blocks = [json.loads(line) for line in (t.RECORDINGS / f"{name}.jsonl").open()]
    recorded = "".join(b["data"] for b in blocks if b["dir"] == "recv")

    assert _render_everything(recording, _recorded_values(name)) == recorded


def test_the_decision_and_the_answered_part_are_found_in_the_recording():
    answered = t.load("1_answered")

    assert answered.decision == "execute bridge"
    assert 0 < answered.answer_at < answered.hangup_at
    assert set(answered.replies) == {"myevents", "linger", "sendmsg"}
    assert t.load("2a_respond403").decision == "execute respond"
    assert t.load("2b_hangup_rejected").decision == "hangup"


def test_the_hold_stretches_only_what_follows_the_hangup():
    answered = t.load("1_answered")
    recorded_hold = answered.hangup_at - answered.answer_at

    stretched = answered.schedule(hold_s=recorded_hold + 3.0)

    assert [at for at, _ in stretched if at < answered.hangup_at] == [
        at for at, _ in answered.events if at < answered.hangup_at]
    assert max(at for at, _ in stretched) == pytest.approx(
        max(at for at, _ in answered.events) + 3.0)


def _call_values(recording: t.Recording) -> t.Values:
    return t.Values(
        1_000_000_000, CALLER="8613812345678", SHOWN="8617000000042", DIALED="8617000000042",
        FAR="8613912345678", SIP_CALL_ID="7-bench%40127.0.0.1",
        UUID="11111111-2222-3333-4444-555555555555",
        FAR_UUID="66666666-7777-8888-9999-000000000000",
        CORE_UUID="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        APP_ARG=t.fs_url_encode("{origination_caller_id_number=8617000000042}"
                                "sofia/gateway/carrier/8613912345678"))


def _headers(block: str) -> dict:
    return dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)


def test_a_call_sees_its_own_numbers_ids_and_times_in_the_channel_data():
    recording = t.load("1_answered", variables={"pbx_control_entry": "carrier"})
    data = _headers(recording.connect_reply.render(_call_values(recording)).decode())

    assert data["Caller-Caller-ID-Number"] == "8613812345678"
    assert data["Caller-Destination-Number"] == "8617000000042"
    assert data["variable_sip_req_user"] == "8617000000042"
    assert data["Unique-ID"] == "11111111-2222-3333-4444-555555555555"
    assert data["variable_pbx_control_entry"] == "carrier"
    assert data["Event-Date-Timestamp"] == str(1796324116840234 + 1_000_000_000)
    assert "8613900000000" not in str(data) and "8613800000000" not in str(data)


def test_every_event_of_a_call_counts_its_own_length_and_names_the_far_party():
    recording = t.load("1_answered")
    values = _call_values(recording)

    for _, messages in recording.events:
        for message in messages:
            raw = message.render(values)
            head, _, body = raw.partition(b"\n\n")
            length = re.search(rb"Content-Length: (\d+)", head)
            if length:
                assert int(length.group(1)) == len(body)
    bridge = next(m.render(values).decode() for _, ms in recording.events for m in ms
                  if b"CHANNEL_BRIDGE" in m.render(values))
    assert "Other-Leg-Destination-Number: 8613912345678" in bridge
    assert "Other-Leg-Caller-ID-Number: 8617000000042" in bridge
    assert "Caller-Destination-Number: 8617000000042" in bridge


def test_the_application_data_is_the_controllers_own_bridge():
    recording = t.load("1_answered")
    values = _call_values(recording)

    execute = next(m.render(values).decode() for _, ms in recording.events for m in ms
                   if b"Event-Name: CHANNEL_EXECUTE\n" in m.render(values))
    assert f"Application-Data: {values['APP_ARG']}" in execute


def test_without_linger_the_linger_notice_is_left_out():
    refused = t.load("2a_respond403")
    values = _recorded_values("2a_respond403")
    notices = [m.render(values) for _, ms in refused.events for m in ms
               if b"Content-Disposition: linger" in m.render(values)]
    assert notices

    plain = refused.without_linger_notice()
    assert not [m for _, ms in plain.events for m in ms
                if b"Content-Disposition: linger" in m.render(values)]


def test_values_are_encoded_as_freeswitch_encodes_them():
    assert t.fs_url_encode("{a=1,b=2}sofia/gw/86@h:5") == "%7Ba%3D1,b%3D2%7Dsofia/gw/86%40h%3A5"
    assert t.fs_url_encode("403 Forbidden") == "403%20Forbidden"
