"""The protocol double's view of one recorded channel: channel data and events rebuilt from
the recordings with this call's numbers, UUIDs, profile and times substituted.

Times come from a virtual clock (the answer 100 ms after the bridge, the hangup ``hold_s``
later) so a call with two billable seconds takes no real two seconds in a test.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from dataclasses import dataclass, field

from . import recordings as rec
from .commands import CAUSES

# mod_sofia hangup_cause_to_sip, for the causes the double is asked to hang up with.
CAUSE_TO_SIP = {
    "UNALLOCATED_NUMBER": 404, "NO_ROUTE_DESTINATION": 404, "USER_BUSY": 486,
    "NO_USER_RESPONSE": 408, "NO_ANSWER": 480, "SUBSCRIBER_ABSENT": 480,
    "CALL_REJECTED": 603, "NORMAL_TEMPORARY_FAILURE": 503, "SWITCH_CONGESTION": 503,
    "NORMAL_CIRCUIT_CONGESTION": 503, "ORIGINATOR_CANCEL": 487, "NORMAL_CLEARING": 480,
}
# sofia_glue_sip_cause_to_freeswitch, for ``respond <status>``.
SIP_TO_CAUSE = {
    403: "CALL_REJECTED", 603: "CALL_REJECTED", 404: "UNALLOCATED_NUMBER",
    486: "USER_BUSY", 480: "NO_USER_RESPONSE", 503: "NORMAL_TEMPORARY_FAILURE",
    500: "NORMAL_TEMPORARY_FAILURE",
}
PROFILES = {"carrier": "carrier", "softphone": "softphone"}


@dataclass
class Caller:
    """Who calls, as FreeSWITCH would present it.

    ``entry``: 'carrier' (a trunk; ``number`` is what its P-Asserted-Identity or From gave),
    or 'softphone' (directory user ``user``; ``authorized`` false for an unauthenticated one).
    """

    number: str = rec.RECORDED_CALLER
    entry: str = "carrier"
    source_ip: str = "127.0.0.1"
    user: str = "1001"
    authorized: bool = True
    display_name: str | None = None
    pai: bool = False


@dataclass
class Channel:
    caller: Caller
    dialed: str
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    core_uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    start_us: int = field(default_factory=lambda: int(time.time() * 1_000_000))
    clock_us: int = 0
    answered_us: int = 0
    ended_us: int = 0
    variables: dict[str, str] = field(default_factory=dict)
    _uuids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.clock_us = self.start_us

    # --- the connect reply ----------------------------------------------------------------

    def channel_data(self) -> list[tuple[str, str]]:
        case = self._data_case()
        pairs = [p for p in rec.connect_reply(case) if p[0] not in _OUTER]
        pairs = self._substitute(pairs, case)
        pairs = self._apply_identity(pairs)
        pairs.append(("variable_pbx_control_entry", self.caller.entry))
        return pairs + [
            ("Content-Type", "command/reply"), ("Reply-Text", "+OK\n"),
            ("Socket-Mode", "async"),
            # `socket ... async` without `full` (the contract): FreeSWITCH says single.
            ("Control", "single"),
        ]

    def _data_case(self) -> str:
        if self.caller.entry == "softphone":
            return "8a_registered_user_outbound"
        return "10a_trunk_pai_with_display" if self.caller.pai else "1_answered"

    def _apply_identity(self, pairs):
        out = []
        for key, value in pairs:
            if key in ("variable_sip_network_ip", "variable_sip_received_ip",
                       "Caller-Network-Addr", "Channel-Network-Addr"):
                value = self.caller.source_ip
            elif key == "variable_sip_authorized":
                value = "true" if self.caller.authorized else "false"
            elif key == "Caller-Caller-ID-Name" and self.caller.display_name:
                value = self.caller.display_name
            out.append((key, value))
        if self.caller.entry == "softphone" and not self.caller.authorized:
            out = [(k, v) for k, v in out if k not in ("variable_sip_auth_username",
                                                        "variable_sip_auth_realm")]
        return out

    # --- events ---------------------------------------------------------------------------

    def event(self, recorded: rec.Recorded, case: str, **overrides: str) -> list[tuple[str, str]]:
        """A recorded event re-issued for this channel; ``overrides`` replace headers."""
        self.clock_us += 1000
        pairs = self._substitute(list(recorded.pairs), case)
        pairs = self._apply_identity(pairs)
        pairs = self._times(pairs)
        pairs.append(("variable_pbx_control_entry", self.caller.entry))
        for key, value in overrides.items():
            header = key.replace("__", "-")
            pairs = _replace(pairs, header, value)
        return pairs

    def _times(self, pairs):
        answered, ended = self.answered_us, self.ended_us
        billsec = (ended - answered) // 1_000_000 if answered and ended else 0
        values = {
            "Event-Date-Timestamp": str(self.clock_us),
            "variable_answer_uepoch": str(answered),
            "variable_end_uepoch": str(ended),
            "Caller-Channel-Answered-Time": str(answered),
            "Caller-Channel-Hangup-Time": str(ended),
            "variable_billsec": str(billsec),
        }
        return [(k, values.get(k, v)) for k, v in pairs]

    def _substitute(self, pairs, case):
        recorded_uuid = rec.find_uuid(case)
        caller_user = self.caller.user if self.caller.entry == "softphone" else self.caller.number
        swaps = [
            (recorded_uuid, self.uuid),
            ("sofia/peer/", f"sofia/{PROFILES[self.caller.entry]}/"),
            ("sofia/internal/", f"sofia/{PROFILES[self.caller.entry]}/"),
            ("+" + rec.RECORDED_CALLER, caller_user),
            (rec.RECORDED_CALLER, caller_user),
            (rec.RECORDED_DIALED, self.dialed),
            ("127.0.0.1:8084 async full", "127.0.0.1:8084 async"),
        ]
        # Two passes through placeholders: a new value may contain a recorded one
        # (B calling has B's number, which is the recorded dialed number).
        marks = [(old, f"\x00{i}\x00", new) for i, (old, new) in enumerate(swaps)]
        out = []
        for key, value in pairs:
            if key == "Core-UUID":
                out.append((key, self.core_uuid))
                continue
            for old, mark, _ in marks:
                value = value.replace(old, mark)
            for _, mark, new in marks:
                value = value.replace(mark, new)
            if self.caller.entry == "softphone":
                value = _swap_user(value, self.caller.user)
            out.append((key, self._other_uuids(key, value)))
        return out

    def _other_uuids(self, key: str, value: str) -> str:
        # The far leg's and the applications' UUIDs: fresh ones, stable within the call.
        if key in ("Other-Leg-Unique-ID", "variable_bridge_uuid", "variable_signal_bond",
                   "variable_originate_signal_bond", "Application-UUID", "variable_bridge_to",
                   "variable_last_bridge_to"):
            return self._uuids.setdefault(value, str(uuidlib.uuid4()))
        return value

    def answer(self) -> None:
        self.answered_us = self.clock_us + 100_000
        self.clock_us = self.answered_us

    def hang_up(self, hold_s: float) -> None:
        base = self.answered_us or self.clock_us
        self.ended_us = base + int(hold_s * 1_000_000)
        self.clock_us = self.ended_us


_OUTER = {"Content-Type", "Reply-Text", "Socket-Mode", "Control"}


def _replace(pairs, header, value):
    if value is None:
        return [(k, v) for k, v in pairs if k != header]
    return [(k, value if k == header else v) for k, v in pairs]


def _swap_user(value: str, user: str) -> str:
    # The recorded directory user 1001 (8a), only where it stands as the user name.
    if value == "1001":
        return user
    return value.replace("1001@", f"{user}@")


def cause_code(cause: str) -> str:
    code = CAUSES.get(cause, 0)
    # FreeSWITCH reports Q.850 16 for its own non-Q.850 cancel code (recording 4_cancel).
    return str(code if code <= 127 else 16)
