"""The inbound side of the FreeSWITCH double: mod_event_socket on its listening port.

Answers as recording 7a shows: ``auth/request`` greeting, ``+OK accepted``, ``+OK event
listener enabled plain``, ``api show channels as json`` (``{"row_count": 0}`` plus a newline
when empty, compact JSON without a trailing newline otherwise), ``api uuid_exists`` (``true``
/ ``false``), ``exit``. ``filter`` follows the documentation: an event passes when it
matches any filter. Events are published by the outbound double when its calls end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from gevent import socket
from gevent.server import StreamServer

from . import recordings as rec
from .double import _DISCONNECT

logger = logging.getLogger(__name__)


@dataclass
class _Subscriber:
    sock: object
    events: set[str] = field(default_factory=set)
    filters: list[tuple[str, str]] = field(default_factory=list)

    def wants(self, pairs: list[tuple[str, str]]) -> bool:
        headers = dict(pairs)
        if headers.get("Event-Name") not in self.events and "ALL" not in self.events:
            return False
        return not self.filters or any(headers.get(k) == v for k, v in self.filters)


class InboundDouble:
    """A fake mod_event_socket (inbound) with a channel table and an event stream."""

    def __init__(self, password: str = "ClueCon", host: str = "127.0.0.1", port: int = 0):
        self.password = password
        self.channels: dict[str, dict] = {}
        self.commands: list[str] = []
        self.subscribers: list[_Subscriber] = []
        self.published: list[dict] = []
        self.server = StreamServer((host, port), self._handle)

    @property
    def port(self) -> int:
        return self.server.server_port

    def start(self) -> InboundDouble:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(timeout=1)

    # --- what the outbound double tells it ------------------------------------------------

    def add_channel(self, channel) -> None:
        self.channels[channel.uuid] = {
            "uuid": channel.uuid, "direction": "inbound", "call_uuid": channel.uuid,
            "name": f"sofia/{channel.caller.entry}/{channel.caller.number}@127.0.0.1:5060",
            "state": "CS_EXECUTE", "dest": channel.dialed, "application": "socket",
        }

    def remove_channel(self, uuid: str) -> None:
        self.channels.pop(uuid, None)

    def publish(self, pairs: list[tuple[str, str]]) -> None:
        self.published.append(dict(pairs))
        data = rec.encode_event(pairs)
        for subscriber in list(self.subscribers):
            if subscriber.wants(pairs):
                try:
                    subscriber.sock.sendall(data)
                except OSError:
                    self.subscribers.remove(subscriber)

    def listing(self) -> str:
        if not self.channels:
            return '{"row_count": 0}\n'
        rows = list(self.channels.values())
        return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))

    # --- the connection -------------------------------------------------------------------

    def _handle(self, sock, _address) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        subscriber = _Subscriber(sock)
        sock.sendall(b"Content-Type: auth/request\n\n")
        buffer, authed = b"", False
        while True:
            while b"\n\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    self._drop(subscriber)
                    return
                buffer += data
            raw, _, buffer = buffer.partition(b"\n\n")
            command = raw.decode("utf-8", errors="replace")
            self.commands.append(command)
            authed = self._command(subscriber, command, authed)
            if authed is None:
                self._drop(subscriber)
                return

    def _command(self, sub: _Subscriber, command: str, authed: bool) -> bool | None:
        words = command.split()
        if not authed:
            if words[:1] == ["auth"] and command == f"auth {self.password}":
                self._reply(sub, "+OK accepted")
                return True
            self._reply(sub, "-ERR invalid")
            sub.sock.sendall(_DISCONNECT)
            return None
        if words[:2] == ["event", "plain"]:
            sub.events.update(words[2:])
            if sub not in self.subscribers:
                self.subscribers.append(sub)
            self._reply(sub, "+OK event listener enabled plain")
        elif words[:1] == ["filter"] and len(words) == 3:
            sub.filters.append((words[1], words[2]))
            self._reply(sub, f"+OK filter added. [{words[1]}]=[{words[2]}]")
        elif words[:1] == ["api"]:
            self._api(sub, words[1:])
        elif words == ["exit"]:
            self._reply(sub, "+OK bye")
            sub.sock.sendall(_DISCONNECT)
            return None
        else:
            self._reply(sub, "-ERR command not found")
        return True

    def _api(self, sub: _Subscriber, words: list[str]) -> None:
        if words == ["show", "channels", "as", "json"]:
            body = self.listing()
        elif len(words) == 2 and words[0] == "uuid_exists":
            body = "true" if words[1] in self.channels else "false"
        else:
            body = f"-ERR {words[0] if words else ''} Command not found!\n"
        data = body.encode()
        sub.sock.sendall(b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data)

    @staticmethod
    def _reply(sub: _Subscriber, text: str) -> None:
        sub.sock.sendall(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())

    def _drop(self, sub: _Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
