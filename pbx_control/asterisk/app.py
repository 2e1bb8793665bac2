"""The Stasis application: turns the ARI event stream into calls, one task per call.

Events are routed by channel id (or playback id) to the call that owns it; a StasisStart of a
channel nobody owns is a new call. Routing takes no lock and does no I/O, so a slow call (a
decision waiting on the database, a REST request waiting on Asterisk) never holds up others.
"""

from __future__ import annotations

import asyncio
import logging

from ..config import AsteriskSettings
from ..failures import describe
from .call import RECONCILED, Call, event_channel_id
from .client import AriClient, AriError
from .entry import far_leg_owner, read_entry

logger = logging.getLogger(__name__)


class StasisApp:
    """Owns the live calls of this controller process."""

    def __init__(self, client: AriClient, calls, settings: AsteriskSettings):
        self._client = client
        self._calls = calls
        self._settings = settings
        self._owners: dict[str, Call] = {}
        self._tasks: set[asyncio.Task] = set()

    def register(self, channel_id: str, call: Call) -> None:
        self._owners[channel_id] = call

    def unregister(self, channel_id: str) -> None:
        self._owners.pop(channel_id, None)

    def followed(self) -> set[str]:
        """Channel ids a live call follows (callers and their far legs)."""
        return set(self._owners)

    @property
    def active_calls(self) -> int:
        return len(self._tasks)

    def handle(self, event: dict) -> None:
        """Route one event; never blocks."""
        owner = self._owners.get(event_channel_id(event) or "")
        if owner is not None:
            owner.queue.put_nowait(event)
        elif event.get("type") == "StasisStart":
            self._stasis_start(event)

    def _stasis_start(self, event: dict) -> None:
        channel = event.get("channel") or {}
        if not channel.get("id"):
            logger.warning("StasisStart without a channel id: ignored")
            return
        if far_leg_owner(event) is not None:
            # One of our far legs whose call is gone (e.g. before a restart): nobody will
            # bridge it, so it must not ring on.
            logger.info("far leg %s has no call: hanging up", channel["id"])
            self._spawn(self._hangup_quietly(channel["id"]))
            return

        call = Call(channel, read_entry(event, self._settings), self._client, self._calls,
                    self._settings, self)
        self.register(call.id, call)
        self._spawn(call.run())

    def adopt(self, caller: dict, far_id: str, bridge_id: str, record_id: str) -> None:
        """Follow an answered, bridged call that a previous controller left up."""
        entry = read_entry({"channel": caller}, self._settings)
        call = Call(caller, entry, self._client, self._calls, self._settings, self)
        call.adopt(far_id, bridge_id, record_id)
        self.register(call.id, call)
        self.register(far_id, call)
        self._spawn(call.follow())
        logger.info("call %s adopted after a restart", call.id)

    def reconciled(self, alive: set[str], listed_at: float) -> None:
        """Tell every live call which channels existed at ``listed_at`` (time.monotonic)."""
        event = {"type": RECONCILED, "alive": sorted(alive), "listed_at": listed_at}
        for call in {id(c): c for c in self._owners.values()}.values():
            call.queue.put_nowait(event)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait for the running calls to end (tests, graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task) -> None:
        # Retrieved here, asyncio would otherwise print it ("Task exception was never
        # retrieved") with its message, which may quote a number.
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("call task failed: %s", describe(task.exception()))

    async def _hangup_quietly(self, channel_id: str) -> None:
        try:
            await self._client.hangup(channel_id)
        except AriError as exc:
            logger.info("hang-up of %s: %s", channel_id, exc)
