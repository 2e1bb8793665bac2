"""A controller and a FreeSWITCH double wired together in one process: what the end-to-end
tests, ``pbx-control demo`` and a scenario table shared with the Asterisk side call.

``Harness(settings, store).run("answered", caller=A, dialed=X)`` places one recorded call
through the real controller (real CallService, real storage) and returns what the caller
got and the call record the controller left, once that record is complete.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import gevent
from sqlalchemy import select

from ..config import Settings
from ..records import record_dict
from ..storage import Store
from ..storage.tables import CallRecord
from .double import CallResult, FreeSwitchDouble
from .double_inbound import InboundDouble
from .inbound import wait_connected
from .service import Controller, build

DEFAULT_PASSWORD = "pbx-control-double"


@dataclass
class Played:
    """One call played through the controller: the double's view and the record left."""

    result: CallResult
    record: dict | None

    @property
    def commands(self) -> list[str]:
        return self.result.commands


class Harness:
    """Starts the inbound double, the controller (port 0) and a FreeSWITCH double."""

    def __init__(self, settings: Settings, store: Store, service=None, inbound: bool = True,
                 timeout: float = 10.0):
        self.settings = settings
        self.store = store
        self.service = service
        self.with_inbound = inbound
        self.timeout = timeout
        self.inbound: InboundDouble | None = None
        self.controller: Controller | None = None
        self.double: FreeSwitchDouble | None = None

    def start(self) -> Harness:
        fs = self.settings.freeswitch
        fs.esl_password = fs.esl_password or DEFAULT_PASSWORD
        self.inbound = InboundDouble(fs.esl_password).start()
        fs.esl_host, fs.esl_port = "127.0.0.1", self.inbound.port
        self.controller = build(self.settings, self.store, host="127.0.0.1", port=0,
                                inbound=self.with_inbound, service=self.service).start()
        if self.controller.inbound is not None:
            wait_connected(self.controller.inbound, self.timeout)
        host, port = self.controller.server.address
        self.double = FreeSwitchDouble(host, port, inbound=self.inbound, timeout=self.timeout)
        return self

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
        if self.inbound:
            self.inbound.stop()

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self, scenario: str, caller: str, dialed: str, *, wait_end: bool = True,
            **options) -> Played:
        """Play ``scenario`` and return the result with the call's record (None if none)."""
        result = self.double.call(caller=caller, dialed=dialed, scenario=scenario, **options)
        record = self.wait_record(result.uuid, ended=wait_end)
        return Played(result, record)

    def record(self, call_uuid: str) -> dict | None:
        with self.store.session() as session:
            rows = session.scalars(select(CallRecord).where(CallRecord.call_uuid == call_uuid)
                                   .order_by(CallRecord.started_at)).all()
            return record_dict(rows[-1]) if rows else None

    def records(self, call_uuid: str) -> list[dict]:
        with self.store.session() as session:
            rows = session.scalars(select(CallRecord).where(CallRecord.call_uuid == call_uuid)
                                   .order_by(CallRecord.started_at)).all()
            return [record_dict(r) for r in rows]

    def wait_record(self, call_uuid: str, ended: bool = True) -> dict | None:
        """Poll for the call's record (and its end) until the harness timeout."""
        self.wait(lambda: (lambda r: r is not None and (not ended or r["ended_at"] is not None))(
            self.record(call_uuid)))
        return self.record(call_uuid)

    def wait(self, condition, timeout: float | None = None) -> bool:
        """Poll ``condition`` cooperatively (the controller runs on this hub) until true."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not condition():
            if time.monotonic() > deadline:
                return False
            gevent.sleep(0.01)
        return True


# The scenario names shared with the Asterisk side (asterisk.scenarios.SCENARIOS), mapped to
# the FreeSWITCH double's recorded scenarios. 'refused' is any call the controller refuses.
SCENARIOS = {
    "answered_caller_hangs_up": "answered", "answered_callee_hangs_up": "callee_hangs_up",
    "refused": "answered", "busy": "busy", "no_answer": "no_answer",
    "cancel_while_ringing": "cancel", "disconnect_mid_call": "socket_lost",
}


def run_scenario(name: str, store: Store, settings: Settings, caller: str, x: str,
                 **call) -> dict | None:
    """Run a shared scenario through a fresh harness and return the finished call record."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")
    with Harness(copy.deepcopy(settings), store) as harness:
        return harness.run(SCENARIOS[name], caller.lstrip("+"), x.lstrip("+"), **call).record
