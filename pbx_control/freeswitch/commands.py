"""Every event-socket command the controller sends, built from validated values only.

A value reaches a command only when it is configuration checked here, the digits of an E.164
number, a channel UUID or a record id. Anything else, CR or LF above all, raises UnsafeValue:
one newline in an ``execute-app-arg`` would let a caller append headers or whole commands.
"""

from __future__ import annotations

import re

from .. import numbers
from ..causes import Refusal

APPS = frozenset({
    "set", "export", "bridge", "respond", "hangup", "pre_answer", "playback", "record_session",
    "sched_hangup", "answer", "ring_ready",
})
# The variables the controller sets on the caller's leg (privacy: recording 9_privacy_matrix C1).
LEG_VARIABLES = frozenset({
    "effective_callee_id_number", "effective_callee_id_name", "ignore_display_updates",
    "hangup_after_bridge", "continue_on_fail", "pbx_control_record_id",
})
# The variables allowed inside the far leg's {} block.
FAR_VARIABLES = frozenset({
    "origination_caller_id_number", "origination_caller_id_name", "originate_timeout",
})
# FreeSWITCH cause names and codes (switch_types.h switch_call_cause_t), as far as we use them.
CAUSES = {
    "NONE": 0, "UNALLOCATED_NUMBER": 1, "NO_ROUTE_TRANSIT_NET": 2, "NO_ROUTE_DESTINATION": 3,
    "NORMAL_CLEARING": 16, "USER_BUSY": 17, "NO_USER_RESPONSE": 18, "NO_ANSWER": 19,
    "SUBSCRIBER_ABSENT": 20, "CALL_REJECTED": 21, "NUMBER_CHANGED": 22,
    "DESTINATION_OUT_OF_ORDER": 27, "INVALID_NUMBER_FORMAT": 28, "FACILITY_REJECTED": 29,
    "NORMAL_UNSPECIFIED": 31, "NORMAL_CIRCUIT_CONGESTION": 34, "NETWORK_OUT_OF_ORDER": 38,
    "NORMAL_TEMPORARY_FAILURE": 41, "SWITCH_CONGESTION": 42, "REQUESTED_CHAN_UNAVAIL": 44,
    "OUTGOING_CALL_BARRED": 52, "INCOMING_CALL_BARRED": 54, "BEARERCAPABILITY_NOTAUTH": 57,
    "SERVICE_UNAVAILABLE": 63, "SERVICE_NOT_IMPLEMENTED": 79, "INCOMPATIBLE_DESTINATION": 88,
    "RECOVERY_ON_TIMER_EXPIRE": 102, "INTERWORKING": 127, "ORIGINATOR_CANCEL": 487,
    "PICKED_OFF": 499, "LOSE_RACE": 502, "ALLOTTED_TIMEOUT": 602, "MEDIA_TIMEOUT": 604,
    "USER_NOT_REGISTERED": 606, "PROGRESS_TIMEOUT": 607, "GATEWAY_DOWN": 609,
}

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_RECORD_ID = re.compile(r"[0-9a-f]{8,32}")
_PATH = re.compile(r"/?[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
_DIAL = re.compile(r"[A-Za-z0-9_.\-/@:${}]+")
_FAR_VALUE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_SECRET = re.compile(r"[\x21-\x7e]{1,256}")


class UnsafeValue(ValueError):
    """A value that may not be placed into an event-socket command."""


def _check(pattern: re.Pattern, value: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise UnsafeValue(f"{what}: refused ({len(str(value))} characters)")
    return value


def uuid(value: str) -> str:
    return _check(_UUID, value, "channel uuid")


def is_uuid(value: str | None) -> bool:
    return bool(value) and _UUID.fullmatch(value) is not None


def digits(e164: str) -> str:
    """The digits of an E.164 number; anything else is refused."""
    try:
        return numbers.digits(e164)
    except Exception as exc:
        raise UnsafeValue("not an E.164 number") from exc


def name(value: str, what: str = "name") -> str:
    return _check(_NAME, value, what)


# --- plain commands -----------------------------------------------------------------------

CONNECT = b"connect\n\n"
MYEVENTS = b"myevents\n\n"
LINGER = b"linger\n\n"
EXIT = b"exit\n\n"


def auth(password: str) -> bytes:
    return f"auth {_check(_SECRET, password, 'event-socket password')}\n\n".encode()


def events(*names: str) -> bytes:
    return ("event plain " + " ".join(_check(_NAME, n, "event") for n in names) + "\n\n").encode()


def event_filter(header: str, value: str) -> bytes:
    return f"filter {name(header, 'header')} {name(value, 'value')}\n\n".encode()


def api(command: str, *args: str) -> bytes:
    """``api`` with a fixed command name and validated arguments (uuids, fixed words)."""
    parts = [name(command, "api command")] + [_check(_NAME, a, "api argument") for a in args]
    return ("api " + " ".join(parts) + "\n\n").encode()


def execute(app: str, arg: str | None = None) -> bytes:
    """``sendmsg`` execute of an allowed application; the argument was built below."""
    if app not in APPS:
        raise UnsafeValue(f"application {app!r} is not allowed")
    lines = ["sendmsg", "call-command: execute", f"execute-app-name: {app}"]
    if arg is not None:
        if not arg.isprintable() or not arg.isascii():
            raise UnsafeValue("application argument refused")
        lines.append(f"execute-app-arg: {arg}")
    return ("\n".join(lines) + "\n\n").encode()


def hangup(cause: str) -> bytes:
    if cause not in CAUSES:
        raise UnsafeValue("unknown hangup cause")
    return f"sendmsg\ncall-command: hangup\nhangup-cause: {cause}\n\n".encode()


# --- call-level builders ------------------------------------------------------------------


def set_var(variable: str, value: str) -> bytes:
    if variable not in LEG_VARIABLES:
        raise UnsafeValue(f"variable {variable!r} is not allowed")
    return execute("set", f"{variable}={_check(_FAR_VALUE, value, variable)}")


def dial_string(template: str, **values: str) -> str:
    """Fill a configured dial string; every value and the result are checked."""
    for key, value in values.items():
        _check(_NAME, value, key)
    try:
        result = template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise UnsafeValue(f"dial string template: {exc}") from exc
    return _check(_DIAL, result, "dial string")


def bridge(far_variables: dict[str, str], dialstring: str) -> bytes:
    pairs = []
    for key, value in far_variables.items():
        if key not in FAR_VARIABLES:
            raise UnsafeValue(f"far-leg variable {key!r} is not allowed")
        pairs.append(f"{key}={_check(_FAR_VALUE, value, key)}")
    return execute("bridge", "{" + ",".join(pairs) + "}" + _check(_DIAL, dialstring, "dial"))


def record_session(directory: str, record_id: str) -> tuple[bytes, str]:
    path = f"{directory.rstrip('/')}/{_check(_RECORD_ID, record_id, 'record id')}.wav"
    return execute("record_session", _check(_PATH, path, "recording path")), path


def sched_hangup(seconds: int) -> bytes:
    if not isinstance(seconds, int) or not 0 < seconds <= 7 * 24 * 3600:
        raise UnsafeValue("maximum call duration out of range")
    return execute("sched_hangup", f"+{seconds} ALLOTTED_TIMEOUT")


def playback(path: str) -> bytes:
    return execute("playback", _check(_PATH, path, "announcement path"))


def refuse(refusal: Refusal) -> bytes:
    """The command giving the caller the refusal's SIP status AND its Q.850 cause.

    403: ``respond 403`` (recordings 2a, 10a: 403 with Reason cause 21); ``hangup
    CALL_REJECTED`` would give 603 (recording 2b). 404 and 503: ``hangup`` with the cause,
    which mod_sofia's hangup_cause_to_sip turns into 404 / 503 with that exact Q.850 cause
    in Reason (documented mapping, not recorded).
    """
    if refusal.sip_status == 403:
        return execute("respond", "403")
    return hangup(refusal.freeswitch_cause)
