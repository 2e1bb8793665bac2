"""One call on FreeSWITCH's outbound event socket: read it, decide, connect or refuse, follow
it to its end and leave the call record complete.

Why not greenswitch's OutboundSession: with ``linger`` FreeSWITCH often sends its
disconnect notice before the bridge's CHANNEL_EXECUTE_COMPLETE; OutboundSession then fails
every pending wait with OutboundSessionHasGoneAway and refuses further commands, so an
ordinary answered call surfaces as an error (measured: 8 of 400 calls at 20 calls/s), and
none of its waits has a timeout. This session is one greenlet that sends a command, reads
until its reply (handling the events that arrive in between, as recording 1b shows they do),
treats the linger notice as information, and stops only at CHANNEL_HANGUP_COMPLETE or a
deadline. The commands it sends are built by ``commands`` from validated values only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..causes import UNAVAILABLE, HangupBy, Outcome, refusal_for
from ..config import FreeSwitchSettings
from ..failures import describe
from ..numbers import mask
from ..routing import Connect, Refuse
from . import commands as cmd
from .channel import ChannelInfo, read_channel
from .core import CoreClient, Unavailable
from .outcome import bridge_failure, ending, event_time, pbx_cause
from .protocol import Connection, Event, Gone, Message, ProtocolError, Timeout, deadline_in
from .tracker import Tracked, Tracker

logger = logging.getLogger(__name__)

COMMAND_S = 5.0  # a reply to one command
REFUSED_CALL_S = 120.0  # a refusal, announcement included, until the channel is gone
CALL_MARGIN_S = 120.0  # on top of ring time and the maximum duration of a connected call


class CallSession:
    """One outbound-socket connection, one call."""

    def __init__(self, conn: Connection, settings: FreeSwitchSettings, core: CoreClient,
                 tracker: Tracker, on_decided: Callable[[], None] | None = None):
        self.conn = conn
        self.on_decided = on_decided  # the server's admission count of sessions in set-up
        self.settings = settings
        self.core = core
        self.tracker = tracker
        self.info: ChannelInfo | None = None
        self.record_id: str | None = None
        self.tracked: Tracked | None = None
        self.bridging = False
        self.ringing = False
        self.answered = False
        self.hung_up = False
        self.refused = None
        self.failure: str | None = None
        self.recording_path: str | None = None
        self.end: Event | None = None

    @property
    def uuid(self) -> str:
        return self.info.uuid if self.info else "-"

    def run(self) -> None:
        try:
            self._run()
        except Gone as exc:
            logger.info("call %s: socket closed (%s)", self.uuid, exc)
        except Timeout as exc:
            logger.warning("call %s: FreeSWITCH silent past the deadline (%s); closing",
                           self.uuid, exc)
        except ProtocolError as exc:
            logger.warning("call %s: protocol error from %s: %s", self.uuid, self.conn.peer,
                           exc)
        except Exception as exc:  # noqa: BLE001 - its message may quote a number
            logger.error("call %s: session failed: %s", self.uuid, describe(exc))
        finally:
            self._finish()

    def _run(self) -> None:
        reply = self._command(cmd.CONNECT)
        self.info = read_channel(reply.headers, self.settings)
        logger.debug("call %s: %s from %s to %s", self.uuid, self.info.entry.value,
                     mask(self.info.caller_raw or self.info.username), mask(self.info.dialed_raw))
        try:
            self._command(cmd.MYEVENTS)
            self._command(cmd.LINGER)
        except Gone:
            # The caller hung up before `linger` took: FreeSWITCH closed at once. The call
            # is still decided and recorded; the inbound connection's end completes it.
            self._record_lost_call()
            if self.end is not None:
                self._record_end(self.end)
            raise

        try:
            routed = self.core.decide(self.info)
        except Unavailable:
            self._decided()
            self._refuse_unavailable()
        else:
            self._decided()
            self._act(routed)
        self._follow()
        self._exit()

    def _decided(self) -> None:
        if self.on_decided is not None:
            self.on_decided()
            self.on_decided = None

    def _record_lost_call(self) -> None:
        try:
            routed = self.core.decide(self.info)
        except Unavailable:
            self.record_id = self.core.refuse_unavailable(self.info)
            return
        self.record_id = routed.record_id
        if routed.record_id is not None and routed.decision.connected:
            self.tracked = self.tracker.add(self.uuid, routed.record_id)

    # --- acting on the decision -----------------------------------------------------------

    def _act(self, routed) -> None:
        self.record_id = routed.record_id
        if routed.record_id is not None:
            self.tracked = self.tracker.add(self.uuid, routed.record_id)
        decision = routed.decision
        if isinstance(decision, Connect):
            try:
                commands = self._connect_commands(decision)
            except cmd.UnsafeValue as exc:
                logger.error("call %s: cannot build the bridge (%s): refusing 503", self.uuid,
                             exc)
                self._refuse(UNAVAILABLE)
                return
            self.bridging = True
            logger.info("call %s: connect (%s) via %s", self.uuid, decision.reason.value,
                        decision.to_kind)
            self._send_all(commands)
        elif isinstance(decision, Refuse):
            logger.info("call %s: refuse (%s)", self.uuid, decision.reason.value)
            self._refuse(refusal_for(decision.reason))

    def _connect_commands(self, decision: Connect) -> list[bytes]:
        """The measured privacy set (9_privacy_matrix C1), then record, limit and bridge."""
        shown = cmd.digits(decision.show)
        commands = [
            cmd.set_var("effective_callee_id_number", shown),
            cmd.set_var("effective_callee_id_name", shown),
            cmd.set_var("ignore_display_updates", "true"),
            cmd.set_var("hangup_after_bridge", "true"),
            # A failed bridge would hang the caller up by itself (recording 3_busy);
            # with this the controller sees why and answers the caller with it (3b).
            cmd.set_var("continue_on_fail", "true"),
        ]
        if decision.record:
            command, self.recording_path = cmd.record_session(
                self.settings.recordings_dir, self.record_id)
            commands.append(command)
        # FreeSWITCH enforces the limit itself, so it holds while the controller is gone.
        # It counts from now: the ringing (up to ring_timeout_s) is inside the limit.
        commands.append(cmd.sched_hangup(decision.max_call_s or self.settings.max_call_s))
        far = {
            "origination_caller_id_number": shown,
            "origination_caller_id_name": shown,
            "originate_timeout": str(int(self.settings.ring_timeout_s)),
        }
        commands.append(cmd.bridge(far, self._dial_string(decision)))
        return commands

    def _dial_string(self, decision: Connect) -> str:
        if decision.to_kind == "softphone":
            return cmd.dial_string(self.settings.softphone_dial, user=cmd.name(decision.to))
        gateway = self.settings.gateways.get(decision.carrier)
        if gateway is None:
            raise cmd.UnsafeValue(f"no gateway configured for carrier {decision.carrier!r}")
        number = decision.to[1:] if decision.to.startswith("+") else decision.to
        if not number.isdigit() or (not decision.to.startswith("+") and len(number) > 6):
            raise cmd.UnsafeValue("destination is not a number")
        return cmd.dial_string(self.settings.external_dial, gateway=gateway, number=number)

    def _refuse(self, refusal) -> None:
        self.refused = refusal
        commands = []
        if self.settings.refuse_announcement:
            # Early media only: answering would bill the caller for a refusal.
            commands += [cmd.execute("pre_answer"),
                         cmd.playback(self.settings.refuse_announcement)]
        commands.append(cmd.refuse(refusal))
        self._send_all(commands)

    def _refuse_unavailable(self) -> None:
        self.record_id = self.core.refuse_unavailable(self.info)
        logger.info("call %s: refused 503 (no decision)", self.uuid)
        self._refuse(UNAVAILABLE)

    def _send_all(self, commands: list[bytes]) -> None:
        """Write the commands in one go, then read their replies in order.

        In ``async`` mode FreeSWITCH queues each sendmsg and answers ``+OK`` at once, before
        the application runs (recording 3b: both replies come before the first
        CHANNEL_EXECUTE), so waiting for each reply in turn only added a round trip per
        command (seven before a bridge) to the caller's post-dial delay.
        """
        if self.hung_up:
            return  # the caller is gone (e.g. hung up while we decided)
        self.conn.send(b"".join(commands))
        deadline = deadline_in(COMMAND_S)
        for _ in commands:
            reply = self._reply(deadline)
            if reply.reply_text.startswith("-ERR"):
                # After the caller hung up FreeSWITCH refuses further apps: not an error.
                logger.debug("call %s: command refused: %s", self.uuid, reply.reply_text)

    # --- the wire -------------------------------------------------------------------------

    def _command(self, data: bytes) -> Message:
        self.conn.send(data)
        return self._reply(deadline_in(COMMAND_S))

    def _reply(self, deadline: float) -> Message:
        while True:
            message = self.conn.read(deadline)
            if message.content_type == "command/reply":
                return message
            self._dispatch(message)

    def _dispatch(self, message: Message) -> None:
        if message.is_event:
            self._on_event(message.event())
        elif message.content_type == "text/disconnect-notice":
            # 'linger' is information (the caller hung up; events still follow), and may
            # come before the bridge's EXECUTE_COMPLETE. 'disconnect' means closing now.
            if message.headers.get("Content-Disposition") != "linger":
                raise Gone("disconnect notice")
        else:
            logger.debug("call %s: ignored %s", self.uuid, message.content_type or "message")

    def _on_event(self, event: Event) -> None:
        if event.get("Unique-ID") not in (None, self.uuid):
            return
        name = event.name
        if name in ("CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA") and self.bridging:
            self._ringing(event)
        elif name in ("CHANNEL_ANSWER", "CHANNEL_BRIDGE") and self.bridging:
            self._answer(event)
        elif name == "CHANNEL_EXECUTE_COMPLETE" and event.get("Application") == "bridge":
            if not self.answered and event.get("Answer-State") != "hangup":
                self.failure = bridge_failure(event)
        elif name == "CHANNEL_HANGUP":
            self.hung_up = True
        elif name == "CHANNEL_HANGUP_COMPLETE":
            self.hung_up = True
            self.end = event

    def _ringing(self, event: Event) -> None:
        if not self.ringing and not self.answered:
            self.ringing = True
            self._report("ringing", event_time(event))

    def _answer(self, event: Event) -> None:
        if not self.answered:
            self.answered = True
            if self.tracked:
                self.tracked.answered = True
            self._report("answered", event_time(event, "Caller-Channel-Answered-Time"))

    def _report(self, kind: str, at, **fields) -> None:
        if self.record_id:
            self.core.event(self.record_id, kind, at, **fields)

    # --- following the call to its end ----------------------------------------------------

    def _follow(self) -> None:
        deadline = deadline_in(self._call_limit())
        while self.end is None:
            self._dispatch(self.conn.read(deadline))
            if self.failure and not self.hung_up:
                self._hangup_failed_bridge()
        self._record_end(self.end)

    def _call_limit(self) -> float:
        if not self.bridging:
            return REFUSED_CALL_S
        return self.settings.ring_timeout_s + self.settings.max_call_s + CALL_MARGIN_S

    def _hangup_failed_bridge(self) -> None:
        cause, self.failure = self.failure, None
        logger.info("call %s: far leg failed (%s)", self.uuid, cause)
        if self.tracked:
            self.tracked.controller_hangup = True
        self._command(cmd.hangup(cause))

    def _record_end(self, event: Event) -> None:
        if self.refused is not None:
            self._record_refused(event)
            return
        if self.tracker.claim_end(self.uuid) is None:
            return
        end = ending(event, answered=self.answered)
        fields = end.fields()
        if self.recording_path and end.outcome == Outcome.ANSWERED:
            fields["recording_path"] = self.recording_path
        self._report("ended", end.at, **fields)
        logger.info("call %s: ended %s by %s (%s)", self.uuid, end.outcome.value,
                    end.hangup_by.value, end.pbx_cause)

    def _record_refused(self, event: Event) -> None:
        self.tracker.claim_end(self.uuid)
        cause = event.get("Hangup-Cause") or self.refused.freeswitch_cause
        self._report("ended", event_time(event, "variable_end_uepoch"),
                     outcome=Outcome.REFUSED.value, hangup_by=HangupBy.CONTROLLER.value,
                     sip_status=self.refused.sip_status, q850_cause=self.refused.q850,
                     pbx_cause=pbx_cause(cause))

    def _exit(self) -> None:
        try:
            self._command(cmd.EXIT)
        except (Gone, Timeout, ProtocolError):
            pass

    def _finish(self) -> None:
        self.conn.close()
        if self.info is None:
            return
        tracked = self.tracker.session_gone(self.uuid)
        if tracked is None:
            self.tracker.mark_done(self.uuid)
            return
        if tracked.inbound_end is not None:
            self._record_end(tracked.inbound_end)
        else:
            logger.info("call %s: socket closed before the end; the inbound connection "
                        "completes the record", self.uuid)
