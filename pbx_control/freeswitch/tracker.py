"""The calls this controller is following, shared by the outbound sessions and the inbound
connection that completes a record once its session is gone.

The recordings show that a bridged call outlives its outbound socket (5a-5d): the session
then never hears how the call ended. Each session registers its channel here once decided;
while its socket is up the session owns the end, afterwards the inbound connection's
CHANNEL_HANGUP_COMPLETE does. An end that the inbound side saw while the session was still
up is kept, so a session whose socket breaks before its own end event can still use it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from .protocol import Event


@dataclass
class Tracked:
    record_id: str
    answered: bool = False
    controller_hangup: bool = False
    session_alive: bool = True
    ended: bool = False
    inbound_end: Event | None = None


class Tracker:
    """Calls in progress by channel UUID, and the last ones finished (so that the inbound
    connection's copy of an end already recorded costs no database lookup)."""

    RECENT = 10_000

    def __init__(self):
        self._calls: dict[str, Tracked] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._orphans: OrderedDict[str, Event] = OrderedDict()
        self._lock = threading.Lock()

    def _forget(self, uuid: str) -> None:
        del self._calls[uuid]
        self._recent[uuid] = None
        if len(self._recent) > self.RECENT:
            self._recent.popitem(last=False)

    def mark_done(self, uuid: str) -> None:
        """A call whose end needs nothing more (refused without a record, ended)."""
        with self._lock:
            if uuid not in self._calls:
                self._calls[uuid] = Tracked("")
                self._forget(uuid)

    def recently_done(self, uuid: str) -> bool:
        with self._lock:
            return uuid in self._recent

    def add(self, uuid: str, record_id: str) -> Tracked:
        """Follow a decided call; an end the inbound side saw first is attached to it."""
        with self._lock:
            tracked = self._calls[uuid] = Tracked(record_id)
            tracked.inbound_end = self._orphans.pop(uuid, None)
            return tracked

    def orphan_end(self, uuid: str, event: Event) -> None:
        """Keep an end for a call not (yet) followed: its decision may still be running."""
        with self._lock:
            self._orphans[uuid] = event
            if len(self._orphans) > self.RECENT:
                self._orphans.popitem(last=False)

    def get(self, uuid: str) -> Tracked | None:
        with self._lock:
            return self._calls.get(uuid)

    def session_gone(self, uuid: str) -> Tracked | None:
        """The session closed; returns the entry if the end is still to be recorded."""
        with self._lock:
            tracked = self._calls.get(uuid)
            if tracked is None:
                return None
            tracked.session_alive = False
            if tracked.ended:
                self._forget(uuid)
                return None
            return tracked

    def claim_end(self, uuid: str) -> Tracked | None:
        """Whoever claims first records the end; None when it is (being) recorded."""
        with self._lock:
            tracked = self._calls.get(uuid)
            if tracked is None or tracked.ended:
                return None
            tracked.ended = True
            if not tracked.session_alive:
                self._forget(uuid)
            return tracked

    def __len__(self) -> int:
        return len(self._calls)
