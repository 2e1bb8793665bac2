"""The event-socket wire format against the recorded FreeSWITCH transcripts."""

from __future__ import annotations

import json

import gevent
import pytest
from gevent import socket
from greenswitch.esl import ESLEvent

from pbx_control.freeswitch import recordings as rec
from pbx_control.freeswitch.protocol import (
    Connection,
    Gone,
    MessageReader,
    ProtocolError,
    Timeout,
    deadline_in,
    parse_event,
    parse_header_lines,
    url_decode,
    url_encode,
)

CASES = ["1_answered", "1b_b_hangs_up", "3b_busy_continue_on_fail", "4_cancel",
         "8a_registered_user_outbound"]


def recorded_bytes(case: str) -> bytes:
    data = b""
    for line in (rec.RECORDINGS / f"{case}.jsonl").read_text().splitlines():
        item = json.loads(line)
        if item["dir"] == "recv":
            data += item["data"].encode()
    return data


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("chunk", [1, 7, 1500, 1 << 20])
def test_recorded_streams_frame_the_same_whatever_the_tcp_segments(case, chunk):
    data = recorded_bytes(case)
    reader = MessageReader()
    messages = []
    for start in range(0, len(data), chunk):
        messages += reader.feed(data[start:start + chunk])

    whole = MessageReader().feed(data)
    assert [(m.headers, m.body) for m in messages] == [(m.headers, m.body) for m in whole]
    assert messages[0].reply_text == "+OK"  # %2BOK%0A, decoded
    assert messages[-1].content_type == "text/disconnect-notice"


def test_event_values_are_decoded_after_the_line_split():
    body = (b"Event-Name: CHANNEL_DATA\n"
            b"Caller-Caller-ID-Name: Alice%0Avariable_sip_network_ip%3A%2010.0.0.1\n"
            b"variable_sip_network_ip: 203.0.113.7\n\n")

    event = parse_event(body)

    assert event.get("variable_sip_network_ip") == "203.0.113.7"
    assert event.get("Caller-Caller-ID-Name") == "Alice\nvariable_sip_network_ip: 10.0.0.1"


def test_greenswitch_parser_lets_an_encoded_newline_forge_a_header():
    # Why protocol.py does its own parsing: greenswitch decodes before splitting.
    data = ("Caller-Caller-ID-Name: Alice%0Avariable_sip_network_ip%3A%2010.0.0.1\n"
            "Event-Name: CHANNEL_DATA\n")

    assert ESLEvent(data).headers.get("variable_sip_network_ip") == "10.0.0.1"
    assert "variable_sip_network_ip" not in parse_event(data.encode() + b"\n").headers


@pytest.mark.parametrize("garbage", [
    b"no colon here\n\n",
    b"Content-Length: 12x\n\n",
    b"Content-Length: 999999999\n\n",
    b": empty name\n\n",
])
def test_malformed_messages_are_protocol_errors(garbage):
    with pytest.raises(ProtocolError):
        MessageReader().feed(garbage)


def test_an_endless_header_block_is_refused():
    with pytest.raises(ProtocolError):
        MessageReader().feed(b"X-Long: " + b"a" * (300 * 1024))


def test_url_encoding_round_trips_every_recorded_event():
    for case in CASES:
        for item in rec.events(case):
            for _, value in item.pairs:
                assert url_decode(url_encode(value)) == value


def test_url_encode_encodes_what_freeswitch_does():
    assert url_encode("sofia/peer/861@127.0.0.1:5060") == "sofia/peer/861%40127.0.0.1%3A5060"
    assert url_encode("a\r\nb {x=1}") == "a%0D%0Ab%20%7Bx%3D1%7D"
    assert url_encode("你") == "%E4%BD%A0"


def test_a_read_past_its_deadline_raises_timeout_and_a_closed_peer_raises_gone():
    left, right = socket.socketpair()
    conn = Connection(left)

    with pytest.raises(Timeout):
        conn.read(deadline_in(0.05))
    right.sendall(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
    assert conn.read(deadline_in(1)).reply_text == "+OK"
    right.close()
    gevent.sleep(0)
    with pytest.raises(Gone):
        conn.read(deadline_in(1))


def recorded_events():
    for path in sorted(rec.RECORDINGS.glob("*.jsonl")):
        for message in MessageReader().feed(recorded_bytes(path.stem)):
            if message.is_event:
                yield message.body


def test_lazy_event_headers_read_the_values_of_the_eager_parse_on_every_recording():
    bodies = list(recorded_events())
    assert len(bodies) > 80

    for body in bodies:
        eager = parse_header_lines(body.partition(b"\n\n")[0])
        lazy = parse_event(body)
        assert [lazy.get(name) for name in eager] == list(eager.values())
        assert lazy.get("No-Such-Header") is None and "No-Such-Header" not in lazy.headers
        assert parse_event(body).headers == eager  # the whole parse, nothing read before


def test_a_lazy_lookup_keeps_the_first_line_of_a_name_and_the_eager_colon_rules():
    body = (b"Event-Name: CHANNEL_ANSWER\nX-Plain:no-space\nX-Colon:a: b\nX-Colon: second\n"
            b"Unique-ID: first\nUnique-ID: second\nX-Empty: \n\n")

    event = parse_event(body)

    assert event.get("Unique-ID") == "first"
    assert event.get("X-Plain") == "no-space"
    assert event.get("X-Colon") == "second"  # "X-Colon:a: b" is the header "X-Colon:a"
    assert event.get("X-Empty") == ""
    assert dict(event.headers) == parse_header_lines(body.partition(b"\n\n")[0])


def test_iterating_lazy_headers_still_refuses_a_malformed_line():
    event = parse_event(b"Event-Name: CHANNEL_ANSWER\nno colon here\n\n")

    assert event.name == "CHANNEL_ANSWER"
    with pytest.raises(ProtocolError):
        list(event.headers)


def test_the_channel_data_of_connect_is_read_lazily_and_reads_what_the_full_parse_reads():
    data = recorded_bytes("1_answered")
    connect_reply = MessageReader().feed(data)[0]
    block = data.partition(b"\n\n")[0]

    assert len(block) > 1024 and type(connect_reply.headers) is not dict
    assert connect_reply.headers.get("Channel-Name") == \
        parse_header_lines(block)["Channel-Name"]
    assert dict(connect_reply.headers) == parse_header_lines(block)


def test_long_header_blocks_cannot_forge_a_header_either():
    filler = "".join(f"X-Filler-{i}: {'a' * 20}\n" for i in range(60))
    block = ("Content-Type: command/reply\nReply-Text: %2BOK%0A\n" + filler +
             "Caller-Caller-ID-Name: Alice%0Avariable_sip_network_ip%3A%2010.0.0.1\n"
             "variable_sip_network_ip: 203.0.113.7\n\n").encode()
    (message,) = MessageReader().feed(block)

    assert message.reply_text == "+OK"
    assert message.headers.get("variable_sip_network_ip") == "203.0.113.7"


def test_short_header_blocks_are_still_refused_whole_when_malformed():
    with pytest.raises(ProtocolError):
        MessageReader().feed(b"Content-Type: command/reply\nno colon here\n\n")
