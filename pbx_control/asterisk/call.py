"""One call on X under Stasis: decide, connect or refuse, follow it to its end, record it.

Each call runs as its own task reading its own event queue (the application routes events by
channel id), so calls never wait on each other. The far leg is made the way case12 W2v shows
is clean both ways: ``/channels/create`` with X as caller id AND connected line in the create
body, never ``caller=`` on the dial, and the caller bridged before the dial so the far side's
ringback and early announcements reach it. The caller is answered when the far leg answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from .. import causes, numbers
from ..causes import HangupBy, Outcome
from ..config import AsteriskSettings
from ..errors import StorageUnavailable
from ..failures import describe
from ..routing import Connect, Reason
from .client import AriClient, AriError, AriNotFound
from .entry import FAR_LEG, SOFTPHONE, Entry

logger = logging.getLogger(__name__)

RECONCILED = "PbxControlReconciled"  # a synthetic event: the channels alive after a reconnect
DEFAULT_RECORDINGS_DIR = "/var/spool/asterisk/recording"


@dataclass
class End:
    """How the call ended, in the terms every backend records."""

    outcome: Outcome
    hangup_by: HangupBy | None
    sip_status: int | None
    q850: int | None
    pbx_cause: str | None = None
    reconciled: bool = False


class Call:
    """The caller's channel and, once made, its far leg and bridge."""

    def __init__(self, channel: dict, entry: Entry, client: AriClient, calls,
                 settings: AsteriskSettings, registry):
        self.id: str = channel["id"]
        self.entry = entry
        self.queue: asyncio.Queue = asyncio.Queue()
        self._client = client
        self._calls = calls
        self._settings = settings
        self._registry = registry  # register(channel_id, call) / unregister(channel_id)
        self.record_id: str | None = None
        self.far_id: str | None = None
        self.bridge_id: str | None = None
        self.answered = False
        self.ended = False
        self._ringing = False
        self._far_created = False
        self._started = time.monotonic()
        self._far_created_at: float | None = None
        self._answered_at: float | None = None
        self._limit_s = 0
        self._far_cause: tuple[int | None, int | None] = (None, None)
        self._recording: str | None = None

    # Life

    async def run(self) -> None:
        try:
            decision = await self._decide()
            if decision is None:
                return
            if not decision.connected:
                await self._refuse(decision.reason)
                return
            if await self._connect(decision):
                await self._follow(decision)
        except asyncio.CancelledError:
            # The controller is stopping: leave the call up in Asterisk (its bridge included);
            # the next controller reconciles it.
            self.bridge_id = None
            raise
        except Exception as exc:  # noqa: BLE001 - the catch-all of a call task: fail closed
            # By type and place only: the message may quote the caller's number.
            logger.error("call %s: controller error (%s); refusing/ending with 503", self.id,
                         describe(exc))
            await self._hangup(self.id, causes.asterisk_hangup_cause(causes.UNAVAILABLE.q850))
            if self.far_id and self._far_created:
                await self._hangup(self.far_id, None)
            await self._finish(End(Outcome.FAILED, HangupBy.CONTROLLER, 503,
                                   causes.UNAVAILABLE.q850))
        finally:
            await self._cleanup()

    def adopt(self, far_id: str, bridge_id: str, record_id: str) -> None:
        """Take over an answered call found bridged at reconciliation (its limit, recording
        and answer time are unknown here: Asterisk's own TIMEOUT(absolute) still holds)."""
        self.far_id, self.bridge_id, self.record_id = far_id, bridge_id, record_id
        self.answered = True
        self._far_created = True
        self._far_created_at = self._started

    async def follow(self) -> None:
        """The life of an adopted call: only its end is left to see."""
        try:
            await self._follow(None)
        except asyncio.CancelledError:
            self.bridge_id = None
            raise
        finally:
            await self._cleanup()

    async def _decide(self):
        entry = self.entry
        if entry.kind == SOFTPHONE:
            work = partial(self._calls.route_outbound, entry.username, entry.dialed, self.id)
        else:
            work = partial(self._calls.route_inbound, entry.caller_raw, entry.dialed, self.id,
                           trusted=entry.trusted)
        try:
            routed = await asyncio.wait_for(asyncio.to_thread(work),
                                            self._settings.decision_deadline_s)
        except (TimeoutError, StorageUnavailable) as exc:
            # Known shortcoming: a late decision's thread runs on and may still write its
            # attempt record beside the 'unavailable' one; reconciliation later completes it
            # (reconciled, failed) since its channel is gone.
            logger.warning("call %s: no decision (%s): refused 503", self.id, type(exc).__name__)
            await self._refuse_unavailable()
            return None
        except Exception as exc:  # noqa: BLE001 - a bug in routing must not leave the caller
            # hanging. Its message may quote the numbers: the type and place are logged.
            logger.error("call %s: routing failed (%s): refused 503", self.id, describe(exc))
            await self._refuse_unavailable()
            return None

        self.record_id = routed.record_id
        logger.info("call %s from %s to %s: %s %s", self.id, numbers.mask(entry.caller_raw),
                    numbers.mask(entry.dialed), "connect" if routed.decision.connected
                    else "refuse", routed.decision.reason.value)
        return routed.decision

    async def _refuse_unavailable(self) -> None:
        entry = self.entry
        await self._hangup(self.id, causes.asterisk_hangup_cause(causes.UNAVAILABLE.q850))
        try:
            await asyncio.to_thread(self._calls.refuse_unavailable, entry.caller_raw,
                                    entry.dialed, self.id)
        except Exception as exc:  # noqa: BLE001 - the caller is refused all the same
            logger.warning("call %s: 503 refusal not recorded (%s)", self.id, describe(exc))

    async def _refuse(self, reason: Reason) -> None:
        """The record is already closed as refused by the core; here the caller hears it."""
        refusal = causes.refusal_for(reason)
        if self._settings.refuse_announcement:
            await self._announce(self._settings.refuse_announcement)
        await self._hangup(self.id, causes.asterisk_hangup_cause(refusal.q850))

    async def _announce(self, sound: str) -> None:
        """Early media before the refusal. Not recorded on a real Asterisk: per the ARI docs a
        playback on a channel not yet answered goes out as early media (183)."""
        playback_id = f"refuse-{uuid.uuid4().hex[:12]}"
        self._registry.register(playback_id, self)
        try:
            await self._client.play(self.id, f"sound:{sound}", playback_id)
            await asyncio.wait_for(self._wait_for("PlaybackFinished", playback_id), 30)
        except (AriError, TimeoutError) as exc:
            logger.info("call %s: announcement not played (%s)", self.id, exc)
        finally:
            self._registry.unregister(playback_id)

    async def _wait_for(self, kind: str, playback_id: str) -> None:
        while True:
            event = await self.queue.get()
            if event.get("type") == kind and (event.get("playback") or {}).get("id") == playback_id:
                return
            if event_channel_id(event) == self.id and event.get("type") in _GONE:
                return

    # Connect

    async def _connect(self, decision: Connect) -> bool:
        """Bridge the caller, create and dial the far leg; False when the call already ended."""
        try:
            await self._client.ring(self.id)
            bridge = await self._client.create_bridge(f"call-{self.id}")
            self.bridge_id = bridge["id"]
            # Not recorded on a real Asterisk: the caller joins the bridge before it is answered
            # so that the far leg's ringback and early media reach it.
            await self._client.add_channel(self.bridge_id, self.id)
            await self._create_far_leg(decision)
            await self._client.dial(self.far_id, self._settings.ring_timeout_s)
        except AriNotFound:
            logger.info("call %s: caller gone during set-up", self.id)
            await self._finish(End(Outcome.CANCELLED, HangupBy.CALLER, 487, None))
            return False
        except AriError as exc:
            logger.warning("call %s: set-up failed: %s", self.id, exc)
            await self._hangup(self.id, causes.asterisk_hangup_cause(causes.UNAVAILABLE.q850))
            await self._finish(End(Outcome.FAILED, HangupBy.CONTROLLER, 503,
                                   causes.UNAVAILABLE.q850))
            return False
        return True

    async def _create_far_leg(self, decision: Connect) -> None:
        self.far_id = f"{FAR_LEG}-{uuid.uuid4().hex[:12]}"
        self._registry.register(self.far_id, self)
        shown = numbers.digits(decision.show) if decision.show.startswith("+") else decision.show
        variables = {
            "CALLERID(num)": shown, "CALLERID(name)": shown,
            "CONNECTEDLINE(num)": shown, "CONNECTEDLINE(name)": shown,
            # Asterisk ends the leg itself, even while the controller is away; reset to the
            # exact limit at answer (this first value also covers the ringing time).
            "TIMEOUT(absolute)": str(self._max_call_s(decision) + self._settings.ring_timeout_s),
        }
        await self._client.create_channel(self._far_endpoint(decision), self.far_id,
                                          f"{FAR_LEG},{self.id}", self.id, variables)
        self._far_created = True
        self._far_created_at = time.monotonic()

    def _far_endpoint(self, decision: Connect) -> str:
        if decision.to_kind == "softphone":
            return f"PJSIP/{decision.to}"
        trunks = self._settings.trunks
        trunk = trunks.get(decision.carrier) or trunks.get("default") or "carrier"
        target = numbers.digits(decision.to) if decision.to.startswith("+") else decision.to
        return f"PJSIP/{target}@{trunk}"

    def _max_call_s(self, decision: Connect) -> int:
        return int(decision.max_call_s or self._settings.max_call_s)

    # Follow

    async def _follow(self, decision: Connect | None) -> None:
        while not self.ended:
            event = await self.queue.get()
            try:
                end = await self._on_event(event, decision)
            except AriError as exc:
                # A leg vanished under a request: its hang-up events follow and end the call.
                logger.info("call %s: %s on %s: %s", self.id, type(exc).__name__,
                            event.get("type"), exc)
                continue
            if end is not None:
                await self._end_with(end)

    async def _on_event(self, event: dict, decision: Connect | None) -> End | None:
        kind, channel = event.get("type"), event_channel_id(event)
        if kind == RECONCILED:
            return await self._on_reconciled(set(event["alive"]), event["listed_at"])
        if channel == self.far_id:
            return await self._on_far_event(kind, event, decision)
        if channel == self.id and kind in _GONE:
            return self._caller_gone(event)
        return None

    async def _on_far_event(self, kind: str, event: dict, decision: Connect | None
                            ) -> End | None:
        state = (event.get("channel") or event.get("peer") or {}).get("state")
        if kind == "StasisStart":
            await self._client.add_channel(self.bridge_id, self.far_id)
        elif kind in ("Dial", "ChannelStateChange") and state == "Ringing":
            await self._on_ringing()
        elif kind in ("Dial", "ChannelStateChange") and state == "Up":
            await self._on_answer(decision)
        elif kind in ("ChannelHangupRequest", "ChannelDestroyed") and event.get("cause"):
            self._far_cause = (event.get("cause"), event.get("tech_cause"))
        # Before the answer only ChannelDestroyed carries the cause (case3, case6); after it
        # the first sign of the hang-up is enough (case7).
        if kind == "ChannelDestroyed" or (self.answered and kind in _GONE):
            return self._far_gone()
        return None

    async def _on_ringing(self) -> None:
        if self._ringing or self.answered:
            return
        self._ringing = True
        await self._event("ringing")

    async def _on_answer(self, decision: Connect) -> None:
        if self.answered:
            return
        await self._client.answer(self.id)
        # Events are handled one at a time per call: no second answer can slip in before this.
        self.answered = True
        self._answered_at = time.monotonic()
        self._limit_s = self._max_call_s(decision)
        await self._event("answered")
        limit = str(self._max_call_s(decision))
        for channel_id in (self.id, self.far_id):
            await self._client.set_variable(channel_id, "TIMEOUT(absolute)", limit)
        if decision.record:
            await self._start_recording()

    async def _start_recording(self) -> None:
        """Not recorded on a real Asterisk: bridge recording as the ARI docs describe it."""
        name = f"{self.record_id or self.id}"
        try:
            await self._client.record_bridge(self.bridge_id, name)
        except AriError as exc:
            logger.warning("call %s: recording not started: %s", self.id, exc)
            return
        base = self._settings.recordings_dir or DEFAULT_RECORDINGS_DIR
        self._recording = f"{base.rstrip('/')}/{name}.wav"

    def _caller_gone(self, event: dict) -> End:
        cause = event.get("cause")
        raw = _raw_cause(cause, event.get("tech_cause"))
        if self.answered:
            return End(Outcome.ANSWERED, self._answered_end_by(HangupBy.CALLER), 200, 16, raw)
        return End(Outcome.CANCELLED, HangupBy.CALLER, 487, None, raw)

    def _far_gone(self) -> End:
        cause, tech = self._far_cause
        raw = _raw_cause(cause, tech)
        if self.answered:
            return End(Outcome.ANSWERED, self._answered_end_by(HangupBy.CALLEE), 200, 16, raw)
        outcome, status = causes.classify_unanswered(cause, cancelled_by_caller=False)
        # As the FreeSWITCH controller records it: busy is the callee's doing; a ring timeout
        # or a failed route is the PBX's.
        by = HangupBy.CALLEE if outcome == Outcome.BUSY else HangupBy.PBX
        return End(outcome, by, status, cause, raw)

    def _answered_end_by(self, side: HangupBy) -> HangupBy:
        """Asterisk's TIMEOUT(absolute) hang-up looks like any other in ARI (not recorded);
        an end at the limit is taken as the PBX's, as FreeSWITCH's ALLOTTED_TIMEOUT is."""
        limit = self._limit_s
        if limit and self._answered_at and time.monotonic() - self._answered_at >= limit - 1:
            return HangupBy.PBX
        return side

    async def _on_reconciled(self, alive: set[str], listed_at: float) -> End | None:
        """Events of the gap are lost (case5a): judge from which legs still exist. A leg
        made after the listing was taken is not in it and says nothing."""
        if self._started > listed_at:
            return None
        caller_alive = self.id in alive
        far_known = self._far_created_at is not None and self._far_created_at < listed_at
        far_alive = not far_known or self.far_id in alive
        if caller_alive and far_alive:
            return None
        if caller_alive:
            end = self._far_gone()
        elif far_alive:
            end = self._caller_gone({})
        else:
            end = End(Outcome.ANSWERED if self.answered else Outcome.FAILED, None,
                      200 if self.answered else None, None)
        end.reconciled = True
        return end

    # End

    async def _end_with(self, end: End) -> None:
        """Hang up whichever leg is still there, then record the end."""
        if end.hangup_by != HangupBy.CALLER:
            code = None if self.answered else (end.q850 or causes.UNAVAILABLE.q850)
            await self._hangup(self.id, causes.asterisk_hangup_cause(code))
        if self._far_created and end.hangup_by not in (HangupBy.CALLEE, HangupBy.PBX):
            await self._hangup(self.far_id, None)
        await self._finish(end)

    async def _finish(self, end: End) -> None:
        if self.ended:
            return
        self.ended = True
        fields = {"outcome": end.outcome.value, "sip_status": end.sip_status,
                  "q850_cause": end.q850, "pbx_cause": end.pbx_cause,
                  "hangup_by": end.hangup_by.value if end.hangup_by else None}
        if self._recording:
            fields["recording_path"] = self._recording
        if end.reconciled:
            fields["reconciled"] = True
        logger.info("call %s ended: %s by %s (%s)", self.id, end.outcome.value,
                    fields["hangup_by"], end.sip_status)
        await self._event("ended", **fields)

    async def _cleanup(self) -> None:
        if self.bridge_id:
            try:
                await self._client.delete_bridge(self.bridge_id)
            except AriError:
                pass  # gone already, or Asterisk away: reconcile deletes empty bridges
        self._registry.unregister(self.id)
        if self.far_id:
            self._registry.unregister(self.far_id)

    async def _hangup(self, channel_id: str | None, reason_code: int | None) -> None:
        if not channel_id:
            return
        try:
            await self._client.hangup(channel_id, reason_code)
        except AriNotFound:
            pass  # already gone: what we wanted
        except AriError as exc:
            logger.warning("call %s: hang-up of %s failed: %s", self.id, channel_id, exc)

    async def _event(self, kind: str, **fields) -> None:
        if self.record_id is None:
            return
        work = partial(self._calls.call_event, self.record_id, kind, at=datetime.now(UTC),
                       **fields)
        try:
            await asyncio.to_thread(work)
        except StorageUnavailable:
            logger.warning("call %s: %s not recorded (storage unavailable)", self.id, kind)
        except Exception as exc:  # noqa: BLE001 - one lost event must not end the call task
            logger.error("call %s: %s not recorded (%s)", self.id, kind, describe(exc))


_GONE = ("ChannelHangupRequest", "StasisEnd", "ChannelDestroyed")


def event_channel_id(event: dict) -> str | None:
    """The channel (or playback) an event concerns: how events are routed to calls."""
    for key in ("channel", "peer"):
        value = event.get(key)
        if isinstance(value, dict) and "id" in value:
            return value["id"]
    playback = event.get("playback")
    if isinstance(playback, dict):
        return playback.get("id")
    return None


def _raw_cause(cause, tech_cause) -> str | None:
    if cause is None:
        return None
    return f"{cause}/{tech_cause}" if tech_cause else str(cause)
