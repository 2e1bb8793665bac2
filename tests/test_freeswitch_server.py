"""The outbound server, its sessions and the inbound connection, over a fake core.

The real CallService runs in test_freeswitch_e2e; here a fake decides at once so the tests
are about the protocol: the linger notice, garbage, concurrency, the inbound side.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace

import gevent
import pytest
from gevent import socket

from pbx_control.config import Settings
from pbx_control.freeswitch.core import CoreClient
from pbx_control.freeswitch.double import FreeSwitchDouble
from pbx_control.freeswitch.double_inbound import InboundDouble
from pbx_control.freeswitch.inbound import InboundConnection, wait_connected
from pbx_control.freeswitch.protocol import Event
from pbx_control.freeswitch.server import allowed
from pbx_control.freeswitch.service import build
from pbx_control.freeswitch.tracker import Tracker
from pbx_control.routing import Connect, Reason, Refuse

A, B, X = "8613900000000", "8613800000000", "8617000000001"


@dataclass
class Routed:
    decision: object
    record_id: str | None


class FakeCore:
    """Connects A to B on X, refuses anyone else; remembers every call event."""

    def __init__(self):
        self.events: list[tuple] = []
        self.routed: list[tuple] = []
        self.open: list = []

    def route_inbound(self, caller, dialed, uuid, trusted=True):
        self.routed.append((caller, dialed, uuid, trusted))
        if trusted and caller == A:
            return Routed(Connect(to="+" + B, show="+" + X, reason=Reason.A_TO_B),
                          f"{len(self.routed):08x}")
        return Routed(Refuse(Reason.NO_BINDING), f"{len(self.routed):08x}")

    def route_outbound(self, username, target, uuid):
        return Routed(Refuse(Reason.UNKNOWN_SUBSCRIBER), None)

    def refuse_unavailable(self, caller, dialed, uuid, outbound=False):
        return None

    def call_event(self, record_id, kind, at=None, **fields):
        self.events.append((record_id, kind, fields))

    def call_events(self, events):
        # The controller writes its events in batches; this fake takes them one by one.
        return [self.call_event(record_id, kind, at, **fields)
                for record_id, kind, at, fields in events]

    def open_records(self):
        return list(self.open)

    def ended(self, record_id):
        return [f for r, k, f in self.events if r == record_id and k == "ended"]


@pytest.fixture
def setup():
    settings = Settings()
    settings.freeswitch.esl_password = "secret"
    inbound = InboundDouble("secret").start()
    settings.freeswitch.esl_port = inbound.port
    core = FakeCore()
    controller = build(settings, None, host="127.0.0.1", port=0, service=core).start()
    wait_connected(controller.inbound, 5)
    host, port = controller.server.address
    double = FreeSwitchDouble(host, port, inbound=inbound)
    yield SimpleNamespace(settings=settings, inbound=inbound, core=core,
                          controller=controller, double=double, port=port)
    controller.stop()
    inbound.stop()


def test_an_answered_call_whose_linger_notice_precedes_the_bridge_end_is_not_an_error(
        setup, caplog):
    # Recording 1_answered: text/disconnect-notice (linger) comes before the bridge's
    # CHANNEL_EXECUTE_COMPLETE, the order that makes greenswitch raise.
    with caplog.at_level(logging.INFO):
        result = setup.double.call(caller=A, dialed=X, scenario="answered")

    assert result.exit_received and result.sip_status == 200
    assert setup.core.ended("00000001")[0]["outcome"] == "answered"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_garbage_instead_of_channel_data_closes_the_session_and_the_server_goes_on(setup):
    sock = socket.create_connection(("127.0.0.1", setup.port), timeout=5)
    assert sock.recv(100) == b"connect\n\n"
    sock.sendall(b"this is not the event socket\n\n")

    assert sock.recv(100) == b""  # closed, no command sent for garbage
    assert setup.double.call(caller=A, dialed=X).sip_status == 200


def test_channel_data_with_a_newline_in_the_destination_gets_no_command(setup):
    sock = socket.create_connection(("127.0.0.1", setup.port), timeout=5)
    assert sock.recv(100) == b"connect\n\n"
    sock.sendall(b"Unique-ID: 0ba726a5-fd16-440f-ab0b-42764905fa9c\n"
                 b"Caller-Destination-Number: 8617000000001%0D%0Aexecute-app-name%3A%20bridge\n"
                 b"Content-Type: command/reply\nReply-Text: %2BOK%0A\n\n")

    assert sock.recv(100) == b""
    assert setup.core.routed == []


def test_more_sessions_than_greenswitchs_cap_run_at_once(setup):
    # All 150 are in set-up together: above the default admission bound, which sheds bursts.
    setup.settings.freeswitch.max_setup_sessions = 200
    results = setup.double.calls([dict(caller=A, dialed=X, scenario="answered")
                                  for _ in range(150)])

    assert [r.sip_status for r in results] == [200] * 150
    assert len([e for e in setup.core.events if e[1] == "ended"]) == 150


def test_pbx_addresses_match_exactly_or_by_network():
    assert allowed("127.0.0.1", ["127.0.0.1"])
    assert allowed("10.1.2.3", ["10.0.0.0/8"])
    assert not allowed("10.1.2.3", ["127.0.0.1", "not an address"])
    assert not allowed("junk", ["0.0.0.0/0"])


def test_the_double_answers_err_outside_its_allow_list():
    replies = {}

    def controller(sock, _address):
        sock.sendall(b"connect\n\n")
        gevent.sleep(0.05)
        sock.recv(65536)
        for command in (b"api uuid_kill x", b"sendmsg\ncall-command: execute\n"
                        b"execute-app-name: system\nexecute-app-arg: rm -rf /",
                        b"myevents", b"bgapi originate x"):
            sock.sendall(command + b"\n\n")
            replies[command.split(b"\n")[0]] = sock.recv(65536).decode()
        sock.sendall(b"exit\n\n")
        sock.recv(65536)

    fake = gevent.server.StreamServer(("127.0.0.1", 0), controller)
    fake.start()
    try:
        result = FreeSwitchDouble("127.0.0.1", fake.server_port, timeout=5).call()
    finally:
        fake.stop()

    assert "-ERR command not found" in replies[b"api uuid_kill x"]
    assert "-ERR command not found" in replies[b"sendmsg"]
    assert "+OK Events Enabled" in replies[b"myevents"]
    assert len(result.errors) == 3 and result.exit_received


def test_a_wrong_event_socket_password_is_retried_not_fatal(caplog):
    settings = Settings()
    settings.freeswitch.esl_password = "wrong"
    inbound = InboundDouble("right").start()
    settings.freeswitch.esl_port = inbound.port
    connection = InboundConnection(settings.freeswitch, None, None)
    connection.start()
    try:
        assert not wait_connected(connection, 0.3)
    finally:
        connection.stop()
        inbound.stop()
    assert any("password refused" in r.getMessage() for r in caplog.records)


def direct_inbound(setup) -> InboundConnection:
    """An inbound connection driven from the test greenlet (no reader greenlet)."""
    connection = InboundConnection(setup.settings.freeswitch,
                                   CoreClient(setup.core, 1.0), Tracker())
    connection.open()
    return connection


def test_reconciliation_closes_only_records_whose_channels_are_gone(setup):
    live = SimpleNamespace(id="live0001", call_uuid="0ba726a5-fd16-440f-ab0b-42764905fa9c",
                           answered_at=None)
    gone = SimpleNamespace(id="gone0001", call_uuid="1ba726a5-fd16-440f-ab0b-42764905fa9c",
                           answered_at=None)
    setup.inbound.channels[live.call_uuid] = {"uuid": live.call_uuid,
                                              "call_uuid": live.call_uuid}
    setup.core.open = [live, gone]

    closed = direct_inbound(setup).reconcile()

    assert closed == 1
    assert setup.core.ended("gone0001") == [{"reconciled": True}]
    assert setup.core.ended("live0001") == []


def test_an_empty_channel_list_is_read_in_its_recorded_form(setup):
    assert setup.inbound.listing() == '{"row_count": 0}\n'
    assert direct_inbound(setup).channel_uuids() == set()


def test_the_tracker_hands_each_end_to_exactly_one_reporter():
    tracker = Tracker()
    tracker.add("u1", "r1")

    assert tracker.claim_end("u1") is not None  # the session reports it
    assert tracker.claim_end("u1") is None  # the inbound copy does not
    assert tracker.session_gone("u1") is None and tracker.recently_done("u1")
    tracker.add("u2", "r2")
    assert tracker.session_gone("u2").record_id == "r2"  # socket lost: inbound's turn
    assert tracker.claim_end("u2").record_id == "r2" and len(tracker) == 0


def test_open_records_are_not_scanned_for_the_end_of_a_call_already_recorded(setup):
    calls = []
    setup.controller.core.open_records = lambda: calls.append(1) or []
    result = setup.double.call(caller=A, dialed=X)
    end = setup.inbound.published[-1]
    assert poll(lambda: len(setup.controller.tracker) == 0)  # the session has finished

    setup.controller.inbound.on_hangup_complete(Event(end))  # a late duplicate of the end
    gevent.sleep(0)  # a lookup, if one was spawned, would run now

    assert result.exit_received and calls == []


def poll(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.01)
    return True
