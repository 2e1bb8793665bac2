"""The outbound event-socket server FreeSWITCH's dialplan ``socket`` application connects to.

gevent's StreamServer accepts each connection as it arrives (greenswitch's server polls for
new ones every 100 ms, which measured as +50-60 ms per call, and caps sessions at 100). A
connection from an address outside the configured PBX addresses is closed before a single
byte is sent: the outbound socket takes commands for live calls and must not be reachable
from anywhere else.
"""

from __future__ import annotations

import ipaddress
import logging

from gevent import socket
from gevent.server import StreamServer

from ..config import FreeSwitchSettings
from .core import CoreClient
from .protocol import Connection
from .session import CallSession
from .tracker import Tracker

logger = logging.getLogger(__name__)


def allowed(address: str, pbx_addresses: list[str]) -> bool:
    """True when ``address`` is one of the PBX addresses or inside one of their networks."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in pbx_addresses:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            logger.warning("ignoring malformed PBX address %r", entry)
    return False


class OutboundServer:
    """Accepts FreeSWITCH's outbound sessions and runs one CallSession per connection."""

    def __init__(self, settings: FreeSwitchSettings, core: CoreClient, tracker: Tracker,
                 host: str | None = None, port: int | None = None):
        self.settings = settings
        self.core = core
        self.tracker = tracker
        self.active = 0
        listen = (host or settings.listen_host,
                  settings.listen_port if port is None else port)
        self.server = StreamServer(listen, self._handle, backlog=1024)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address[0], self.server.server_port

    def start(self) -> None:
        self.server.start()
        logger.info("outbound event socket listening on %s:%d", *self.address)

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self, timeout: float = 5.0) -> None:
        self.server.stop(timeout=timeout)

    def _handle(self, sock, address) -> None:
        peer = address[0]
        if not allowed(peer, self.settings.pbx_addresses):
            logger.warning("closed a connection from %s: not a configured PBX address", peer)
            sock.close()
            return
        # Commands are small and each waits for its reply: no Nagle delay on them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.active += 1
        try:
            CallSession(Connection(sock, peer), self.settings, self.core, self.tracker).run()
        finally:
            self.active -= 1
