"""A FreeSWITCH protocol double: plays FreeSWITCH's side of the outbound event socket as
the recordings show it (real FreeSWITCH 1.10.12, real SIP), for tests, the demo and the
benchmark.

``FreeSwitchDouble(host, port).call(caller=..., dialed=..., scenario=...)`` connects to the
controller as the dialplan's ``socket`` application does, answers ``connect`` with the
recorded channel data (numbers, UUIDs and profile substituted), answers each command as the
recordings do (``-ERR command not found`` for anything outside the allow-list), and reacts
to the controller's commands with the recorded events of the chosen scenario:

- ``answered``: B answers, the caller hangs up (1_answered)
- ``callee_hangs_up``: B answers and hangs up first (1b; with ``hangup_after_bridge=true``
  FreeSWITCH hangs the caller up itself, without it the caller stays parked)
- ``busy``: B answers 486 (3b with ``continue_on_fail=true``, else 3_busy)
- ``no_answer``: B rings until the ring timeout (3b with NO_ANSWER, after the docs)
- ``cancel``: the caller cancels while B rings (4_cancel)
- ``socket_lost``: the socket breaks after the bridge; the end goes to the inbound double
- ``hangup_early``: the caller hangs up before the controller has decided
- ``hangup_before_linger``: the caller hangs up before ``linger`` took effect: FreeSWITCH
  sends the end and closes the socket at once (as without linger, recording 1c)

Refusals are driven by the controller: ``respond <status>`` (2a) and ``hangup <cause>``
(2b). Commands not in the recordings (the privacy ``set``s over the socket, ``sched_hangup``,
``record_session``, ``pre_answer``, ``playback``, ``hangup UNALLOCATED_NUMBER`` /
``NORMAL_TEMPORARY_FAILURE``) follow the FreeSWITCH documentation: an EXECUTE /
EXECUTE_COMPLETE pair, and mod_sofia's cause-to-SIP table for hangups.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import gevent
from gevent import socket

from . import recordings as rec
from .commands import CAUSES
from .double_channel import CAUSE_TO_SIP, SIP_TO_CAUSE, Caller, Channel, cause_code
from .protocol import deadline_in

logger = logging.getLogger(__name__)

SCENARIOS = ("answered", "callee_hangs_up", "busy", "no_answer", "cancel", "socket_lost",
             "hangup_early", "hangup_before_linger")
APPS = frozenset({
    "set", "export", "bridge", "respond", "hangup", "pre_answer", "playback",
    "record_session", "sched_hangup", "answer", "ring_ready", "multiset", "unset", "park",
})
REPLIES = {
    "myevents": "+OK Events Enabled", "linger": "+OK will linger",
    "nolinger": "+OK will not linger",
}


@dataclass
class CallResult:
    """What happened on the double's side of one call."""

    uuid: str
    scenario: str
    commands: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sip_status: int | None = None
    hangup_cause: str | None = None
    answered: bool = False
    early_media: bool = False
    exit_received: bool = False
    closed_without_bytes: bool = False
    closed_by_controller: bool = False
    timed_out: bool = False

    def executed(self, app: str | None = None) -> list[tuple[str, str]]:
        """(application, argument) of every ``sendmsg`` execute, in order."""
        out = []
        for text in self.commands:
            headers = dict(line.split(": ", 1) for line in text.split("\n")[1:] if ": " in line)
            if text.startswith("sendmsg") and headers.get("call-command") == "execute":
                name = headers.get("execute-app-name", "")
                if app is None or name == app:
                    out.append((name, headers.get("execute-app-arg", "")))
        return out

    @property
    def bridge(self) -> str | None:
        found = self.executed("bridge")
        return found[0][1] if found else None


class ControllerClosed(Exception):
    pass


class FreeSwitchDouble:
    """Plays FreeSWITCH towards a controller listening at (host, port)."""

    def __init__(self, host: str, port: int, inbound=None, timeout: float = 10.0):
        self.host = host
        self.port = port
        self.inbound = inbound
        self.timeout = timeout

    def call(self, caller: str = rec.RECORDED_CALLER, dialed: str = rec.RECORDED_DIALED,
             scenario: str = "answered", *, entry: str = "carrier",
             source_ip: str = "127.0.0.1", user: str = "1001", authorized: bool = True,
             display_name: str | None = None, pai: bool = False, hold_s: float = 2.0,
             publish_end: bool = True) -> CallResult:
        """Place one call through the controller and play it out; blocks this greenlet."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}")
        who = Caller(number=caller, entry=entry, source_ip=source_ip, user=user,
                     authorized=authorized, display_name=display_name, pai=pai)
        channel = Channel(who, dialed.lstrip("+"))
        call = _Call(self, channel, scenario, hold_s, publish_end)
        return call.run()

    def calls(self, specs: list[dict]) -> list[CallResult]:
        """Many calls at once, each in its own greenlet (for load and concurrency tests)."""
        jobs = [gevent.spawn(self.call, **spec) for spec in specs]
        gevent.joinall(jobs, timeout=self.timeout * 2, raise_error=True)
        return [job.value for job in jobs]


class _Call:
    def __init__(self, double: FreeSwitchDouble, channel: Channel, scenario: str,
                 hold_s: float, publish_end: bool):
        self.double = double
        self.ch = channel
        self.scenario = scenario
        self.hold_s = hold_s
        self.publish_end = publish_end
        self.result = CallResult(channel.uuid, scenario)
        self.sock = None
        self.buffer = b""
        self.myevents = False
        self.linger = False
        self.parked = False
        self.waiting = None  # 'busy' / 'no_answer' / 'parked_after_bridge': wants a hangup
        self.hung_up = False
        self.done = False
        self.linger_sent = False
        self.app_args: dict[str, str] = {}
        self.failure_overrides: dict = {}

    # --- the connection -------------------------------------------------------------------

    def run(self) -> CallResult:
        self.sock = socket.create_connection((self.double.host, self.double.port),
                                             timeout=self.double.timeout)
        # A reply and the events after it are separate writes, as FreeSWITCH makes them;
        # without this, Nagle holds the second until the first is acknowledged (~40 ms).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.double.inbound is not None:
            self.double.inbound.add_channel(self.ch)
        try:
            self._serve()
        except ControllerClosed:
            self.result.closed_by_controller = True
        finally:
            self.sock.close()
            if self.double.inbound is not None and self.scenario != "socket_lost":
                self.double.inbound.remove_channel(self.ch.uuid)
        return self.result

    def _serve(self) -> None:
        deadline = deadline_in(self.double.timeout)
        first = True
        while not self.done:
            command = self._read_command(deadline, first)
            first = False
            self.result.commands.append(command)
            self._handle(command)

    def _read_command(self, deadline: float, first: bool) -> str:
        while b"\n\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            self.sock.settimeout(max(0.01, min(remaining, self.double.timeout)))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                self.result.timed_out = True
                raise ControllerClosed("no command before the deadline") from None
            except OSError:
                data = b""
            if not data:
                self.result.closed_without_bytes = first and not self.buffer
                raise ControllerClosed("controller closed the socket")
            self.buffer += data
        raw, _, self.buffer = self.buffer.partition(b"\n\n")
        return raw.decode("utf-8", errors="replace")

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ControllerClosed(str(exc)) from exc

    def _reply(self, text: str) -> None:
        self._send(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())
        if text.startswith("-ERR"):
            self.result.errors.append(self.result.commands[-1])

    # --- commands -------------------------------------------------------------------------

    def _handle(self, command: str) -> None:
        lines = command.split("\n")
        verb = lines[0].strip()
        if "\r" in command or not verb:
            self._reply("-ERR command not found")
        elif verb == "connect" and len(self.result.commands) == 1:
            self._send(rec.encode_pairs(self.ch.channel_data()) + b"\n")
        elif verb in REPLIES:
            self.myevents = self.myevents or verb == "myevents"
            self.linger = verb == "linger" or (self.linger and verb != "nolinger")
            if verb == "linger" and self.scenario == "hangup_before_linger":
                self.linger = False  # too late: the channel is already gone
                self._hangup_tail("ORIGINATOR_CANCEL", "recv_cancel")  # closes: no linger
                return
            self._reply(REPLIES[verb])
            if verb == "linger" and self.scenario == "hangup_early":
                self._hangup_tail("ORIGINATOR_CANCEL", "recv_cancel")
        elif verb == "exit":
            self._exit()
        elif verb == "sendmsg":
            self._sendmsg(dict(line.split(": ", 1) for line in lines[1:] if ": " in line))
        else:
            self._reply("-ERR command not found")

    def _exit(self) -> None:
        self.result.exit_received = True
        self._reply("+OK bye")
        self._send(_DISCONNECT)
        self.done = True

    def _sendmsg(self, headers: dict[str, str]) -> None:
        kind = headers.get("call-command")
        if kind == "hangup":
            cause = headers.get("hangup-cause", "NORMAL_CLEARING")
            if cause not in CAUSES:
                self._reply("-ERR invalid hangup cause")
                return
            self._reply("+OK")
            self._controller_hangup(cause)  # no CHANNEL_PARK first (recording 2b)
            return
        app = headers.get("execute-app-name", "")
        if kind != "execute" or app not in APPS:
            self._reply("-ERR command not found")
            return
        self._reply("+OK")
        if self.hung_up:
            return  # FreeSWITCH drops apps queued on a channel that is gone
        self._park()
        self._execute(app, headers.get("execute-app-arg", ""))

    def _park(self) -> None:
        # The socket app parks the channel when the first command arrives (every recording).
        if not self.parked:
            self.parked = True
            self._emit("1_answered", rec.find("1_answered", "CHANNEL_PARK"))

    def _execute(self, app: str, arg: str) -> None:
        if app == "bridge":
            self._bridge(arg)
        elif app == "respond":
            self._respond(arg)
        else:
            if app in ("set", "export") and "=" in arg:
                name, _, value = arg.partition("=")
                self.ch.variables[name] = value
            self.result.early_media |= app == "pre_answer"
            self._app_pair(app, arg)

    def _app_pair(self, app: str, arg: str) -> None:
        case = "3b_busy_continue_on_fail"
        for name in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
            recorded = rec.find(case, name, application="set")
            self._emit(case, recorded, Application=app, Application__Data=arg,
                       variable_current_application=app,
                       variable_current_application_data=arg)

    # --- event output ---------------------------------------------------------------------

    def _emit(self, case: str, recorded: rec.Recorded, **overrides) -> None:
        if recorded.kind == "notice":
            if recorded.name == "linger" and self.linger and not self.linger_sent:
                self.linger_sent = True
                self._send(_linger_notice(self.ch))
            return
        pairs = self.ch.event(recorded, case, **overrides)
        if self.myevents:
            self._send(rec.encode_event(pairs))
        if recorded.name == "CHANNEL_HANGUP_COMPLETE":
            self._finished(pairs)

    def _finished(self, pairs) -> None:
        self.hung_up = True
        if self.double.inbound is not None:
            self.double.inbound.publish(pairs)
        if self.linger and not self.linger_sent:
            self.linger_sent = True
            self._send(_linger_notice(self.ch))
        if not self.linger:
            # Without linger FreeSWITCH closes right after the hangup (recording 1c).
            self._send(_DISCONNECT)
            self.done = True

    def _segment(self, case: str, start: str, end: str, start_app: str | None = None,
                 skip: tuple = ("CHANNEL_PARK",), **overrides) -> None:
        items = rec.events(case)
        begin = next(i for i, m in enumerate(items)
                     if m.name == start and (start_app is None or
                                             m.get("Application") == start_app))
        for item in items[begin:]:
            if item.name in skip or item.name == "disconnect":
                continue
            self._emit(case, item, **self._app_overrides(item, overrides))
            if item.name == end:
                return

    def _app_overrides(self, item: rec.Recorded, overrides: dict) -> dict:
        out = dict(overrides)
        arg = self.app_args.get(item.get("Application") or "")
        if arg is not None:
            out.update(Application__Data=arg, variable_current_application_data=arg)
        return out

    # --- scenarios ------------------------------------------------------------------------

    def _bridge(self, arg: str) -> None:
        self.app_args["bridge"] = arg
        handler = getattr(self, f"_scenario_{self.scenario}", self._scenario_answered)
        handler()

    def _answer_and_bridge(self, case: str) -> None:
        self._segment(case, "CHANNEL_EXECUTE", "CHANNEL_PROGRESS", start_app="bridge")
        self.ch.answer()
        self._segment(case, "CHANNEL_ANSWER", "CHANNEL_ANSWER")
        self.result.answered = True
        self.result.sip_status = 200
        self._segment(case, "CHANNEL_BRIDGE", "CHANNEL_BRIDGE")

    def _scenario_answered(self) -> None:
        self._answer_and_bridge("1_answered")
        self.ch.hang_up(self.hold_s)
        self.result.hangup_cause = "NORMAL_CLEARING"
        self._segment("1_answered", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE")

    def _scenario_callee_hangs_up(self) -> None:
        case = "1b_b_hangs_up"
        self._answer_and_bridge(case)
        self.ch.hang_up(self.hold_s)
        self._segment(case, "CHANNEL_UNBRIDGE", "CHANNEL_EXECUTE_COMPLETE")
        if self.ch.variables.get("hangup_after_bridge") == "true":
            self.result.hangup_cause = "NORMAL_CLEARING"
            self._segment(case, "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE")
        else:
            self.waiting = "parked_after_bridge"  # the caller is left parked (1b)

    def _scenario_busy(self) -> None:
        self._failed_bridge("USER_BUSY", {})

    def _scenario_no_answer(self) -> None:
        self._segment("4_cancel", "CHANNEL_EXECUTE", "CHANNEL_PROGRESS", start_app="bridge")
        self.ch.hang_up(self.ch_ring_s())
        self._failed_bridge("NO_ANSWER", {"variable_sip_invite_failure_status": None,
                                          "variable_DIALSTATUS": "NOANSWER"}, executed=True)

    def ch_ring_s(self) -> float:
        for part in self.app_args.get("bridge", "").strip("{").split("}")[0].split(","):
            if part.startswith("originate_timeout="):
                return float(part.split("=", 1)[1])
        return 60.0  # FreeSWITCH's default

    def _failed_bridge(self, cause: str, extra: dict, executed: bool = False) -> None:
        causes = {"variable_originate_disposition": cause,
                  "variable_originate_failed_cause": cause,
                  "variable_last_bridge_hangup_cause": cause, **extra}
        if self.ch.variables.get("continue_on_fail") != "true":
            self.result.hangup_cause, self.result.sip_status = cause, CAUSE_TO_SIP[cause]
            self._segment("3_busy", "CHANNEL_EXECUTE", "CHANNEL_HANGUP_COMPLETE",
                          start_app="bridge", **self._cause_overrides(cause), **causes)
            return
        case = "3b_busy_continue_on_fail"
        if not executed:
            self._emit(case, rec.find(case, "CHANNEL_EXECUTE", "bridge"),
                       **self._app_overrides(rec.find(case, "CHANNEL_EXECUTE", "bridge"), {}))
        recorded = rec.find(case, "CHANNEL_EXECUTE_COMPLETE", "bridge")
        self._emit(case, recorded, **self._app_overrides(recorded, causes))
        self.waiting, self.failure_overrides = cause, causes

    def _scenario_cancel(self) -> None:
        self._segment("4_cancel", "CHANNEL_EXECUTE", "CHANNEL_PROGRESS", start_app="bridge")
        self.ch.hang_up(self.hold_s)
        self.result.hangup_cause, self.result.sip_status = "ORIGINATOR_CANCEL", 487
        self._segment("4_cancel", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE")

    def _scenario_socket_lost(self) -> None:
        self._answer_and_bridge("1_answered")
        self.sock.close()
        self.done = True
        self.ch.hang_up(self.hold_s)
        self.result.hangup_cause = "NORMAL_CLEARING"
        if self.double.inbound is not None and self.publish_end:
            end = rec.find("1_answered", "CHANNEL_HANGUP_COMPLETE")
            self.double.inbound.publish(self.ch.event(end, "1_answered"))
        if self.double.inbound is not None:
            self.double.inbound.remove_channel(self.ch.uuid)

    def _scenario_hangup_early(self) -> None:
        pass  # the caller already hung up after `linger`; the bridge finds no channel

    _scenario_hangup_before_linger = _scenario_hangup_early

    # --- hangups --------------------------------------------------------------------------

    def _respond(self, arg: str) -> None:
        status = int(arg.split()[0]) if arg.split() and arg.split()[0].isdigit() else 500
        cause = SIP_TO_CAUSE.get(status, "NORMAL_TEMPORARY_FAILURE")
        self.result.sip_status, self.result.hangup_cause = status, cause
        self.ch.hang_up(0)
        self.app_args["respond"] = arg
        self._segment("2a_respond403", "CHANNEL_EXECUTE", "CHANNEL_HANGUP_COMPLETE",
                      start_app="respond", **self._cause_overrides(cause))

    def _controller_hangup(self, cause: str) -> None:
        if self.hung_up:
            return
        if not self.result.answered:
            self.result.sip_status = CAUSE_TO_SIP.get(cause, 480)
        self.result.hangup_cause = cause
        disposition = "send_bye" if self.result.answered else "send_refuse"
        self._hangup_tail(cause, disposition, **self.failure_overrides)

    def _hangup_tail(self, cause: str, disposition: str, **extra) -> None:
        if cause == "ORIGINATOR_CANCEL":
            self.result.hangup_cause, self.result.sip_status = cause, 487
        self.ch.hang_up(0 if not self.result.answered else self.hold_s)
        overrides = {**self._cause_overrides(cause), **extra,
                     "variable_sip_hangup_disposition": disposition}
        # After a failed bridge the recorded tail is 3b's; otherwise 2b's (hangup at once).
        case = "3b_busy_continue_on_fail" if extra else "2b_hangup_rejected"
        self._segment(case, "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", **overrides)

    @staticmethod
    def _cause_overrides(cause: str) -> dict:
        return {"Hangup__Cause": cause, "variable_hangup_cause": cause,
                "variable_hangup_cause_q850": cause_code(cause)}


_DISCONNECT = (b"Content-Type: text/disconnect-notice\nContent-Disposition: disconnect\n"
               b"Content-Length: 67\n\nDisconnected, goodbye.\n"
               b"See you at ClueCon! http://www.cluecon.com/\n")


def _linger_notice(channel: Channel) -> bytes:
    name = f"sofia/{channel.caller.entry}/{channel.caller.number}@127.0.0.1:5060"
    return (f"Content-Type: text/disconnect-notice\nControlled-Session-UUID: {channel.uuid}\n"
            f"Content-Disposition: linger\nChannel-Name: {name}\nLinger-Time: -1\n"
            f"Content-Length: 0\n\n").encode()
