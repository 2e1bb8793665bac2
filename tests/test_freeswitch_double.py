"""The FreeSWITCH double against a scripted controller: it must do what the recordings show."""

from __future__ import annotations

from pathlib import Path

import gevent
from gevent.server import StreamServer

from pbx_control.freeswitch import recordings as rec
from pbx_control.freeswitch.double import FreeSwitchDouble
from pbx_control.freeswitch.protocol import Connection, Gone, Timeout, deadline_in

A, B, X = "8613900000000", "8613800000000", "8617000000001"
BRIDGE = ("sendmsg\ncall-command: execute\nexecute-app-name: bridge\nexecute-app-arg: "
          "{origination_caller_id_number=8617000000001,origination_caller_id_name="
          "8617000000001}sofia/gateway/carrier/8613800000000\n\n")


class Script:
    """A controller that sends fixed commands and keeps everything FreeSWITCH sent."""

    def __init__(self, *commands: str, read_s: float = 0.3):
        self.commands = commands
        self.read_s = read_s
        self.messages = []
        self.closed = False
        self.server = StreamServer(("127.0.0.1", 0), self._handle)

    def _handle(self, sock, _address):
        conn = Connection(sock)
        for command in self.commands:
            conn.send(command.encode())
            self._drain(conn, 0.05)
        self._drain(conn, self.read_s)

    def _drain(self, conn, seconds):
        try:
            while True:
                self.messages.append(conn.read(deadline_in(seconds)))
        except Timeout:
            pass
        except Gone:
            self.closed = True

    def play(self, **call):
        self.server.start()
        try:
            double = FreeSwitchDouble("127.0.0.1", self.server.server_port, timeout=1)
            result = double.call(**call)
            gevent.sleep(0.05)
            return result
        finally:
            self.server.stop()

    def event_names(self):
        return [m.event().name for m in self.messages if m.is_event]


def test_the_connect_reply_is_the_recorded_channel_data_for_this_call():
    script = Script("connect\n\n", "exit\n\n")
    result = script.play(caller=B, dialed=X)

    data = script.messages[0].headers
    assert data["Unique-ID"] == result.uuid and data["Event-Name"] == "CHANNEL_DATA"
    assert (data["Caller-Caller-ID-Number"], data["Caller-Destination-Number"]) == (B, X)
    assert data["Channel-Name"].startswith(f"sofia/carrier/{B}@")
    assert data["variable_pbx_control_entry"] == "carrier"
    assert script.messages[0].reply_text == "+OK"  # %2BOK%0A on the wire, as recorded
    assert (data["Socket-Mode"], data["Control"]) == ("async", "single")
    assert not any(rec.RECORDED_CALLER in v for v in data.values())


def test_an_answered_call_emits_the_recorded_events_in_the_recorded_order():
    script = Script("connect\n\n", "myevents\n\n", "linger\n\n", BRIDGE, "exit\n\n")
    script.play(caller=A, dialed=X)

    recorded = [m.name for m in rec.events("1_answered") if m.kind == "event"]
    assert script.event_names() == recorded
    notices = [m.headers.get("Content-Disposition") for m in script.messages
               if m.content_type == "text/disconnect-notice"]
    assert notices == ["linger", "disconnect"]


def test_without_linger_freeswitch_closes_right_after_the_hangup_recording_1c():
    script = Script("connect\n\n", "myevents\n\n", BRIDGE)
    result = script.play(caller=A, dialed=X)

    assert script.event_names()[-1] == "CHANNEL_HANGUP_COMPLETE"
    assert script.messages[-1].headers.get("Content-Disposition") == "disconnect"
    assert not result.exit_received


def test_without_hangup_after_bridge_the_caller_stays_parked_recording_1b():
    script = Script("connect\n\n", "myevents\n\n", "linger\n\n", BRIDGE)
    result = script.play(caller=A, dialed=X, scenario="callee_hangs_up")

    assert script.event_names()[-2:] == ["CHANNEL_UNBRIDGE", "CHANNEL_EXECUTE_COMPLETE"]
    assert result.hangup_cause is None  # nobody hung the caller up


def test_without_continue_on_fail_a_busy_far_side_hangs_the_caller_up_recording_3():
    script = Script("connect\n\n", "myevents\n\n", "linger\n\n", BRIDGE, "exit\n\n")
    result = script.play(caller=A, dialed=X, scenario="busy")

    assert result.sip_status == 486 and "CHANNEL_HANGUP_COMPLETE" in script.event_names()


def test_without_myevents_no_event_is_sent():
    script = Script("connect\n\n", "linger\n\n", BRIDGE, "exit\n\n")
    script.play(caller=A, dialed=X)

    assert script.event_names() == []


def test_respond_gives_the_status_and_freeswitch_cause_recording_2a():
    respond = ("sendmsg\ncall-command: execute\nexecute-app-name: respond\n"
               "execute-app-arg: 403\n\n")
    script = Script("connect\n\n", "myevents\n\n", "linger\n\n", respond, "exit\n\n")
    result = script.play(caller=A, dialed=X)

    end = next(m.event() for m in script.messages
               if m.is_event and m.event().name == "CHANNEL_HANGUP_COMPLETE")
    assert result.sip_status == 403
    assert (end.get("Hangup-Cause"), end.get("variable_hangup_cause_q850")) == (
        "CALL_REJECTED", "21")
    assert end.get("variable_sip_hangup_disposition") == "send_refuse"


def test_the_freeswitch_docs_point_to_the_recordings_copied_into_the_repository():
    root = Path(__file__).parent.parent
    readme = root / "freeswitch-conf" / "README.md"
    texts = [readme, rec.RECORDINGS / "README.md",
             *sorted((root / "pbx_control" / "freeswitch").glob("*.py"))]

    for path in texts:
        text = path.read_text()
        assert "shared/fixtures" not in text, path  # outside the repository: not in a clone
    assert "pbx_control/freeswitch/recordings/" in readme.read_text()
    assert (rec.RECORDINGS / "1_answered.jsonl").is_file()
