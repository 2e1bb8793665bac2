"""The inbound event-socket connection: call ends the outbound sockets missed, and
reconciliation of open records with the PBX's channel list.

Recordings 5a-5d: a bridged call outlives its outbound socket and the controller never hears
how it ended. This connection subscribes to CHANNEL_HANGUP_COMPLETE, filtered to the channels
the committed dialplan sends to the controller (``variable_pbx_control_entry``), and completes
the record of any call whose session is gone. On each (re)connection it lists the channels
(``show channels as json``; an empty list is exactly ``{"row_count": 0}``, recording 7a) and
closes, as reconciled, the open records of this node whose channel no longer exists.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import gevent
from gevent import socket

from ..config import FreeSwitchSettings
from ..failures import describe
from . import commands as cmd
from .core import CoreClient, guarded
from .outcome import ending, event_time, was_answered
from .protocol import Connection, Event, Gone, Message, ProtocolError, Timeout, deadline_in
from .tracker import Tracker

logger = logging.getLogger(__name__)

CONNECT_S = 5.0
REPLY_S = 10.0
IDLE_S = 60.0  # a read wakes up at least this often to notice a dead peer
ENTRIES = ("carrier", "softphone")


class AuthFailed(Exception):
    """FreeSWITCH refused the event-socket password."""


class InboundConnection:
    """One inbound ESL connection with a single reader greenlet; reconnects with back-off."""

    def __init__(self, settings: FreeSwitchSettings, core: CoreClient, tracker: Tracker):
        self.settings = settings
        self.core = core
        self.tracker = tracker
        self.conn: Connection | None = None
        self.connected = False
        self.reconciled = 0
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run_forever)

    def stop(self) -> None:
        self._stopping = True
        if self.conn:
            self.conn.close()
        if self._greenlet:
            self._greenlet.kill(block=True, timeout=5)

    def _run_forever(self) -> None:
        backoff = 1.0
        while not self._stopping:
            try:
                self.open()
                backoff = 1.0
                self.reconcile()
                self.read_forever()
            except (OSError, Gone, Timeout, ProtocolError, AuthFailed, cmd.UnsafeValue) as exc:
                if self._stopping:
                    return
                logger.warning("inbound event socket: %s (retrying in %.0f s)", exc, backoff)
            except Exception as exc:  # noqa: BLE001 - e.g. storage down while reconciling
                # Ending this greenlet would stop every later call end and reconciliation,
                # and the hub would print the exception's message.
                logger.error("inbound event socket: %s (retrying in %.0f s)", describe(exc),
                             backoff)
            finally:
                self.connected = False
                if self.conn:
                    self.conn.close()
            if not self._stopping:
                gevent.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def open(self) -> None:
        """Connect, authenticate and subscribe."""
        address = (self.settings.esl_host, self.settings.esl_port)
        sock = socket.create_connection(address, timeout=CONNECT_S)
        sock.settimeout(None)
        self.conn = Connection(sock, f"{address[0]}:{address[1]}")
        greeting = self.conn.read(deadline_in(CONNECT_S))
        if greeting.content_type != "auth/request":
            raise ProtocolError("no auth/request greeting")
        if not self.command(cmd.auth(self.settings.esl_password)).reply_text.startswith("+OK"):
            raise AuthFailed("event-socket password refused")
        self.command(cmd.events("CHANNEL_HANGUP_COMPLETE"))
        for entry in ENTRIES:
            # Filters add up: an event passes when it matches any of them.
            self.command(cmd.event_filter("variable_pbx_control_entry", entry))
        self.connected = True
        logger.info("inbound event socket connected to %s", self.conn.peer)

    # --- the wire -------------------------------------------------------------------------

    def command(self, data: bytes) -> Message:
        self.conn.send(data)
        deadline = deadline_in(REPLY_S)
        while True:
            message = self.conn.read(deadline)
            if message.content_type in ("command/reply", "api/response"):
                return message
            self._dispatch(message)

    def api(self, name: str, *args: str) -> str:
        return self.command(cmd.api(name, *args)).body.decode("utf-8", errors="replace")

    def read_forever(self) -> None:
        while not self._stopping:
            try:
                self._dispatch(self.conn.read(deadline_in(IDLE_S)))
            except Timeout:
                continue

    def _dispatch(self, message: Message) -> None:
        if message.content_type == "text/disconnect-notice":
            raise Gone("FreeSWITCH closed the inbound connection")
        if message.is_event:
            event = message.event()
            if event.name == "CHANNEL_HANGUP_COMPLETE":
                self.on_hangup_complete(event)

    # --- call ends ------------------------------------------------------------------------

    def on_hangup_complete(self, event: Event) -> None:
        uuid = event.get("Unique-ID") or ""
        tracked = self.tracker.get(uuid)
        if tracked is not None and tracked.session_alive:
            tracked.inbound_end = event  # the session reports it; kept in case it cannot
            return
        if tracked is not None:
            if self.tracker.claim_end(uuid) is not None:
                gevent.spawn(guarded, f"call {uuid}: recording its end", self.report_end,
                             tracked.record_id, event, tracked.answered,
                             tracked.controller_hangup)
            return
        if cmd.is_uuid(uuid) and not self.tracker.recently_done(uuid):
            self.tracker.orphan_end(uuid, event)
            gevent.spawn(guarded, f"call {uuid}: recording its end", self._end_untracked,
                         uuid, event)

    def _end_untracked(self, uuid: str, event: Event) -> None:
        # A call from before a restart of the controller: its record is still open.
        for record in self.core.open_records():
            if record.call_uuid == uuid:
                self.report_end(record.id, event, record.answered_at is not None, False)

    def report_end(self, record_id: str, event: Event, answered: bool,
                   controller_hangup: bool) -> None:
        if not answered and was_answered(event):
            self.core.event(record_id, "answered", event_time(event, "variable_answer_uepoch"))
            answered = True
        end = ending(event, answered=answered, controller_hangup=controller_hangup)
        self.core.event(record_id, "ended", end.at, **end.fields())
        logger.info("record %s: ended %s by %s (%s), from the inbound connection", record_id,
                    end.outcome.value, end.hangup_by.value, end.pbx_cause)

    # --- reconciliation -------------------------------------------------------------------

    def channel_uuids(self) -> set[str]:
        body = self.api("show", "channels", "as", "json")
        try:
            listing = json.loads(body)
            rows = listing.get("rows", []) if listing.get("row_count", 0) else []
        except (ValueError, AttributeError) as exc:
            raise ProtocolError("show channels: not the JSON listing") from exc
        uuids = set()
        for row in rows:
            uuids.update(v for v in (row.get("uuid"), row.get("call_uuid")) if v)
        return uuids

    def reconcile(self) -> int:
        """Close this node's open records whose channel FreeSWITCH no longer has."""
        live = self.channel_uuids()
        closed = 0
        now = datetime.now(UTC)
        for record in self.core.open_records():
            uuid = record.call_uuid
            tracked = self.tracker.get(uuid) if uuid else None
            if not uuid or uuid in live or (tracked is not None and tracked.session_alive):
                continue
            if cmd.is_uuid(uuid) and self.api("uuid_exists", uuid).strip() == "true":
                continue
            self.tracker.claim_end(uuid)
            if self.core.event(record.id, "ended", now, reconciled=True):
                closed += 1
        self.reconciled += closed
        if closed:
            logger.info("reconciled %d open records whose channels are gone", closed)
        return closed


def wait_connected(inbound: InboundConnection, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if inbound.connected:
            return True
        gevent.sleep(0.01)
    return inbound.connected
