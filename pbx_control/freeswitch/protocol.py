"""The event-socket wire format: framing, URL-decoding, and a connection with deadlines.

FreeSWITCH frames every message as a block of ``Name: value`` lines ended by a blank line,
followed by ``Content-Length`` bytes of body when that header is present. Inside events
(``text/event-plain``) and in the channel data that answers ``connect`` every value is
URL-encoded, so a caller's display name can never contain a raw newline on the wire.

Why not greenswitch's parser: ``greenswitch.esl.ESLEvent`` URL-decodes the whole block
*before* splitting it into lines, so a caller name sent by a trunk as ``x%0Avariable_...: v``
becomes a header of its own and can overwrite a real one (the channel name or the source
address the trust rules read). Its reader also decodes line by line as UTF-8 (one bad byte
kills the connection) and loops forever on a short read at EOF. Here every value is decoded
only after the line is split, byte limits bound each message, and every read has a deadline.

Event bodies carry about 170 headers of which a session reads about ten, so ``parse_event``
finds and decodes a header only when it is read (``EventHeaders``); decoding every value of
every event was the largest share of the controller's CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from urllib.parse import unquote

import gevent
from gevent import socket

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 256 * 1024
EAGER_HEADER_BYTES = 1024
MAX_BODY_BYTES = 4 * 1024 * 1024

# switch_utils.h SWITCH_URL_UNSAFE, plus control and non-ASCII bytes (switch_url_encode).
_UNSAFE = set(b"\r\n #%&+:;<=>?@[\\]^`{|}\"")


class ProtocolError(Exception):
    """The peer sent something that is not the event-socket protocol."""


class Gone(Exception):
    """The peer closed the connection."""


class Timeout(Exception):
    """A wait on the peer passed its deadline."""


def url_encode(value: str) -> str:
    """Encode like FreeSWITCH's switch_url_encode (what the recordings show on the wire)."""
    out = []
    for byte in value.encode("utf-8"):
        if byte < 0x20 or byte > 0x7E or byte in _UNSAFE:
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def url_decode(value: str) -> str:
    return unquote(value, encoding="utf-8", errors="replace")


def parse_header_lines(block: bytes, decode: bool = True) -> dict[str, str]:
    """``Name: value`` lines into a dict; values URL-decoded after the split, first one kept."""
    return _header_dict(block.decode("utf-8", errors="replace"), decode)


def _header_dict(text: str, decode: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in text.split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(": ")
        if not sep:
            name, sep, value = line.partition(":")
        if not sep or not name or not name.isprintable() or " " in name:
            raise ProtocolError(f"malformed header line ({len(line)} bytes)")
        headers.setdefault(name, url_decode(value) if decode else value)
    return headers


class EventHeaders(dict):
    """An event's headers, each found in the raw block and URL-decoded when first read.

    The block is only searched for ``\\n<Name>:`` at the start of a line, in the text as
    received, and the value is decoded after it was cut at its line end: an encoded newline in
    a value (``%0A``) is not a newline here, so it can never create a header, as with
    ``parse_header_lines``. The value found is the one ``parse_header_lines`` keeps (the first
    line whose name is ``Name``). Iterating, comparing or copying parses the whole block with
    ``parse_header_lines`` first, which refuses a malformed line; a lookup alone does not look
    at the other lines, so a malformed line elsewhere in an event no longer fails the read.
    """

    def __init__(self, block: bytes):
        super().__init__()
        self._text = "\n" + block.decode("utf-8", errors="replace")
        self._complete = False

    def get(self, name: str, default: str | None = None) -> str | None:
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        if self._complete or not _plain_name(name):
            return default if self._complete else self._fill().get(name, default)
        raw = self._find(name)
        if raw is None:
            return default
        value = url_decode(raw)
        dict.__setitem__(self, name, value)
        return value

    def _find(self, name: str) -> str | None:
        text, key = self._text, "\n" + name + ":"
        at = text.find(key)
        while at >= 0:
            start = at + len(key)
            end = text.find("\n", start)
            end = len(text) if end < 0 else end
            # "Name: value", or "Name:value" when the line has no ": " (parse_header_lines).
            if text.startswith(" ", start):
                return text[start + 1:end]
            if text.find(": ", start, end) < 0:
                return text[start:end]
            at = text.find(key, end)
        return None

    def _fill(self) -> EventHeaders:
        if not self._complete:
            for name, value in _header_dict(self._text, decode=True).items():
                dict.setdefault(self, name, value)
            self._complete = True
        return self

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self):
        return dict.__iter__(self._fill())

    def __len__(self) -> int:
        return dict.__len__(self._fill())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventHeaders):
            other._fill()  # compared as dicts: the other's lazy values must be there too
        return dict.__eq__(self._fill(), other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return dict.__repr__(self._fill())

    def keys(self):
        return dict.keys(self._fill())

    def values(self):
        return dict.values(self._fill())

    def items(self):
        return dict.items(self._fill())

    def copy(self) -> dict[str, str]:
        return dict(self._fill().items())


def _plain_name(name: str) -> bool:
    # Any other name is looked up in the whole parse, which never finds it or refuses the block.
    return bool(name) and name.isprintable() and ":" not in name and " " not in name


@dataclass
class Message:
    """One framed message: its outer headers (decoded) and its body."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        return self.headers.get("Reply-Text", "").strip()

    @property
    def is_event(self) -> bool:
        return self.content_type == "text/event-plain"

    def event(self) -> Event:
        return parse_event(self.body)


@dataclass
class Event:
    """A ``text/event-plain`` event: decoded headers and its own body, if any."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


def parse_event(body: bytes) -> Event:
    head, sep, rest = body.partition(b"\n\n")
    headers = EventHeaders(head)
    length = headers.get("Content-Length")
    inner = b""
    if length is not None and sep:
        inner = rest[:_length(length)]
    return Event(headers, inner)


def _length(value: str) -> int:
    if not value.isdigit() or int(value) > MAX_BODY_BYTES:
        raise ProtocolError("bad Content-Length")
    return int(value)


def _outer_headers(block: bytes) -> dict[str, str]:
    """A message's own headers: parsed whole when short (every framing header and reply is),
    so a malformed line is refused at once; read lazily when long, which only the channel
    data answering ``connect`` is (about 170 headers, of which ``channel.read_channel`` reads
    about ten; parsing them all was a twentieth of the controller's CPU, docs/benchmarks.md).
    """
    if len(block) <= EAGER_HEADER_BYTES:
        return parse_header_lines(block)
    return EventHeaders(block)


@dataclass
class MessageReader:
    """Incremental framing: feed bytes as they come, take whole messages out."""

    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        while True:
            message = self._next()
            if message is None:
                return messages
            messages.append(message)

    def _next(self) -> Message | None:
        # FreeSWITCH sends bare LF; a stray blank line between messages is skipped.
        while self._buffer[:1] == b"\n":
            del self._buffer[:1]
        end = self._buffer.find(b"\n\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise ProtocolError("header block too long")
            return None
        headers = _outer_headers(bytes(self._buffer[:end]))
        length = _length(headers.get("Content-Length") or "0")
        if len(self._buffer) < end + 2 + length:
            return None
        body = bytes(self._buffer[end + 2:end + 2 + length])
        del self._buffer[:end + 2 + length]
        return Message(headers, body)


class Connection:
    """A gevent socket speaking the protocol; every read takes a deadline (monotonic)."""

    def __init__(self, sock: socket.socket, peer: str = "?"):
        self.sock = sock
        self.peer = peer
        self.closed = False
        self._reader = MessageReader()
        self._pending: list[Message] = []

    def send(self, data: bytes) -> None:
        if self.closed:
            raise Gone("connection closed")
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.closed = True
            raise Gone(str(exc)) from exc

    def read(self, deadline: float) -> Message:
        """The next message, or Timeout at ``deadline``, or Gone when the peer closed."""
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout("no message before the deadline")
            self._pending.extend(self._reader.feed(self._recv(remaining)))
        return self._pending.pop(0)

    def _recv(self, timeout: float) -> bytes:
        if self.closed:
            raise Gone("connection closed")
        try:
            with gevent.Timeout(timeout, Timeout("no data before the deadline")):
                data = self.sock.recv(65536)
        except OSError as exc:
            self.closed = True
            raise Gone(str(exc)) from exc
        if not data:
            self.closed = True
            raise Gone("peer closed the connection")
        return data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds
