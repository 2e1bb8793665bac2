"""FreeSWITCH's side of one outbound event-socket session, played from the recordings.

Like FreeSWITCH running ``socket <controller> async full``, a call opens a TCP connection to
the controller and answers what it sends: the channel data for ``connect``, the recorded
replies for ``myevents``, ``linger`` and ``sendmsg``. The first ``bridge``, ``respond`` or
``hangup`` is the decision: its time is the set-up latency (from the moment the connection was
opened), and it is checked against what the call should get. Then every event of the
recorded case follows with its recorded timing, the answered part stretched to the hold, and
the session ends as FreeSWITCH ends it: on ``exit`` when the controller asked to linger, by
closing the socket after the last event when it did not.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

from ..causes import UNAVAILABLE
from ..numbers import mask
from .transcript import (
    AppEvents,
    Message,
    Recording,
    Values,
    fs_url_encode,
    load,
    load_app_events,
)
from .workload import CallSpec

logger = logging.getLogger(__name__)

DECIDING_APPS = {"bridge": "bridge", "respond": "refuse", "hangup": "refuse"}
SETTING_APPS = ("set", "export", "multiset")
# Replies FreeSWITCH gives to commands the recordings do not show, from mod_event_socket.c.
OTHER_REPLIES = {
    "nolinger": "+OK will not linger",
    "event": "+OK event listener enabled plain",
    "noevents": "+OK no longer listening for events",
    "nixevent": "+OK",
    "filter": "+OK filter added.",
    "divert_events": "+OK events diverted",
    "resume": "+OK",
    "log": "+OK log level set",
    "nolog": "+OK no longer logging",
}


@dataclass
class Cases:
    """The recordings a call may replay, by decision and linger."""

    answered: Recording
    answered_nolinger: Recording
    respond: Recording
    hangup: Recording
    apps: AppEvents

    @classmethod
    def load(cls, variables: dict[str, str] | None = None) -> Cases:
        """The four cases; ``variables`` as the dialplan sets them before ``socket``."""
        names = ("1_answered", "1c_answered_nolinger", "2a_respond403", "2b_hangup_rejected")
        return cls(*(load(name, variables=variables) for name in names),
                   load_app_events(variables))

    def for_decision(self, app: str, linger: bool) -> Recording:
        if app == "bridge":
            return self.answered if linger else self.answered_nolinger
        case = self.respond if app == "respond" else self.hangup
        return case if linger else case.without_linger_notice()


@dataclass
class PeerConfig:
    host: str
    port: int
    hold_s: float = 2.0
    decision_limit_s: float = 1.0  # later than this is a failed call
    give_up_s: float = 5.0  # how long to wait for a late decision before closing
    linger_wait_s: float = 5.0  # how long to wait for ``exit`` after the last event
    check_routing: bool = True  # False for the baseline: any bridge is right


@dataclass
class CallResult:
    spec: CallSpec
    started: float
    latency: float | None = None
    decision: str | None = None  # bridge | refuse
    failure: str | None = None
    ended_by: str | None = None  # exit | eof | close (ours, no linger) | timeout
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass
class _Session:
    spec: CallSpec
    cases: Cases
    config: PeerConfig
    values: dict
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    linger: bool = False
    eof: bool = False
    variables: dict = field(default_factory=dict)
    queued: list = field(default_factory=list)  # (app, arg) executed before the decision
    exited: asyncio.Event = field(default_factory=asyncio.Event)


async def read_command(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], str]:
    """One command from the controller: its first line, its headers, its body if any."""
    block = (await reader.readuntil(b"\n\n")).decode()
    lines = block.strip("\n").split("\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    body = ""
    if "content-length" in headers:
        body = (await reader.readexactly(int(headers["content-length"]))).decode()
    return lines[0].strip(), headers, body


def parse_bridge(arg: str) -> tuple[dict[str, str], str]:
    """Channel variables ({...}, [...], <...>) and the dial string of a bridge argument."""
    variables: dict[str, str] = {}
    for group in re.findall(r"[{\[<]([^}\]>]*)[}\]>]", arg):
        for item in _split_vars(group):
            key, _, value = item.partition("=")
            variables[key.strip()] = value.strip().strip("'")
    return variables, re.sub(r"[{\[<][^}\]>]*[}\]>]", "", arg).strip()


def _split_vars(group: str) -> list[str]:
    # FreeSWITCH separates variables with ',' unless the value is quoted; '^^:' changes the
    # separator to ':' (not used by pbx-control, accepted for the baseline's sake).
    if group.startswith("^^:"):
        return group[3:].split(":")
    return [p for p in re.split(r",(?=(?:[^']*'[^']*')*[^']*$)", group) if p]


async def place_call(spec: CallSpec, cases: Cases, config: PeerConfig, core_uuid: str,
                     serial: int) -> CallResult:
    """Play one call against the controller; never raises for the controller's faults."""
    loop = asyncio.get_running_loop()
    result = CallResult(spec=spec, started=loop.time())
    try:
        reader, writer = await asyncio.open_connection(config.host, config.port)
    except OSError as exc:
        result.failure = f"connect_error:{type(exc).__name__}"
        return result

    session = _Session(spec, cases, config, _fixed_values(spec, core_uuid, serial), reader,
                       writer)
    try:
        await _run(session, result, loop)
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        if result.decision is None:
            result.failure = f"closed_early:{type(exc).__name__}"
        result.ended_by = result.ended_by or "eof"
    finally:
        writer.close()
    return result


def _fixed_values(spec: CallSpec, core_uuid: str, serial: int) -> dict:
    return {
        "CALLER": spec.caller.lstrip("+"),
        "DIALED": spec.dialed.lstrip("+"),
        "SHOWN": spec.dialed.lstrip("+"),
        "FAR": (spec.expect_to or spec.dialed).lstrip("+"),
        "UUID": str(uuid.uuid4()),
        "FAR_UUID": str(uuid.uuid4()),
        "CORE_UUID": core_uuid,
        "SIP_CALL_ID": f"{serial}-bench%40127.0.0.1",
        "APP_ARG": "",
    }


def _values_for(session: _Session, recording: Recording) -> Values:
    offset = time.time_ns() // 1000 - recording.recorded_base_us
    return Values(offset, **session.values)


async def _run(session: _Session, result: CallResult, loop) -> None:
    deadline = result.started + session.config.give_up_s
    values = _values_for(session, session.cases.answered)
    try:
        async with asyncio.timeout_at(deadline):
            app, arg = await _until_decision(session, values)
    except TimeoutError:
        result.failure, result.ended_by = "no_decision", "timeout"
        return

    result.latency = loop.time() - result.started
    result.decision = DECIDING_APPS[app]
    result.failure = _check(session, app, arg, result)
    if result.latency > session.config.decision_limit_s:
        result.failure = result.failure or "late"
    await _replay(session, app, arg, result)


async def _until_decision(session: _Session, values: Values) -> tuple[str, str]:
    """Answer commands until the controller bridges or refuses the call."""
    while True:
        first, headers, body = await read_command(session.reader)
        decided = _deciding(first, headers, body)
        if decided is not None:
            return decided
        await _answer(session, first, headers, body, values)


def _deciding(first: str, headers: dict, body: str) -> tuple[str, str] | None:
    if not first.startswith("sendmsg"):
        return None
    command = headers.get("call-command")
    if command == "hangup":
        return "hangup", headers.get("hangup-cause", "")
    if command == "execute":
        app = headers.get("execute-app-name", "")
        if app in DECIDING_APPS:
            return app, headers.get("execute-app-arg", body)
    return None


async def _answer(session: _Session, first: str, headers: dict, body: str,
                  values: Values) -> None:
    word = first.split(None, 1)[0] if first else ""
    replies = session.cases.answered.replies
    if word == "connect":
        session.writer.write(session.cases.answered.connect_reply.render(values))
    elif word == "exit":
        for message in session.cases.answered.exit_reply:
            session.writer.write(message.render(values))
        session.exited.set()
    elif word in replies:
        session.linger = session.linger or word == "linger"
        if word == "sendmsg":
            _remember_variables(session, headers, body)
        session.writer.write(replies[word].render(values))
    elif word in ("api", "bgapi"):
        _write_api_reply(session, word)
    else:
        text = OTHER_REPLIES.get(word, "-ERR command not found")
        session.writer.write(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())
    await session.writer.drain()


def _write_api_reply(session: _Session, word: str) -> None:
    if word == "bgapi":
        text = f"+OK Job-UUID: {uuid.uuid4()}"
        session.writer.write(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())
    else:
        session.writer.write(b"Content-Type: api/response\nContent-Length: 4\n\n+OK\n")


def _remember_variables(session: _Session, headers: dict, body: str) -> None:
    if headers.get("call-command") != "execute":
        return
    app, arg = headers.get("execute-app-name", ""), headers.get("execute-app-arg", body)
    session.queued.append((app, arg))
    if app not in SETTING_APPS:
        return
    items = arg[3:].split(":") if arg.startswith("^^:") else [arg]
    for item in items:
        key, _, value = item.partition("=")
        session.variables[key.strip()] = value.strip()


def _check(session: _Session, app: str, arg: str, result: CallResult) -> str | None:
    """What is wrong with the decision, or None when it is the right one."""
    spec = session.spec
    if app != "bridge":
        result.detail = f"{app} {arg}".strip()
        if not session.config.check_routing or spec.expect_to is None:
            return None
        if app == "hangup" and arg.split()[:1] == [UNAVAILABLE.freeswitch_cause]:
            # 503, "try again": the controller did not decide (admission bounds, a decision
            # past its deadline, the database unavailable), as distinct from a wrong refusal.
            return "unavailable_503"
        return "refused_bound_party"
    if not session.config.check_routing:
        return None
    if spec.expect_to is None:
        return "bridged_stranger"

    variables, dial = parse_bridge(arg)
    merged = {**session.variables, **variables}
    target, x, caller = (n.lstrip("+") for n in (spec.expect_to, spec.dialed, spec.caller))
    if not re.search(rf"(?<!\d)\+?{target}(?!\d)", dial):
        return "wrong_party"
    if merged.get("origination_caller_id_number", "").lstrip("+") != x:
        return "x_not_shown"
    if caller in arg:
        logger.warning("call from %s: the bridge names the caller", mask(spec.caller))
        return "caller_leaked"
    return None


async def _replay(session: _Session, app: str, arg: str, result: CallResult) -> None:
    """The recorded events after the decision, while still answering the controller."""
    recording = session.cases.for_decision(app, session.linger)
    session.values["APP_ARG"] = fs_url_encode(arg)
    values = _values_for(session, recording)
    session.writer.write(recording.replies["sendmsg"].render(values))
    commands = asyncio.create_task(_serve_commands(session, values))
    try:
        ended = await _send_events(session, recording, values)
        if ended:
            result.ended_by = "eof" if session.eof else "exit"
        elif not session.linger:
            result.ended_by = "close"
        else:
            await _await_exit(session, commands, result)
    finally:
        commands.cancel()


async def _send_events(session: _Session, recording: Recording, values: Values) -> bool:
    """Write each event at its time; True if the controller said ``exit`` meanwhile.

    The applications queued before the decision run when the channel leaves park, so their
    EXECUTE / EXECUTE_COMPLETE pairs go out just before the first CHANNEL_EXECUTE of the
    case (as in recording 3b).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    apps_at = recording.first_execute()
    for index, (at, messages) in enumerate(recording.schedule(session.config.hold_s)):
        delay = start + at - loop.time()
        if delay > 0:
            try:
                await asyncio.wait_for(session.exited.wait(), delay)
            except TimeoutError:
                pass
        if session.exited.is_set():
            return True
        if index == apps_at:
            for app, arg in session.queued:
                session.writer.write(session.cases.apps.render(values, app, arg))
        session.writer.write(b"".join(_render_all(messages, values)))
        await session.writer.drain()
    return False


def _render_all(messages: list[Message], values: Values) -> list[bytes]:
    return [m.render(values) for m in messages]


async def _serve_commands(session: _Session, values: Values) -> None:
    try:
        while not session.exited.is_set():
            first, headers, body = await read_command(session.reader)
            await _answer(session, first, headers, body, values)
    except (asyncio.IncompleteReadError, ConnectionError):
        session.eof = True
        session.exited.set()  # nothing more to send either


async def _await_exit(session: _Session, commands: asyncio.Task, result: CallResult) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(commands), session.config.linger_wait_s)
    except TimeoutError:
        result.ended_by = "timeout"
        return
    result.ended_by = "eof" if session.eof else "exit"
