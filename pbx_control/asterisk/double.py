"""An ARI protocol double: HTTP + WebSocket on 127.0.0.1:0, behaving as the recordings show.

Built from the transcripts of a real Asterisk 22.10.1 recorded for this project (the ones the
tests check the double against are copied into tests/fixtures/asterisk/; case names are the
recordings'): the REST answers (204 for ring/answer/dial/DELETE, 200 with the resource for
create and listings, 404 ``{"message": ...}`` for what does not exist), the event sequences of
each flow, a created far leg entering Stasis at the dial still Down (case12 W2v), events
dropped (not queued) while the WebSocket is away with the calls kept up (case5a), and new
calls refused with 603 while no application is connected (case8, case2n).

Where the recordings are silent the double follows the ARI documentation and says so in the
method concerned: the SIP answer for ``reason_code=41``, playing media to a ringing channel,
adding a not yet answered caller to a bridge, bridge recording, ``TIMEOUT(absolute)``, and a
StasisEnd for a created leg that fails while in Stasis.

Test control: ``incoming_call``, ``party_hangup``, ``answer_far``, ``drop_websocket``,
``stall`` and the per-number ``far`` behaviour; ``requests`` logs every REST request and
``caller_results`` what each caller received.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .double_model import Bridge, Chan, RestError, sip_answer_for
from .double_rest import ROUTES

logger = logging.getLogger(__name__)

ASTERISK_ID = "02:fc:00:00:00:01"


@dataclass
class FarParty:
    """How the party behind a far leg reacts: ``answer``, ``busy`` or ``ring`` (until
    ``answer_far`` or the dial timeout, which gives case6's no-answer end)."""

    behaviour: str = "answer"
    answer_after_s: float = 0.02


@dataclass
class LoggedRequest:
    method: str
    path: str
    params: dict[str, str]
    body: Any


@dataclass
class AriDouble:
    """The double; ``async with AriDouble() as ari:`` starts and stops the server."""

    app: str = "pbx-control"
    username: str = "pbx-control"
    password: str = "double-secret"
    far: dict[str, FarParty] = field(default_factory=dict)
    default_far: FarParty = field(default_factory=FarParty)
    # False: WebSocket handshakes are refused (503), as while Asterisk restarts.
    accepting: bool = True
    requests: list[LoggedRequest] = field(default_factory=list)
    caller_results: dict[str, dict] = field(default_factory=dict)
    channels: dict[str, Chan] = field(default_factory=dict)
    bridges: dict[str, Bridge] = field(default_factory=dict)
    connects: int = 0

    def __post_init__(self):
        self._queue: asyncio.Queue | None = None
        self._socket: WebSocket | None = None
        self._stalls: list[tuple[str, re.Pattern]] = []
        self._release = asyncio.Event()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._server: uvicorn.Server | None = None
        self._serve: asyncio.Task | None = None
        self.port = 0

    # Server life

    async def __aenter__(self) -> AriDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        routes = [WebSocketRoute("/ari/events", self._events),
                  Route("/ari/{path:path}", self._rest, methods=["GET", "POST", "DELETE", "PUT"])]
        config = uvicorn.Config(Starlette(routes=routes), host="127.0.0.1", port=0,
                                lifespan="off", log_level="warning", ws="websockets-sansio")
        self._server = _QuietServer(config)
        self._serve = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._serve.done():
                self._serve.result()
            await asyncio.sleep(0.005)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._release.set()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            await self._serve

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connected(self) -> bool:
        return self._socket is not None

    # Test control

    async def incoming_call(
        self, caller: str, exten: str, entry: str | None = "carrier",
        endpoint: str = "carrier", name: str = "",
    ) -> str | None:
        """A SIP INVITE reaching ``Stasis(app,entry)``; None when Asterisk refused it."""
        if not self.connected:
            # case8 / case2n: Stasis fails at once for an unregistered app, the caller gets 603.
            self.caller_results[f"refused-{next(self._ids)}"] = {"status": 603, "q850": 16}
            return None
        n = next(self._ids)
        args = [entry] if entry is not None else []
        chan = Chan(id=f"{int(time.time())}.{n}", name=f"PJSIP/{endpoint}-{n:08x}", state="Ring",
                    caller={"name": name, "number": caller}, exten=exten,
                    app_data=",".join([self.app, *args]), in_stasis=True)
        self.channels[chan.id] = chan
        self.emit("StasisStart", chan, args=args)
        return chan.id

    async def party_hangup(self, channel_id: str) -> None:
        """The SIP party of ``channel_id`` hangs up (BYE, or CANCEL while not answered)."""
        chan = self.channels.get(channel_id)
        if chan is None:
            return
        if chan.is_far and chan.state != "Up":
            raise ValueError("a far party that has not answered answers 4xx: use far behaviour")
        if chan.state == "Up":
            # W2v (caller): a request without cause, then a soft one with cause 16 after
            # StasisEnd; case7 (far leg): only the first.
            self.emit("ChannelHangupRequest", chan)
            self._leave_bridge(chan)
            self._end(chan, cause=16, destroyed=True, soft_request=not chan.is_far)
        else:
            # case4: CANCEL gives cause 127 with tech_cause 487, then StasisEnd.
            self.caller_results[chan.id] = {"status": 487, "q850": 127}
            self.emit("ChannelHangupRequest", chan, cause=127, tech_cause=487)
            self._leave_bridge(chan)
            self._end(chan, cause=127, destroyed=False)

    async def answer_far(self, channel_id: str) -> None:
        chan = self.channels[channel_id]
        self.emit("ChannelStateChange", chan.with_state("Up"))
        self.emit("Dial", None, peer=chan.json(), dialstatus="ANSWER", forward="", dialstring="")

    async def drop_websocket(self) -> None:
        """Close the event socket from the Asterisk side, as a restart or network loss would."""
        socket, self._socket, self._queue = self._socket, None, None
        if socket is not None:
            await socket.close(code=1001)

    def stall(self, method: str, path_pattern: str) -> None:
        """Never answer matching requests (until stop): Asterisk hung or overloaded."""
        self._stalls.append((method, re.compile(path_pattern)))

    def far_channels(self) -> list[Chan]:
        return [c for c in self.channels.values() if c.is_far]

    def requests_to(self, method: str, pattern: str) -> list[LoggedRequest]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    async def wait_until(self, predicate: Callable[[], Any], timeout_s: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.01)
        raise TimeoutError("condition not met in time")

    # Events

    def emit(self, kind: str, chan: Chan | None, **fields) -> None:
        """Queue one event for the application; dropped while no WebSocket is open."""
        event = {"type": kind, "timestamp": _now()}
        event.update(fields)
        if chan is not None:
            event["channel"] = chan.json()
        event["asterisk_id"] = ASTERISK_ID
        event["application"] = self.app
        if self._queue is not None:
            self._queue.put_nowait(event)

    async def _events(self, ws: WebSocket) -> None:
        if not self._authorised(ws.headers, ws.query_params):
            # Asterisk answers the upgrade of a wrong user or password like any ARI request.
            await ws.send_denial_response(Response("Unauthorized", 401))
            return
        if ws.query_params.get("app") != self.app or not self.accepting:
            await ws.close(code=1008)
            return
        await ws.accept()
        queue: asyncio.Queue = asyncio.Queue()
        self._socket, self._queue = ws, queue
        self.connects += 1
        sender = asyncio.create_task(self._send_loop(ws, queue))
        try:
            while True:
                await ws.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            sender.cancel()
            if self._socket is ws:
                self._socket, self._queue = None, None

    async def _send_loop(self, ws: WebSocket, queue: asyncio.Queue) -> None:
        try:
            while True:
                event = await queue.get()
                await ws.send_text(json.dumps(event))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    # REST

    async def _rest(self, request: Request) -> Response:
        path = "/ari/" + request.path_params["path"]
        params = dict(request.query_params)
        raw = await request.body()
        body = json.loads(raw) if raw else None
        self.requests.append(LoggedRequest(request.method, path, params, body))
        if not self._authorised(request.headers, request.query_params):
            return JSONResponse({"message": "Authentication required"}, 401)
        if any(m == request.method and p.search(path) for m, p in self._stalls):
            await self._release.wait()
            return JSONResponse({"message": "Service Unavailable"}, 503)
        try:
            status, answer = self._route(request.method, path, params, body)
        except RestError as exc:
            return JSONResponse({"message": exc.message}, exc.status)
        if status == 204:
            return Response(status_code=204)
        return JSONResponse(answer, status)

    def _route(self, method: str, path: str, params: dict, body: Any) -> tuple[int, Any]:
        for route_method, pattern, handler in ROUTES:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                return handler(self, params, body, *match.groups())
        raise RestError(404, "Resource not found")

    def _authorised(self, headers, query) -> bool:
        expected = f"{self.username}:{self.password}"
        if query.get("api_key") == expected:
            return True
        auth = headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            return base64.b64decode(auth[6:]).decode() == expected
        except ValueError:
            return False

    # Channel life shared by the REST handlers and the test control

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _leave_bridge(self, chan: Chan) -> None:
        bridge = self.bridges.get(chan.bridge or "")
        if bridge is None:
            return
        bridge.channels.remove(chan.id)
        chan.bridge = None
        self.emit("ChannelLeftBridge", chan, bridge=bridge.json())

    def _end(self, chan: Chan, cause: int, destroyed: bool, tech_cause: int | None = None,
             soft_request: bool = False) -> None:
        """The channel leaves Stasis and, where the recordings show it, is destroyed."""
        self.channels.pop(chan.id, None)
        if chan.in_stasis:
            self.emit("StasisEnd", chan)
        if soft_request:
            self.emit("ChannelHangupRequest", chan, cause=cause, soft=True)
        if destroyed:
            extra = {"tech_cause": tech_cause} if tech_cause else {}
            self.emit("ChannelDestroyed", chan, cause=cause, cause_txt=_CAUSE_TXT.get(cause, ""),
                      **extra)

    def hangup_requested(self, chan: Chan, params: dict) -> None:
        """DELETE /channels/{id}: what the recordings show for a hang-up asked through ARI."""
        if not chan.is_far and chan.state != "Up":
            self.caller_results[chan.id] = sip_answer_for(params)
        elif not chan.is_far:
            self.caller_results[chan.id] = {"status": None, "bye": True, "q850": 16}
        self.emit("ChannelHangupRequest", chan, cause=32, soft=True)
        self._leave_bridge(chan)
        if chan.is_far and chan.state != "Up" and chan.dialled:
            self.emit("Dial", None, peer=chan.json(), dialstatus="NOANSWER", forward="",
                      dialstring="")
        # case2a/case3: a caller refused while ringing shows no ChannelDestroyed; a far leg
        # (case4, case10) and an answered caller (W2v) do.
        self._end(chan, cause=16, destroyed=chan.is_far or chan.state == "Up")

    async def absolute_timeout(self, chan: Chan, value: str) -> None:
        """Not recorded: ``TIMEOUT(absolute)`` per the Asterisk docs hangs the channel up
        that many seconds after it is set (a later set replaces it; 0 clears it)."""
        chan.timeout_generation += 1
        generation = chan.timeout_generation
        seconds = float(value) if value.replace(".", "", 1).isdigit() else 0.0
        if seconds <= 0:
            return
        await asyncio.sleep(seconds)
        if self.channels.get(chan.id) is chan and chan.timeout_generation == generation:
            self.emit("ChannelHangupRequest", chan)
            self._leave_bridge(chan)
            self._end(chan, cause=16, destroyed=True)

    async def run_far(self, chan: Chan, timeout_s: float) -> None:
        """The far party's answer to the dial, per its configured behaviour."""
        party = self.far.get(chan.number, self.default_far)
        self.emit("Dial", None, peer=chan.json(), dialstatus="", forward="",
                  dialstring=chan.endpoint.split("/", 1)[-1])
        if party.behaviour == "busy":
            # case3: 486 from the far side; the leg is in Stasis here, so StasisEnd too.
            self.emit("ChannelHangupRequest", chan, cause=17, tech_cause=486)
            self.emit("Dial", None, peer=chan.json(), dialstatus="BUSY", forward="", dialstring="")
            self._end(chan, cause=17, destroyed=True, tech_cause=486)
            return
        self.emit("ChannelStateChange", chan.with_state("Ringing"))
        self.emit("Dial", None, peer=chan.json(), dialstatus="RINGING", forward="", dialstring="")
        if party.behaviour == "answer":
            await asyncio.sleep(party.answer_after_s)
            if chan.id in self.channels:
                await self.answer_far(chan.id)
            return
        await asyncio.sleep(timeout_s if timeout_s > 0 else 3600)
        if chan.id in self.channels and chan.state != "Up":
            # case6: the dial timeout ends the leg with cause 19 / 480 and no final Dial event.
            self._end(chan, cause=19, destroyed=True, tech_cause=480)


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: a test double must leave Ctrl-C to the test."""

    def capture_signals(self):
        return contextlib.nullcontext()


_CAUSE_TXT = {16: "Normal Clearing", 17: "User busy", 19: "User alerting, no answer",
              127: "Interworking, unspecified"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
