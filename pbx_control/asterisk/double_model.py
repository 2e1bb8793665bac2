"""The ARI double's resources: channels and bridges in the JSON shape Asterisk 22 sends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime


class RestError(Exception):
    """An ARI error answer: ``status`` with ``{"message": ...}`` as Asterisk sends it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


@dataclass
class Chan:
    id: str
    name: str
    state: str
    caller: dict
    exten: str = "s"
    context: str = "from-carrier"
    app_data: str = ""
    in_stasis: bool = False
    connected: dict = field(default_factory=lambda: {"name": "", "number": ""})
    variables: dict[str, str] = field(default_factory=dict)
    bridge: str | None = None
    # Far legs made by /channels/create
    is_far: bool = False
    endpoint: str = ""
    app_args: str = ""
    dialled: bool = False
    timeout_generation: int = 0
    created: str = field(default_factory=_stamp)

    @property
    def number(self) -> str:
        """The dialed user of a far leg: ``PJSIP/8613800000000@carrier`` -> 8613800000000."""
        return self.endpoint.split("/", 1)[-1].split("@", 1)[0]

    def with_state(self, state: str) -> Chan:
        self.state = state
        return self

    def json(self) -> dict:
        return {
            "id": self.id, "name": self.name, "state": self.state,
            "protocol_id": f"{self.id}@127.0.0.1",
            "caller": dict(self.caller), "connected": dict(self.connected), "accountcode": "",
            "dialplan": {"context": self.context, "exten": self.exten,
                         "priority": 2 if not self.is_far else 1,
                         "app_name": "Stasis" if self.in_stasis else "",
                         "app_data": self.app_data if self.in_stasis else ""},
            "creationtime": self.created, "language": "en",
        }


@dataclass
class Bridge:
    name: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    channels: list[str] = field(default_factory=list)
    created: str = field(default_factory=_stamp)
    recording: str | None = None

    def json(self) -> dict:
        # case10: native_rtp while two legs are in it, simple_bridge otherwise.
        technology = "native_rtp" if len(self.channels) == 2 else "simple_bridge"
        return {"id": self.id, "technology": technology, "bridge_type": "mixing",
                "bridge_class": "stasis", "creator": "Stasis", "name": self.name,
                "channels": list(self.channels), "creationtime": self.created,
                "video_mode": "talker"}


# What the caller receives for DELETE /channels/{id} while not answered. Recorded: 21 -> 403,
# 17 -> 486, 19 -> 480, 1 -> 404, 34 (reason=congestion) -> 503, no reason (16) -> 603
# (case2a-2h). The rest follows chan_pjsip's hangup_cause2sip table, where a cause it does not
# list (16 and 41 among them) gives 603.
_SIP_FOR_Q850 = {1: 404, 2: 404, 3: 404, 17: 486, 18: 408, 19: 480, 20: 480, 21: 403, 22: 410,
                 27: 502, 28: 484, 29: 501, 31: 480, 34: 503, 42: 503}
_Q850_FOR_REASON = {"rejected": 21, "busy": 17, "congestion": 34, "no_answer": 19,
                    "unallocated": 1, "normal": 16}


def sip_answer_for(params: dict) -> dict:
    if "reason_code" in params:
        q850 = int(params["reason_code"])
    else:
        q850 = _Q850_FOR_REASON.get(params.get("reason", ""), 16)
    return {"status": _SIP_FOR_Q850.get(q850, 603), "q850": q850}
