"""Named call scenarios run through the real controller against the ARI double.

For tests and the shared FreeSWITCH/Asterisk scenario table: ``run_scenario(name, store,
settings, caller=..., x=...)`` (blocking; ``run_scenario_async`` on a running loop) places
one call on the double with the real ``CallService`` over ``store`` and returns the finished
call record as ``records.record_dict`` gives it.
Bindings, numbers and softphones are the caller's to set up in ``store`` beforehand.
"""

from __future__ import annotations

import asyncio
import copy
import time

from .. import records
from ..storage.tables import CallRecord
from .double import AriDouble, FarParty
from .service import AsteriskController, Backoff

SCENARIOS = (
    "answered_caller_hangs_up", "answered_callee_hangs_up", "refused", "busy", "no_answer",
    "cancel_while_ringing", "disconnect_mid_call",
)


class Harness:
    """The double and a controller connected to it, on the running loop."""

    def __init__(self, store, settings, rest_timeout_s: float = 2.0, calls=None,
                 double: AriDouble | None = None, decision_deadline_s: float | None = 5.0):
        from ..calls import CallService

        self.settings = copy.deepcopy(settings)
        if decision_deadline_s is not None:
            # A test machine busy with other suites can take longer than production's 1 s
            # over a cold database connection; the deadline itself has its own test.
            self.settings.asterisk.decision_deadline_s = max(
                self.settings.asterisk.decision_deadline_s, decision_deadline_s)
        self.double = double or AriDouble(app=self.settings.asterisk.app)
        self.store = store
        self.calls = calls or CallService(store, self.settings, pbx="asterisk",
                                          node=self.settings.asterisk.node_name)
        self._rest_timeout_s = rest_timeout_s
        self.controller: AsteriskController | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Harness:
        if not self.double.port:
            await self.double.start()
        await self.start_controller()
        return self

    async def start_controller(self) -> None:
        """(Re)start the controller: a new process as far as Asterisk can tell."""
        ast = self.settings.asterisk
        ast.url, ast.username, ast.password = (self.double.url, self.double.username,
                                               self.double.password)
        self.controller = AsteriskController(self.settings, self.calls,
                                             backoff=Backoff(first_s=0.05, max_s=0.2),
                                             rest_timeout_s=self._rest_timeout_s)
        connects = self.double.connects
        self._task = asyncio.create_task(self.controller.run())
        await self.double.wait_until(lambda: self.double.connects > connects)

    async def stop_controller(self) -> None:
        """Stop the controller as a crash would leave things: calls up, records open."""
        self.controller.stop()
        await asyncio.wait_for(self._task, 10)

    async def __aexit__(self, *exc) -> None:
        await self.stop_controller()
        await self.double.stop()

    async def record(self, call_uuid: str, timeout_s: float = 5.0) -> dict:
        """The call's record once it has ended (polled; the controller writes it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = await asyncio.to_thread(self._ended_record, call_uuid)
            if found is not None:
                return found
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no ended record for call {call_uuid}")

    async def wait_recorded(self, call_uuid: str, field: str, timeout_s: float = 5.0) -> dict:
        """Poll until the call's record has ``field`` set (e.g. ``answered_at``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = await asyncio.to_thread(self._record, call_uuid)
            if found is not None and found[field] is not None:
                return found
            await asyncio.sleep(0.02)
        raise TimeoutError(f"call {call_uuid}: {field} not recorded")

    def _ended_record(self, call_uuid: str) -> dict | None:
        found = self._record(call_uuid)
        return found if found is not None and found["ended_at"] is not None else None

    def _record(self, call_uuid: str) -> dict | None:
        from sqlalchemy import select

        with self.store.session() as session:
            record = session.scalars(select(CallRecord).where(
                CallRecord.call_uuid == call_uuid)).first()
            return records.record_dict(record) if record is not None else None

    async def answered_call(self, caller: str, x: str, **call) -> tuple[str, str]:
        """A call the far side answered, both legs bridged: (caller id, far leg id)."""
        ari = self.double
        caller_id = await ari.incoming_call(caller, x, **call)
        far = await ari.wait_until(lambda: next(
            (c for c in ari.far_channels() if c.state == "Up" and c.bridge), None))
        await ari.wait_until(lambda: ari.channels[caller_id].state == "Up")
        return caller_id, far.id

    async def ringing_call(self, caller: str, x: str, **call) -> tuple[str, str]:
        ari = self.double
        caller_id = await ari.incoming_call(caller, x, **call)
        far = await ari.wait_until(lambda: next(
            (c for c in ari.far_channels() if c.state == "Ringing" and c.bridge), None))
        return caller_id, far.id


def run_scenario(name: str, store, settings, caller: str, x: str, **call) -> dict:
    """Run scenario ``name`` (one of ``SCENARIOS``) on a loop of its own; the call record.

    The same signature as ``pbx_control.freeswitch.harness.run_scenario``, for the shared
    scenario table. ``call`` goes to ``AriDouble.incoming_call`` (entry, endpoint, name).
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")
    return asyncio.run(run_scenario_async(name, store, settings, caller, x, **call))


async def run_scenario_async(name: str, store, settings, caller: str, x: str, **call) -> dict:
    """``run_scenario`` on the running loop."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")
    settings = copy.deepcopy(settings)
    if name == "no_answer":
        settings.asterisk.ring_timeout_s = 1
    async with Harness(store, settings) as h:
        return await _play(name, h, caller.lstrip("+"), x.lstrip("+"), call)


async def _play(name: str, h: Harness, caller: str, x: str, call: dict) -> dict:
    ari = h.double
    if name in ("busy", "no_answer"):
        ari.default_far = FarParty("busy" if name == "busy" else "ring")
    if name == "cancel_while_ringing":
        ari.default_far = FarParty("ring")
        caller_id, _ = await h.ringing_call(caller, x, **call)
        await ari.party_hangup(caller_id)
    elif name in ("answered_caller_hangs_up", "answered_callee_hangs_up"):
        caller_id, far_id = await h.answered_call(caller, x, **call)
        await ari.party_hangup(caller_id if name == "answered_caller_hangs_up" else far_id)
    elif name == "disconnect_mid_call":
        caller_id, _ = await h.answered_call(caller, x, **call)
        await h.wait_recorded(caller_id, "answered_at")
        await disconnect_gap(h, lambda: ari.party_hangup(caller_id))
    else:
        caller_id = await ari.incoming_call(caller, x, **call)
    return await h.record(caller_id)


async def disconnect_gap(h: Harness, during) -> None:
    """Drop the event socket, keep Asterisk refusing it while ``during()`` runs, reopen."""
    ari = h.double
    connects = ari.connects
    ari.accepting = False
    await ari.drop_websocket()
    await during()
    ari.accepting = True
    await ari.wait_until(lambda: ari.connected and ari.connects > connects)
