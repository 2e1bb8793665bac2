"""The recorded FreeSWITCH transcripts the protocol double replays, and their wire encoding.

``recordings/*.jsonl`` are copies of ``outbound_esl.jsonl`` / ``inbound_esl.jsonl`` from the
shared fixtures (real FreeSWITCH 1.10.12, real SIP; see recordings/README.md). Each message
FreeSWITCH sent is kept as an ordered list of decoded ``(name, value)`` header pairs, so the
double can substitute numbers, UUIDs and times and re-encode it exactly as FreeSWITCH does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .protocol import MessageReader, url_decode, url_encode

RECORDINGS = Path(__file__).with_name("recordings")

# The numbers and identities the recordings were made with (recordings/README.md).
RECORDED_CALLER = "8613900000000"
RECORDED_DIALED = "8613800000000"
RECORDED_SHOWN = "8617000000001"


@dataclass(frozen=True)
class Recorded:
    """One message FreeSWITCH sent: kind is 'event', 'reply', 'notice' or 'api'."""

    kind: str
    pairs: list[tuple[str, str]]
    body: bytes = b""
    outer: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.get("Event-Name") or self.outer.get("Content-Disposition", "")

    def get(self, header: str) -> str | None:
        for key, value in self.pairs:
            if key == header:
                return value
        return None


def header_pairs(block: bytes) -> list[tuple[str, str]]:
    pairs = []
    for line in block.decode("utf-8", errors="replace").split("\n"):
        if line:
            key, _, value = line.partition(": ")
            pairs.append((key, url_decode(value)))
    return pairs


@cache
def load(case: str) -> tuple[Recorded, ...]:
    """Every message FreeSWITCH sent in a recorded case, in order."""
    reader = MessageReader()
    out: list[Recorded] = []
    for line in (RECORDINGS / f"{case}.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if item.get("dir") != "recv":
            continue
        for message in reader.feed(item["data"].encode("utf-8")):
            out.append(_recorded(message))
    return tuple(out)


def _recorded(message) -> Recorded:
    kind = {"text/event-plain": "event", "text/disconnect-notice": "notice",
            "api/response": "api"}.get(message.content_type, "reply")
    if kind == "event":
        head, _, _ = message.body.partition(b"\n\n")
        return Recorded(kind, header_pairs(head), outer=message.headers)
    return Recorded(kind, [], body=message.body, outer=message.headers)


@cache
def connect_reply(case: str) -> tuple[tuple[str, str], ...]:
    """The channel-data block that answered ``connect`` (decoded pairs, outer headers too)."""
    for line in (RECORDINGS / f"{case}.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if item.get("dir") == "recv":
            block, _, _ = item["data"].encode("utf-8").partition(b"\n\n")
            return tuple(header_pairs(block))
    raise LookupError(f"{case}: no connect reply")


@cache
def find_uuid(case: str) -> str:
    """The recorded caller leg's UUID (the connect reply's Unique-ID)."""
    return dict(connect_reply(case))["Unique-ID"]


def events(case: str) -> list[Recorded]:
    return [m for m in load(case) if m.kind in ("event", "notice")]


def find(case: str, name: str, application: str | None = None, nth: int = 0) -> Recorded:
    found = [m for m in events(case) if m.name == name
             and (application is None or m.get("Application") == application)]
    return found[nth]


def encode_pairs(pairs: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {url_encode(v)}\n" for k, v in pairs).encode("utf-8")


def encode_event(pairs: list[tuple[str, str]]) -> bytes:
    body = encode_pairs(pairs) + b"\n"
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body
