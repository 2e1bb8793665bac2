"""FreeSWITCH's recorded side of an outbound event-socket session, as per-call templates.

A recording (``recordings/<case>.jsonl``, copied from the shared fixtures) holds every byte
FreeSWITCH 1.10.12 sent to a probe controller: the channel data answering ``connect``, the
command replies, and each event with its recorded time. Here each message becomes a template
in which the caller, the dialed X, the far party, the ids, the application argument and the
times are slots, so a benchmark call sends the recorded bytes with its own values, and the
``Content-Length`` of each event is counted again for the bytes actually sent.

The recordings dial B directly (8613800000000 is both the dialed number and the far party);
header names tell the two apart: the A leg's destination and request-URI fields get the
dialed X, every other occurrence (the other leg, the bridge variables) gets the party the
controller bridged to.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote

RECORDINGS = Path(__file__).with_name("recordings")
SLOT = "\x00"

# The probe's values in every recording.
REC_CALLER = "8613900000000"
REC_DIALED = "8613800000000"
REC_SHOWN = "8617000000001"
REC_SIP_CALL_ID = "1-20475%40127.0.0.1"

DIALED_KEYS = frozenset({
    "Caller-Destination-Number", "Channel-Destination-Number", "variable_sip_req_user",
    "variable_sip_req_uri", "variable_sip_to_user", "variable_sip_to_uri",
    "variable_sip_full_to", "variable_destination_number",
})
APP_NAME_KEYS = frozenset({"Application", "variable_current_application"})
_US_SUFFIXES = ("-Time", "-Timestamp", "_uepoch", "_invite_stamp")
_S_SUFFIXES = ("_epoch",)
_DATE_SUFFIXES = ("_stamp", "Event-Date-Local")

# FreeSWITCH's switch_url_encode leaves these as they are (its unsafe set is
# "\r\n \"#%&+:;<=>?@[\\]^`{|}"): '/', ',', '!' and friends pass unencoded.
_FS_SAFE = "/,!$'()*~.-_"
LOCAL_DATE = "%Y-%m-%d %H:%M:%S"
GMT_DATE = "%a, %d %b %Y %H:%M:%S GMT"


def fs_url_encode(text: str) -> str:
    """Encode a value as FreeSWITCH does in event headers."""
    return quote(text, safe=_FS_SAFE)


class Values(dict):
    """The slot values of one call; time slots are worked out on first use."""

    def __init__(self, offset_us: int, **fixed: str):
        super().__init__(fixed)
        self.offset_us = offset_us

    def __missing__(self, name: str) -> str:
        kind, recorded = name[0], int(name[1:])
        if kind == "U":
            value = str(recorded + self.offset_us)
        elif kind == "S":
            value = str(recorded + self.offset_us // 1_000_000)
        else:
            shifted = datetime.fromtimestamp(recorded + self.offset_us // 1_000_000, UTC)
            value = fs_url_encode(shifted.strftime(LOCAL_DATE if kind == "L" else GMT_DATE))
        self[name] = value
        return value


@dataclass(frozen=True)
class Template:
    """Text with slots: ``parts[0::2]`` are fixed, ``parts[1::2]`` slot names."""

    parts: tuple[str, ...]

    @classmethod
    def compile(cls, marked: str) -> Template:
        return cls(tuple(marked.split(SLOT)))

    def render(self, values: Values) -> str:
        parts = self.parts
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            out.append(values[parts[i]])
            out.append(parts[i + 1])
        return "".join(out)


@dataclass(frozen=True)
class Message:
    """One ESL message: a header block, and a body whose length is counted at render time."""

    head: Template
    body: Template | None = None

    def render(self, values: Values) -> bytes:
        if self.body is None:
            return self.head.render(values).encode()
        body = self.body.render(values).encode()
        values["LEN"] = str(len(body))
        return self.head.render(values).encode() + body


@dataclass
class Recording:
    """One recorded case, ready to replay."""

    name: str
    connect_reply: Message
    replies: dict[str, Message]
    decision: str  # the probe's decision command, e.g. "execute bridge", "hangup"
    events: list[tuple[float, list[Message]]] = field(default_factory=list)
    exit_reply: list[Message] = field(default_factory=list)
    answer_at: float | None = None
    hangup_at: float | None = None
    recorded_base_us: int = 0

    def schedule(self, hold_s: float) -> list[tuple[float, list[Message]]]:
        """Event times after the decision, the answered part stretched to ``hold_s``."""
        if self.answer_at is None or self.hangup_at is None:
            return self.events
        shift = hold_s - (self.hangup_at - self.answer_at)
        return [(t + shift if t >= self.hangup_at else t, msgs) for t, msgs in self.events]

    def first_execute(self) -> int:
        """Index of the first event chunk with a CHANNEL_EXECUTE (0 if there is none): the
        moment the channel's thread leaves park and runs the queued applications."""
        for index, (_, messages) in enumerate(self.events):
            if any("Event-Name: CHANNEL_EXECUTE\n" in "".join(m.body.parts if m.body else ())
                   for m in messages):
                return index
        return 0

    def without_linger_notice(self) -> Recording:
        """The same case as FreeSWITCH plays it when the controller did not ask to linger:
        no linger notice (1c_answered_nolinger shows none), the socket closes after the
        last event."""
        events = [(t, [m for m in msgs if not _is_linger_notice(m)]) for t, msgs in self.events]
        return Recording(self.name + "_nolinger", self.connect_reply, self.replies,
                         self.decision, [(t, m) for t, m in events if m], [], self.answer_at,
                         self.hangup_at, self.recorded_base_us)


def _is_linger_notice(message: Message) -> bool:
    text = "".join(message.head.parts)
    return "text/disconnect-notice" in text and "Content-Disposition: linger" in text


def load(name: str, directory: Path = RECORDINGS,
         variables: dict[str, str] | None = None) -> Recording:
    """Read ``<name>.jsonl`` and compile it.

    ``variables`` are channel variables the dialplan would have set before ``socket``: they
    are added, as FreeSWITCH lists them (``variable_<name>: <encoded value>``), to the channel
    data and to every event.
    """
    blocks = [json.loads(line) for line in (directory / f"{name}.jsonl").read_text().splitlines()
              if line.strip()]
    return _compile(name, [b for b in blocks if b["dir"] in ("send", "recv")], variables or {})


def _compile(name: str, blocks: list[dict], variables: dict[str, str]) -> Recording:
    sends = [b for b in blocks if b["dir"] == "send"]
    decision_block = next(b for b in sends if b["data"].startswith("sendmsg"))
    decision, arg = _decision_of(decision_block["data"])
    ids = _ids(blocks)
    marker = _Marker(ids, fs_url_encode(arg) if arg else None, variables)

    recording = Recording(name, marker.message(_after(blocks, sends[0])[0]["data"]), {},
                          decision)
    recording.recorded_base_us = ids["base_us"]
    for send in sends:
        word = send["data"].split(None, 1)[0]
        replies = _after(blocks, send)
        if word == "exit":
            recording.exit_reply = [marker.message(m) for b in replies for m in _split(b["data"])]
        elif word != "connect":
            recording.replies[word] = marker.message(replies[0]["data"])
    _compile_events(recording, blocks, decision_block, marker)
    return recording


def _compile_events(recording: Recording, blocks, decision_block, marker) -> None:
    start = blocks.index(decision_block)
    for block in blocks[start + 2:]:
        if block["dir"] == "send":
            break
        t = block["t"] - decision_block["t"]
        texts = _split(block["data"])
        recording.events.append((t, [marker.message(m) for m in texts]))
        for text in texts:
            if "Event-Name: CHANNEL_ANSWER" in text and recording.answer_at is None:
                recording.answer_at = t
            if "Event-Name: CHANNEL_HANGUP\n" in text and recording.hangup_at is None:
                recording.hangup_at = t


def _after(blocks: list[dict], send: dict) -> list[dict]:
    """The receive blocks that directly follow a send block."""
    out = []
    for block in blocks[blocks.index(send) + 1:]:
        if block["dir"] != "recv":
            break
        out.append(block)
    return out


def _decision_of(sendmsg: str) -> tuple[str, str | None]:
    headers = dict(line.split(": ", 1) for line in sendmsg.splitlines()[1:] if ": " in line)
    if headers.get("call-command") == "execute":
        return "execute " + headers["execute-app-name"], headers.get("execute-app-arg")
    return headers.get("call-command", "?"), None


def _split(data: str) -> list[str]:
    """Cut a received chunk into ESL messages (header block, then Content-Length bytes)."""
    raw, out = data.encode(), []
    while raw:
        head, sep, rest = raw.partition(b"\n\n")
        length = 0
        for line in head.split(b"\n"):
            if line.startswith(b"Content-Length: "):
                length = int(line[16:])
        out.append((head + sep + rest[:length]).decode())
        raw = rest[length:]
    return out


def _ids(blocks: list[dict]) -> dict:
    """The call's own ids in the recording: A leg, far leg, core, and the time base."""
    text = "".join(b["data"] for b in blocks if b["dir"] == "recv")
    first = text.split("\n")
    found = {"uuid": None, "far_uuid": None, "core": None, "base_us": 0}
    for line in first:
        key, _, value = line.partition(": ")
        if key == "Unique-ID" and found["uuid"] is None:
            found["uuid"] = value
        elif key == "Other-Leg-Unique-ID" and found["far_uuid"] is None:
            found["far_uuid"] = value
        elif key == "Core-UUID" and found["core"] is None:
            found["core"] = value
        elif key == "Event-Date-Timestamp" and not found["base_us"]:
            found["base_us"] = int(value)
    return found


class _Marker:
    """Turns recorded text into templates: values become slot names."""

    def __init__(self, ids: dict, encoded_arg: str | None, variables: dict[str, str],
                 app_name: str | None = None):
        self.encoded_arg = encoded_arg
        self.app_name = app_name
        self.extra = "".join(f"variable_{k}: {fs_url_encode(v)}\n" for k, v in variables.items())
        self.tokens = [(REC_CALLER, "CALLER"), (REC_SHOWN, "SHOWN"),
                       (REC_SIP_CALL_ID, "SIP_CALL_ID")]
        for key, slot in (("uuid", "UUID"), ("far_uuid", "FAR_UUID"), ("core", "CORE_UUID")):
            if ids[key]:
                self.tokens.append((ids[key], slot))

    def message(self, text: str) -> Message:
        head, sep, body = text.partition("\n\n")
        has_length = any(line.startswith("Content-Length: ") for line in head.split("\n"))
        if has_length and body:
            marked_head = "\n".join(
                f"Content-Length: {SLOT}LEN{SLOT}" if line.startswith("Content-Length: ")
                else self.line(line) for line in head.split("\n"))
            return Message(Template.compile(marked_head + sep), Template.compile(
                "\n".join(self.line(line) for line in body.split("\n"))))
        return Message(Template.compile(
            "\n".join(self.line(line) for line in head.split("\n")) + sep + body))

    def line(self, line: str) -> str:
        if self.extra and line.startswith("variable_direction: "):
            # FreeSWITCH lists the dialplan's variables later, among the channel's; a header
            # block is a map, so placing them before the first variable changes nothing.
            return self.extra + self._value(line)
        return self._value(line)

    def _value(self, line: str) -> str:
        key, sep, value = line.partition(": ")
        if not sep:
            return line
        if self.encoded_arg is not None and value == self.encoded_arg:
            return f"{key}: {SLOT}APP_ARG{SLOT}"
        if self.app_name and key in APP_NAME_KEYS and value == self.app_name:
            return f"{key}: {SLOT}APP_NAME{SLOT}"
        timed = _time_slot(key, value)
        if timed is not None:
            return f"{key}: {timed}"
        for token, slot in self.tokens:
            value = value.replace(token, f"{SLOT}{slot}{SLOT}")
        dialed = "DIALED" if key in DIALED_KEYS else "FAR"
        return f"{key}: {value.replace(REC_DIALED, f'{SLOT}{dialed}{SLOT}')}"


def _time_slot(key: str, value: str) -> str | None:
    if value.isdigit() and value != "0":
        if key.endswith(_US_SUFFIXES) and len(value) >= 15:
            return f"{SLOT}U{value}{SLOT}"
        if key.endswith(_S_SUFFIXES) and len(value) >= 9:
            return f"{SLOT}S{value}{SLOT}"
        return None
    if key.endswith(_DATE_SUFFIXES) and len(value) == 25 and value[4] == "-":
        return f"{SLOT}L{_epoch(value, LOCAL_DATE)}{SLOT}"
    if key == "Event-Date-GMT":
        return f"{SLOT}G{_epoch(value, GMT_DATE)}{SLOT}"
    return None


def _epoch(value: str, pattern: str) -> int:
    # The recording host ran on UTC (Event-Date-Local equals Event-Date-GMT in every file).
    parsed = datetime.strptime(unquote(value), pattern)
    return int(parsed.replace(tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class AppEvents:
    """CHANNEL_EXECUTE and CHANNEL_EXECUTE_COMPLETE of an application the controller queued
    before its decision (``set``, ``sched_hangup``...), from recording 3b, where the probe's
    ``set`` produced exactly this pair when the channel left park."""

    execute: Message
    complete: Message
    recorded_base_us: int

    def render(self, values: Values, app: str, arg: str) -> bytes:
        own = Values(time.time_ns() // 1000 - self.recorded_base_us, **values)
        own["APP_NAME"], own["APP_ARG"] = app, fs_url_encode(arg)
        return self.execute.render(own) + self.complete.render(own)


def load_app_events(variables: dict[str, str] | None = None) -> AppEvents:
    name = "3b_busy_continue_on_fail"
    blocks = [json.loads(line) for line in (RECORDINGS / f"{name}.jsonl").read_text().splitlines()
              if line.strip()]
    blocks = [b for b in blocks if b["dir"] in ("send", "recv")]
    ids = _ids(blocks)
    marker = _Marker(ids, fs_url_encode("continue_on_fail=true"), variables or {},
                     app_name="set")
    found = {}
    for block in blocks:
        if block["dir"] != "recv":
            continue
        for text in _split(block["data"]):
            for event in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
                if f"Event-Name: {event}\n" in text and "\nApplication: set\n" in text:
                    found.setdefault(event, marker.message(text))
    return AppEvents(found["CHANNEL_EXECUTE"], found["CHANNEL_EXECUTE_COMPLETE"], ids["base_us"])
