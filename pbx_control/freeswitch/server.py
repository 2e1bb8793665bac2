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

from ..causes import UNAVAILABLE
from ..config import FreeSwitchSettings
from . import commands as cmd
from .core import CoreClient
from .protocol import Connection, Gone, ProtocolError, Timeout, deadline_in
from .session import CallSession
from .tracker import Tracker

logger = logging.getLogger(__name__)

SHED_S = 2.0  # for the replies to a refused session's two commands
SHED_LOG_EVERY = 1000


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
        self.setting_up = 0
        self.shed = 0
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
        if self._overloaded():
            self._refuse(Connection(sock, peer))
            return
        self.active += 1
        self.setting_up += 1
        in_setup = [True]

        def decided() -> None:
            if in_setup[0]:
                in_setup[0] = False
                self.setting_up -= 1

        try:
            CallSession(Connection(sock, peer), self.settings, self.core, self.tracker,
                        on_decided=decided).run()
        finally:
            decided()
            self.active -= 1

    def _overloaded(self) -> bool:
        return (self.active >= self.settings.max_sessions
                or self.setting_up >= self.settings.max_setup_sessions)

    def _refuse(self, conn: Connection) -> None:
        """Refuse a session past the admission bounds: 503 (Q.850 41), fail closed and cheap.

        No decision is taken and no call record is written: under overload that database work
        is what the controller has no room for (known shortcoming: the attempt is only in
        FreeSWITCH's own CDR and in this log's count). Tried in 77740e3 and reverted: the
        records queued and written in batches took good calls at 300/s offered from 82/s to
        20/s on the benchmark host, the writes holding the interpreter the decisions need.
        ``connect`` then the hangup go out in one write; without ``linger`` FreeSWITCH closes
        the socket after the hangup.
        """
        self.shed += 1
        if self.shed % SHED_LOG_EVERY == 1:
            logger.warning("overload: %d sessions, %d in set-up: refusing new calls 503 "
                           "(%d so far)", self.active, self.setting_up, self.shed)
        try:
            conn.send(cmd.CONNECT + cmd.refuse(UNAVAILABLE))
            deadline, replies = deadline_in(SHED_S), 0
            while replies < 2:  # the channel data, then the hangup's +OK
                if conn.read(deadline).content_type == "command/reply":
                    replies += 1
        except (Gone, Timeout, ProtocolError) as exc:
            logger.debug("refused session from %s: %s", conn.peer, type(exc).__name__)
        finally:
            conn.close()
