"""What-if changes to the product, applied only inside a benchmark run, to measure a proposed
fix before its owner makes it (docs/benchmarks.md, "Where the time goes").

Each is a small replacement of one product function, loaded into the controller process by
``bench_calls --experiment NAME`` (or a DDL statement run on the benchmark's own database by
``bench_bindings --experiment``). Nothing in the product imports this module.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

CONTROLLER = ("lazy-events", "pipelined-commands", "green-database", "reuse-port")
DATABASE = ("least-used-index",)

# pool._candidates orders by (active_bindings, total_bindings, id) with no city: with this
# index PostgreSQL walks the numbers in that order and stops at the first free one, instead of
# sorting the whole pool on every bind.
LEAST_USED_INDEX = ("CREATE INDEX IF NOT EXISTS ix_bench_numbers_least_used ON numbers "
                    "(customer_id, state, active_bindings, total_bindings, id)")


class LazyHeaders(dict):
    """Event headers found and URL-decoded when read, not all ~170 at parse time.

    A value is looked up as ``\\n<Name>: `` in the raw block, which cannot match inside an
    encoded value (FreeSWITCH encodes every newline), so the split-before-decode property of
    ``protocol.parse_header_lines`` holds; the first occurrence wins, as there. Any other use
    of the mapping (iteration, len, update) parses the whole block first.
    """

    def __init__(self, block: bytes):
        super().__init__()
        self._raw = b"\n" + block
        self._complete = False

    def get(self, name, default=None):
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        if self._complete:
            return default
        value = self._find(name)
        if value is None:
            return default
        dict.__setitem__(self, name, value)
        return value

    def __getitem__(self, name):
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name):
        return self.get(name) is not None

    def _find(self, name: str) -> str | None:
        from ..freeswitch.protocol import url_decode

        for separator in (b": ", b":"):
            key = b"\n" + name.encode() + separator
            at = self._raw.find(key)
            if at >= 0:
                start = at + len(key)
                end = self._raw.find(b"\n", start)
                raw = self._raw[start:] if end < 0 else self._raw[start:end]
                return url_decode(raw.decode("utf-8", errors="replace"))
        return None

    def _fill(self) -> None:
        if not self._complete:
            from ..freeswitch.protocol import parse_header_lines

            for key, value in parse_header_lines(self._raw[1:]).items():
                dict.setdefault(self, key, value)
            self._complete = True

    def __iter__(self):
        self._fill()
        return dict.__iter__(self)

    def __len__(self):
        self._fill()
        return dict.__len__(self)

    def items(self):
        self._fill()
        return dict.items(self)

    def keys(self):
        self._fill()
        return dict.keys(self)

    def values(self):
        self._fill()
        return dict.values(self)

    def update(self, *args, **kwargs):
        self._fill()
        dict.update(self, *args, **kwargs)


def lazy_events() -> None:
    """protocol.parse_event with LazyHeaders (the session reads about ten headers an event)."""
    from ..freeswitch import protocol

    def parse_event(body: bytes) -> protocol.Event:
        head, sep, rest = body.partition(b"\n\n")
        headers = LazyHeaders(head)
        length = headers.get("Content-Length")
        inner = rest[:protocol._length(length)] if length is not None and sep else b""
        return protocol.Event(headers, inner)

    protocol.parse_event = parse_event


def pipelined_commands() -> None:
    """session.CallSession._send_all writing the commands before the bridge in one go and
    then reading their replies in order, instead of one round trip each (seven per call).

    The FreeSWITCH adapter does this itself since commit 69d4a31; kept to reproduce the
    what-if figures of docs/benchmarks.md on earlier commits (on later ones it replaces the
    adapter's own version, which also stops at a refused command).
    """
    from ..freeswitch import session
    from ..freeswitch.protocol import deadline_in

    def _send_all(self, commands: list[bytes]) -> None:
        if self.hung_up:
            return
        self.conn.send(b"".join(commands))
        deadline = deadline_in(session.COMMAND_S)
        for _ in commands:
            while True:
                message = self.conn.read(deadline)
                if message.content_type == "command/reply":
                    break
                self._dispatch(message)

    session.CallSession._send_all = _send_all


def green_database() -> None:
    """Database calls on greenlets of the hub instead of gevent's thread pool.

    gevent's monkey-patching before psycopg is imported makes psycopg wait for the socket
    through the patched ``select`` (psycopg.waiting picks its wait function at import), so a
    query yields to the other calls instead of holding a thread; SQLAlchemy's pool locks
    become greenlet locks. The pools of ``freeswitch.service`` become greenlet pools of the
    same sizes: no hand-off between threads, no contention for the interpreter lock.
    """
    from gevent import monkey

    monkey.patch_all()
    import gevent.pool

    from ..freeswitch import service

    service.ThreadPool = gevent.pool.Pool


def reuse_port() -> None:
    """The outbound socket's listener opened with SO_REUSEPORT, so that several controller
    processes can listen on one port and the kernel spreads the connections among them
    (``bench_calls --workers``)."""
    from gevent import socket
    from gevent.server import StreamServer

    from ..freeswitch import server

    class ReusePortServer(StreamServer):
        @classmethod
        def get_listener(cls, address, backlog=None, family=None):
            sock = socket.socket(family or socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(backlog or cls.backlog or 256)
            sock.setblocking(False)
            return sock

    server.StreamServer = ReusePortServer


def apply(names: list[str]) -> None:
    """Apply controller experiments by name, in this process."""
    for name in names:
        {"lazy-events": lazy_events, "pipelined-commands": pipelined_commands,
         "green-database": green_database, "reuse-port": reuse_port}[name]()
        logger.warning("benchmark experiment %s applied: not the product as shipped", name)
