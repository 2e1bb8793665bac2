"""How a FreeSWITCH call ended, in the terms both PBXs share (causes.Outcome, HangupBy).

Read from the caller's leg hangup event, as the recordings show it:
- ``variable_sip_hangup_disposition``: ``recv_bye`` / ``recv_cancel`` when the caller ended
  it (1_answered, 4_cancel), ``send_bye`` when FreeSWITCH sent the BYE: after the far side
  hung up (1b, 5c: ``bridge_hangup_cause`` / ``last_bridge_hangup_cause`` set) or on the
  controller's own hangup; ``send_refuse`` for a refusal or a failed bridge (2a, 3_busy).
- ``variable_originate_disposition`` / ``Hangup-Cause``: USER_BUSY, NO_ANSWER,
  ORIGINATOR_CANCEL... (3b, 4_cancel); ALLOTTED_TIMEOUT after the scheduled hangup.
- ``variable_hangup_cause_q850`` (CHANNEL_HANGUP_COMPLETE only) is FreeSWITCH's own Q.850
  number: 16 for ORIGINATOR_CANCEL, whose FreeSWITCH code is 487.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ..causes import HangupBy, Outcome, classify_unanswered
from .commands import CAUSES
from .protocol import Event

_CALLER_DISPOSITIONS = ("recv_bye", "recv_cancel", "recv_refuse")


@dataclass(frozen=True)
class Ending:
    outcome: Outcome
    hangup_by: HangupBy
    sip_status: int | None
    q850_cause: int | None
    pbx_cause: str
    at: datetime | None = None

    def fields(self) -> dict:
        return {
            "outcome": self.outcome.value, "hangup_by": self.hangup_by.value,
            "sip_status": self.sip_status, "q850_cause": self.q850_cause,
            "pbx_cause": self.pbx_cause,
        }


def event_time(event: Event, variable: str | None = None) -> datetime | None:
    """A time from the event: a ``variable_*_uepoch`` when given and set, else the event's."""
    raw = event.get(variable) if variable else None
    if not raw or raw == "0":
        raw = event.get("Event-Date-Timestamp")
    if not raw or not raw.isdigit() or raw == "0":
        return None
    return datetime.fromtimestamp(int(raw) / 1_000_000, tz=UTC)


def pbx_cause(cause: str) -> str:
    code = CAUSES.get(cause)
    return f"{cause}/{code}" if code is not None else cause


def q850(event: Event, cause: str) -> int | None:
    raw = event.get("variable_hangup_cause_q850")
    if raw and raw.isdigit():
        return int(raw)
    code = CAUSES.get(cause)
    return code if code is not None and 0 < code <= 127 else None


def was_answered(event: Event) -> bool:
    answered = event.get("variable_answer_uepoch") or event.get(
        "Caller-Channel-Answered-Time")
    return bool(answered and answered != "0")


def ending(event: Event, *, answered: bool, controller_hangup: bool = False) -> Ending:
    """The end of a call that was bridged (or tried to be) from its hangup event."""
    cause = event.get("Hangup-Cause") or event.get("variable_hangup_cause") or "NONE"
    disposition = event.get("variable_sip_hangup_disposition", "")
    q = q850(event, cause)
    at = event_time(event, "variable_end_uepoch")

    if answered or was_answered(event):
        by = _answered_by(event, cause, disposition, controller_hangup)
        return Ending(Outcome.ANSWERED, by, 200, q, pbx_cause(cause), at)

    cancelled = cause == "ORIGINATOR_CANCEL" or disposition == "recv_cancel"
    failed_cause = _failed_cause(event, cause)
    outcome, status = classify_unanswered(CAUSES.get(failed_cause), cancelled)
    if cancelled or disposition in _CALLER_DISPOSITIONS:
        by = HangupBy.CALLER
    elif outcome == Outcome.BUSY:
        by = HangupBy.CALLEE
    else:
        by = HangupBy.PBX
    return Ending(outcome, by, status, q, pbx_cause(cause), at)


def _answered_by(event: Event, cause: str, disposition: str, controller: bool) -> HangupBy:
    if disposition in _CALLER_DISPOSITIONS:
        return HangupBy.CALLER
    if cause == "ALLOTTED_TIMEOUT":
        return HangupBy.PBX
    if controller:
        return HangupBy.CONTROLLER
    if event.get("variable_bridge_hangup_cause") or event.get("variable_last_bridge_hangup_cause"):
        return HangupBy.CALLEE
    return HangupBy.PBX


def _failed_cause(event: Event, cause: str) -> str:
    """Why the far leg failed: the originate result beats the caller leg's own cause."""
    for header in ("variable_originate_failed_cause", "variable_last_bridge_hangup_cause"):
        value = event.get(header)
        if value and value in CAUSES:
            return value
    disposition = event.get("variable_originate_disposition")
    if disposition in CAUSES and disposition not in ("NONE",):
        return disposition
    return cause


def bridge_failure(event: Event) -> str | None:
    """The cause of a failed bridge from its CHANNEL_EXECUTE_COMPLETE (recording 3b), or
    None when the bridge succeeded. The controller hangs the caller up with it, so the
    caller gets the matching status (USER_BUSY: 486, NO_ANSWER: 480)."""
    disposition = event.get("variable_originate_disposition") or ""
    if disposition == "SUCCESS":
        return None
    for header in ("variable_originate_disposition", "variable_originate_failed_cause",
                   "variable_last_bridge_hangup_cause"):
        cause = event.get(header)
        if cause in CAUSES and cause != "NONE":
            return cause
    return "NORMAL_TEMPORARY_FAILURE"
