"""One cause table for both PBXs: how a refusal is signalled, and how an end is classified.

A refusal reaches the caller as a SIP status with a Q.850 cause in its Reason header; carriers
act on it (503 makes them fail over to another route). An end is read back into an outcome
common to FreeSWITCH and Asterisk, so call records of the same scenario match across PBXs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .routing import Reason


class Outcome(StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CANCELLED = "cancelled"
    REFUSED = "refused"
    FAILED = "failed"


class HangupBy(StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    CONTROLLER = "controller"
    PBX = "pbx"


@dataclass(frozen=True)
class Refusal:
    sip_status: int
    q850: int
    freeswitch_cause: str  # the name FreeSWITCH's hangup/respond takes for this Q.850 cause


FORBIDDEN = Refusal(403, 21, "CALL_REJECTED")
UNKNOWN = Refusal(404, 1, "UNALLOCATED_NUMBER")
UNAVAILABLE = Refusal(503, 41, "NORMAL_TEMPORARY_FAILURE")


# chan_pjsip turns a hangup cause into a SIP answer with its own table (hangup_cause2sip), which
# has no entry for 41: an unmapped cause goes out as 603, as recorded for cause 16 (case2d).
# 34 (congestion) is the cause it answers 503 for (recorded in case2c), so Asterisk refuses an
# unavailable decision with 34. The call record keeps the table's Q.850 cause, so records of
# both PBXs match; the cause Asterisk sent is kept as the PBX's raw cause.
_ASTERISK_HANGUP_CAUSE = {41: 34}


def asterisk_hangup_cause(q850: int | None) -> int | None:
    """The ``reason_code`` for ARI's DELETE /channels that gives the table's SIP status."""
    if q850 is None:
        return None
    return _ASTERISK_HANGUP_CAUSE.get(q850, q850)


def refusal_for(reason: Reason) -> Refusal:
    """403 for every policy refusal, 404 for a number not (or no longer) in the pool, 503 when
    no decision could be made, so that the carrier can try another route."""
    if reason == Reason.UNKNOWN_NUMBER:
        return UNKNOWN
    if reason == Reason.UNAVAILABLE:
        return UNAVAILABLE
    return FORBIDDEN


# Q.850 causes of a far leg that never answered, and the outcome they mean.
_UNANSWERED = {
    17: (Outcome.BUSY, 486),
    18: (Outcome.NO_ANSWER, 480),
    19: (Outcome.NO_ANSWER, 480),
    21: (Outcome.FAILED, 403),
    1: (Outcome.FAILED, 404),
    3: (Outcome.FAILED, 404),
    20: (Outcome.FAILED, 480),
    27: (Outcome.FAILED, 502),
    34: (Outcome.FAILED, 503),
    38: (Outcome.FAILED, 503),
    41: (Outcome.FAILED, 503),
    42: (Outcome.FAILED, 503),
    127: (Outcome.FAILED, 500),
}

ORIGINATOR_CANCEL = 487  # FreeSWITCH's own code for a caller's CANCEL (not Q.850)


def classify_unanswered(q850: int | None, cancelled_by_caller: bool) -> tuple[Outcome, int | None]:
    """Outcome and SIP status of a call that ended before the far side answered."""
    if cancelled_by_caller:
        return Outcome.CANCELLED, 487
    if q850 is None:
        return Outcome.FAILED, None
    return _UNANSWERED.get(q850, (Outcome.FAILED, None))
