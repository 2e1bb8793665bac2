"""No full number on stderr or in the logs when the core raises while a call is decided.

gevent's hub prints an exception that leaves its thread pool or ends a greenlet with the repr
of the call (``functools.partial(<route_inbound>, '8613900000077', ...)``) and the message;
these tests make the core raise exceptions that quote the numbers and look everywhere.
"""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import gevent
import pytest

from pbx_control.config import Settings
from pbx_control.freeswitch.double import FreeSwitchDouble
from pbx_control.freeswitch.double_inbound import InboundDouble
from pbx_control.freeswitch.inbound import wait_connected
from pbx_control.freeswitch.service import build

A, X, TARGET = "8613900000077", "8617000000004", "8613600000055"


class LeakyCore:
    """Every method raises an exception whose message and args hold the numbers it got."""

    def route_inbound(self, caller, dialed, uuid, trusted=True):
        raise ValueError(f"cannot route {caller} to {dialed}", caller, dialed)

    def route_outbound(self, username, target, uuid):
        # what a bad pattern in a dial rule raises, quoting the number it was matched on
        raise re.error(f"bad pattern for {target}", pattern=target)

    def refuse_unavailable(self, caller, dialed, uuid, outbound=False):
        raise RuntimeError(f"cannot store the attempt of {caller} on {dialed}")

    def call_event(self, record_id, kind, at=None, **fields):
        raise RuntimeError(f"cannot store {kind} of {A}")

    def call_events(self, events):
        # The controller writes its events in batches; this fake takes them one by one.
        return [self.call_event(record_id, kind, at, **fields)
                for record_id, kind, at, fields in events]

    def open_records(self):
        return []


@pytest.fixture
def leaky():
    settings = Settings()
    settings.freeswitch.esl_password = "secret"
    inbound = InboundDouble("secret").start()
    settings.freeswitch.esl_port = inbound.port
    controller = build(settings, None, host="127.0.0.1", port=0, service=LeakyCore()).start()
    wait_connected(controller.inbound, 5)
    host, port = controller.server.address
    yield SimpleNamespace(double=FreeSwitchDouble(host, port, inbound=inbound))
    controller.stop()
    inbound.stop()


def assert_no_number(capfd, caplog) -> None:
    gevent.sleep(0.05)  # let the hub run anything it would still report
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text):
        for number in (A, X, TARGET):
            assert number not in text


def test_a_failing_inbound_decision_is_refused_503_and_prints_no_number(leaky, capfd, caplog):
    with caplog.at_level(logging.DEBUG):
        result = leaky.double.call(caller=A, dialed=X, scenario="answered")

    assert result.sip_status == 503
    assert_no_number(capfd, caplog)
    assert "ValueError in route_inbound" in caplog.text


def test_a_failing_outbound_decision_is_refused_503_and_prints_no_number(leaky, capfd, caplog):
    with caplog.at_level(logging.DEBUG):
        result = leaky.double.call(caller="1001", dialed=TARGET, entry="softphone",
                                   user="1001", scenario="answered")

    assert result.sip_status == 503
    assert_no_number(capfd, caplog)
    assert "error in route_outbound" in caplog.text
