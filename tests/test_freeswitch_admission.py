"""What keeps the FreeSWITCH controller fast under load: admission bounds, decisions that do
not queue behind call-event writes, and the commands before a bridge written in one go."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import gevent
import pytest
from gevent import socket
from gevent.threadpool import ThreadPool

from pbx_control.config import Settings
from pbx_control.freeswitch.channel import ChannelInfo, Entry
from pbx_control.freeswitch.core import CoreClient
from pbx_control.freeswitch.double import FreeSwitchDouble
from pbx_control.freeswitch.protocol import Connection
from pbx_control.freeswitch.service import build
from pbx_control.freeswitch.session import CallSession
from pbx_control.routing import Connect, Reason

A, B, X = "8613900000000", "8613800000000", "8617000000001"


@dataclass
class Routed:
    decision: object
    record_id: str | None


class HeldCore:
    """Connects A to B on X, but each decision waits until the test releases it."""

    def __init__(self):
        self.release = threading.Event()
        self.routed: list[str] = []
        self.events: list[tuple] = []

    def route_inbound(self, caller, dialed, uuid, trusted=True):
        self.routed.append(uuid)
        self.release.wait(10)
        return Routed(Connect(to="+" + B, show="+" + X, reason=Reason.A_TO_B), uuid[:8])

    def refuse_unavailable(self, caller, dialed, uuid, outbound=False):
        return None

    def call_event(self, record_id, kind, at=None, **fields):
        self.events.append((record_id, kind))

    def call_events(self, events):
        # The controller writes its events in batches; this fake takes them one by one.
        return [self.call_event(record_id, kind, at, **fields)
                for record_id, kind, at, fields in events]


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        gevent.sleep(0.01)


@pytest.fixture
def held():
    settings = Settings()
    settings.freeswitch.decision_deadline_s = 10.0
    core = HeldCore()

    def start(**bounds):
        for name, value in bounds.items():
            setattr(settings.freeswitch, name, value)
        controller = build(settings, None, host="127.0.0.1", port=0, inbound=False,
                           service=core).start()
        started.append(controller)
        return FreeSwitchDouble(*controller.server.address, timeout=10)

    started: list = []
    yield core, start
    core.release.set()
    for controller in started:
        controller.stop()


@pytest.mark.parametrize("bound", ["max_setup_sessions", "max_sessions"])
def test_a_session_past_an_admission_bound_is_refused_503_at_once_without_a_decision(
        held, bound):
    core, start = held
    double = start(**{bound: 2})
    waiting = [gevent.spawn(double.call, caller=A, dialed=X, hold_s=0.1) for _ in range(2)]
    wait_for(lambda: len(core.routed) == 2)

    refused = double.call(caller=A, dialed=X)

    assert refused.sip_status == 503 and refused.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
    assert len(core.routed) == 2
    core.release.set()
    gevent.joinall(waiting, timeout=10, raise_error=True)
    assert [job.value.sip_status for job in waiting] == [200, 200]


def test_a_session_is_admitted_again_once_the_calls_in_set_up_are_decided(held):
    core, start = held
    double = start(max_setup_sessions=1)
    core.release.set()

    results = [double.call(caller=A, dialed=X, hold_s=0.1) for _ in range(3)]

    assert [r.sip_status for r in results] == [200, 200, 200]


def test_a_decision_does_not_wait_behind_call_event_writes():
    release = threading.Event()
    service = HeldCore()
    service.release.set()
    service.call_event = lambda *args, **kwargs: release.wait(10)
    core = CoreClient(service, 5.0, ThreadPool(1), ThreadPool(1))
    info = ChannelInfo(uuid="0ba726a5-fd16-440f-ab0b-42764905fa9c", entry=Entry.CARRIER,
                       caller_raw=A, dialed_raw=X)
    writes = [gevent.spawn(core.event, "r1", "ringing", None) for _ in range(3)]
    gevent.sleep(0.05)

    try:
        routed = core.decide(info)
    finally:
        release.set()
        gevent.joinall(writes, timeout=10)

    assert isinstance(routed.decision, Connect)
    assert all(job.value for job in writes)


def test_the_commands_before_a_bridge_are_written_before_any_reply_is_read():
    left, right = socket.socketpair()
    session = CallSession(Connection(left), Settings().freeswitch, None, None)
    commands = [b"sendmsg\ncall-command: execute\nexecute-app-name: set\n"
                b"execute-app-arg: a=%d\n\n" % n for n in range(7)]
    sender = gevent.spawn(session._send_all, commands)

    received = b""
    right.settimeout(5)
    while received.count(b"\n\n") < 7:  # with one reply awaited per command, never 7
        received += right.recv(65536)
    right.sendall(b"Content-Type: command/reply\nReply-Text: +OK\n\n" * 7)
    sender.join(timeout=5)

    assert received == b"".join(commands)
    assert sender.successful() and sender.dead
    left.close()
    right.close()
