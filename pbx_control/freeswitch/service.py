"""``pbx-control serve freeswitch``: the outbound socket server, the inbound connection and
the core they share, wired together and run in the foreground."""

from __future__ import annotations

import logging
import os
import signal
import socket
from dataclasses import dataclass

import gevent
from gevent.event import Event
from gevent.threadpool import ThreadPool

from .. import collector, housekeeping
from ..config import Settings
from ..failures import open_store
from ..storage import Store
from .core import CoreClient
from .inbound import InboundConnection
from .server import OutboundServer
from .tracker import Tracker

logger = logging.getLogger(__name__)

# Concurrent database calls: decisions and call-event writes have a pool each (core.py),
# together no more than the engine's connections (10 + 20 overflow).
DECISION_THREADS = 12
THREADS = 18


@dataclass
class Controller:
    """The running pieces, for ``run`` and for tests and the demo that start one in-process."""

    server: OutboundServer
    inbound: InboundConnection | None
    core: CoreClient
    tracker: Tracker
    pool: ThreadPool
    decision_pool: ThreadPool | None = None

    def start(self) -> Controller:
        self.server.start()
        if self.inbound is not None:
            self.inbound.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        if self.inbound is not None:
            self.inbound.stop()
        self.core.close()
        self.pool.kill()
        if self.decision_pool is not None:
            self.decision_pool.kill()


def build(settings: Settings, store: Store, host: str | None = None, port: int | None = None,
          inbound: bool = True, service=None) -> Controller:
    """Assemble a controller on ``store``; ``service`` replaces CallService (tests)."""
    if service is None:
        from ..calls import CallService

        fs = settings.freeswitch
        service = CallService(store, settings, pbx="freeswitch", node=fs.node_name)
    pool, decision_pool = ThreadPool(THREADS), ThreadPool(DECISION_THREADS)
    core = CoreClient(service, settings.freeswitch.decision_deadline_s, pool, decision_pool)
    tracker = Tracker()
    server = OutboundServer(settings.freeswitch, core, tracker, host, port)
    connection = InboundConnection(settings.freeswitch, core, tracker) if inbound else None
    return Controller(server, connection, core, tracker, pool, decision_pool)


def _reason(exc: OSError) -> str:
    # gevent appends the address to strerror: the errno says it alone.
    if isinstance(exc, socket.gaierror):
        return "not an address, nor a host name that resolves"
    if isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


def run(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    if not settings.freeswitch.esl_password:
        # Without it no call end after a lost socket is recorded and nothing is reconciled.
        raise SystemExit("config: freeswitch.esl_password is empty: set "
                         "PBX_CONTROL_FREESWITCH_ESL_PASSWORD (or ..._FILE)")
    store = open_store(settings.database_url, "pbx-control-freeswitch")
    try:
        controller = build(settings, store, host, port).start()
    except OSError as exc:  # the port is taken, the address is not this host's or no address
        store.dispose()
        listen = (host or settings.freeswitch.listen_host,
                  settings.freeswitch.listen_port if port is None else port)
        raise SystemExit(f"cannot listen on {listen[0]}:{listen[1]}: {_reason(exc)}") from None
    keeper = housekeeping.every_greenlet(store, settings, controller.pool)
    collector.freeze_startup_objects()
    stopped = Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stopped.set)
    try:
        stopped.wait()
    finally:
        logger.info("stopping: %d calls in progress", controller.server.active)
        keeper.kill()
        controller.stop()
        store.dispose()
