"""``pbx-control serve asterisk``: keep the Stasis application connected, and report it.

The event WebSocket registers the application; while it is away Asterisk refuses new calls
(603, case8) and drops events, so the controller reconnects at once and then with a bounded,
jittered backoff, and reconciles after every open (and every few minutes while connected, for
calls a restart left unfollowed). The connection state is the controller's health.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from ..config import AsteriskSettings, Settings
from ..failures import asyncio_exception_handler, describe
from .app import StasisApp
from .client import AriClient, AriError
from .reconcile import reconcile

logger = logging.getLogger(__name__)

REST_TIMEOUT_S = 5.0
RECONCILE_EVERY_S = 300.0


@dataclass
class Backoff:
    """Exponential from ``first_s`` to ``max_s``, each wait jittered down to half."""

    first_s: float = 0.5
    max_s: float = 30.0
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.max_s, self.first_s * (2 ** self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


class AsteriskController:
    """The ARI connection loop around one ``StasisApp``."""

    def __init__(self, settings: Settings, calls, client: AriClient | None = None,
                 backoff: Backoff | None = None, rest_timeout_s: float = REST_TIMEOUT_S):
        ast = settings.asterisk
        self.client = client or AriClient(ast.url, ast.username, ast.password, ast.app,
                                          timeout_s=rest_timeout_s)
        self.app = StasisApp(self.client, calls, ast)
        self._calls = calls
        self._backoff = backoff or Backoff()
        self._stop = asyncio.Event()
        self.state = "starting"
        self.since = datetime.now(UTC)
        self.connects = 0
        self.last_error: str | None = None

    def health(self) -> dict:
        """What a health check reports: ``connected`` is the one that matters."""
        return {"connected": self.state == "connected", "state": self.state,
                "since": self.since.isoformat(), "connects": self.connects,
                "active_calls": self.app.active_calls, "last_error": self.last_error}

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Connect, follow events, reconnect; until ``stop()``."""
        try:
            while not self._stop.is_set():
                await self._session()
                if self._stop.is_set():
                    break
                delay = self._backoff.next()
                logger.warning("ARI: reconnecting in %.1fs", delay)
                await self._sleep(delay)
        finally:
            await self.app.close()
            await self.client.close()

    async def _session(self) -> None:
        self._set_state("connecting")
        try:
            async with self.client.events() as events:
                connected_at = datetime.now(UTC)
                self._set_state("connected")
                self.connects += 1
                self._backoff.reset()
                keeper = asyncio.create_task(self._reconcile_loop(connected_at))
                try:
                    await self._pump(events)
                finally:
                    keeper.cancel()
        except AriError as exc:
            # Only opening the event socket raises here: its message says what to check.
            self.last_error = exc.message
            logger.warning("%s", exc.message)
        self._set_state("disconnected")

    async def _pump(self, events) -> None:
        stopper = asyncio.create_task(self._stop.wait())
        try:
            while True:
                reader = asyncio.ensure_future(anext(events, None))
                done, _ = await asyncio.wait({reader, stopper},
                                             return_when=asyncio.FIRST_COMPLETED)
                if reader not in done:
                    reader.cancel()
                    return
                event = reader.result()
                if event is None:
                    return
                self._handle(event)
        finally:
            stopper.cancel()

    def _handle(self, event: dict) -> None:
        try:
            self.app.handle(event)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the stream
            logger.error("event %s not handled: %s", str(event.get("type"))[:40],
                         describe(exc))

    async def _reconcile_loop(self, connected_at: datetime) -> None:
        while True:
            try:
                await reconcile(self.client, self.app, self._calls, connected_at)
            except AriError as exc:
                logger.warning("reconcile failed: %s", exc)
            except Exception as exc:  # noqa: BLE001 - retried at the next pass
                logger.error("reconcile failed: %s", describe(exc))
            await asyncio.sleep(RECONCILE_EVERY_S)

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except TimeoutError:
            pass

    def _set_state(self, state: str) -> None:
        if state != self.state:
            logger.info("ARI connection: %s", state)
            self.state, self.since = state, datetime.now(UTC)


def check(settings: AsteriskSettings) -> None:
    """SystemExit with the setting to fix when the controller cannot work with these."""
    if not settings.password:
        # Asterisk's ari.conf refuses a user without a password: every connection would fail.
        raise SystemExit("config: asterisk.password is empty: set "
                         "PBX_CONTROL_ASTERISK_PASSWORD (or ..._FILE)")
    if not settings.username or not settings.app:
        raise SystemExit("config: asterisk.username and asterisk.app must not be empty "
                         "(PBX_CONTROL_ASTERISK_USERNAME, PBX_CONTROL_ASTERISK_APP)")
    try:
        url = httpx.URL(settings.url)
        valid = url.scheme in ("http", "https") and bool(url.host)
    except (httpx.InvalidURL, TypeError):
        valid = False
    if not valid:
        raise SystemExit(f"config: asterisk.url {settings.url!r} is not an http(s) URL like "
                         "http://127.0.0.1:8088 (PBX_CONTROL_ASTERISK_URL)")


def run(settings: Settings) -> None:
    """Run the controller in the foreground until SIGINT/SIGTERM."""
    from .. import collector, housekeeping
    from ..calls import CallService
    from ..failures import open_store

    check(settings.asterisk)
    store = open_store(settings.database_url, "pbx-control-asterisk")
    calls = CallService(store, settings, pbx="asterisk", node=settings.asterisk.node_name)

    async def main() -> None:
        controller = AsteriskController(settings, calls)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(asyncio_exception_handler)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, controller.stop)
        keeper = asyncio.create_task(housekeeping.every_async(store, settings))
        collector.freeze_startup_objects()
        try:
            await controller.run()
        finally:
            keeper.cancel()

    try:
        asyncio.run(main())
    finally:
        store.dispose()
