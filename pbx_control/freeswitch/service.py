"""``pbx-control serve freeswitch``: the outbound socket server, the inbound connection and
the core they share, wired together and run in the foreground."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass

import gevent
from gevent.event import Event
from gevent.threadpool import ThreadPool

from .. import housekeeping
from ..config import Settings
from ..storage import Store
from .core import CoreClient
from .inbound import InboundConnection
from .server import OutboundServer
from .tracker import Tracker

logger = logging.getLogger(__name__)

THREADS = 32  # concurrent database calls; the engine's pool (10 + 20 overflow) matches


@dataclass
class Controller:
    """The running pieces, for ``run`` and for tests and the demo that start one in-process."""

    server: OutboundServer
    inbound: InboundConnection | None
    core: CoreClient
    tracker: Tracker
    pool: ThreadPool

    def start(self) -> Controller:
        self.server.start()
        if self.inbound is not None:
            self.inbound.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        if self.inbound is not None:
            self.inbound.stop()
        self.pool.kill()


def build(settings: Settings, store: Store, host: str | None = None, port: int | None = None,
          inbound: bool = True, service=None) -> Controller:
    """Assemble a controller on ``store``; ``service`` replaces CallService (tests)."""
    if service is None:
        from ..calls import CallService

        fs = settings.freeswitch
        service = CallService(store, settings, pbx="freeswitch", node=fs.node_name)
    pool = ThreadPool(THREADS)
    core = CoreClient(service, settings.freeswitch.decision_deadline_s, pool)
    tracker = Tracker()
    server = OutboundServer(settings.freeswitch, core, tracker, host, port)
    connection = InboundConnection(settings.freeswitch, core, tracker) if inbound else None
    return Controller(server, connection, core, tracker, pool)


def run(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    if not settings.freeswitch.esl_password:
        # Without it no call end after a lost socket is recorded and nothing is reconciled.
        raise SystemExit("config: freeswitch.esl_password is empty: set "
                         "PBX_CONTROL_FREESWITCH_ESL_PASSWORD (or ..._FILE)")
    store = Store(settings.database_url, application_name="pbx-control-freeswitch")
    controller = build(settings, store, host, port).start()
    keeper = housekeeping.every_greenlet(store, settings, controller.pool)
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
