"""Periodic upkeep every long-running process does: sweep expired bindings, end cool-downs.

Routing never depends on it (an expired binding stops routing at its expiry instant, by the
query); sweeping frees the (X, party) pairs for allocation and keeps the active set small.
Running it in several processes at once is safe: each sweep locks the numbers it touches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import bindings, failures, pool
from .config import Settings
from .errors import PbxControlError
from .storage import Store, utcnow

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500
EVERY_S = 30.0


@dataclass(frozen=True)
class Upkeep:
    expired: int
    cooled: int


def run_once(store: Store, settings: Settings, now=None) -> Upkeep:
    """One pass; batches stay small so that a pass never holds locks for long."""
    now = now or utcnow()
    expired = 0
    while True:
        with store.session() as session:
            ended = bindings.sweep_expired(session, now, limit=SWEEP_BATCH, settings=settings)
        expired += ended
        if ended < SWEEP_BATCH:
            break

    with store.session() as session:
        cooled = pool.refresh_cooling(session, now)
    return Upkeep(expired=expired, cooled=cooled)


def safe_run_once(store: Store, settings: Settings) -> Upkeep | None:
    """For timers inside the controllers: a failed pass is logged and retried next time.

    Anything unexpected is logged by type and place only (its message could quote a number),
    and never ends the timer.
    """
    try:
        return run_once(store, settings)
    except PbxControlError as exc:
        logger.warning("housekeeping pass failed: %s", exc.code)
    except Exception as exc:  # noqa: BLE001 - a timer's catch-all: the next pass retries
        logger.warning("housekeeping pass failed: %s", failures.describe(exc))
    return None


def every_greenlet(store: Store, settings: Settings, pool, interval_s: float = EVERY_S):
    """Run passes forever in a greenlet (FreeSWITCH controller); the blocking database work
    goes to ``pool``, gevent's thread pool, like the controller's own."""
    import gevent

    def loop() -> None:
        while True:
            pool.apply(safe_run_once, (store, settings))
            gevent.sleep(interval_s)

    return gevent.spawn(loop)


async def every_async(store: Store, settings: Settings, interval_s: float = EVERY_S) -> None:
    """Run passes forever as an asyncio task (Asterisk controller, HTTP API)."""
    import asyncio

    while True:
        await asyncio.to_thread(safe_run_once, store, settings)
        await asyncio.sleep(interval_s)
