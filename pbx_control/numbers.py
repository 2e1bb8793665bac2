"""Phone numbers: parsing to E.164 with phonenumbers, and masking for logs and errors."""

from __future__ import annotations

import functools
import logging
import re

import phonenumbers

from .errors import InvalidInput

logger = logging.getLogger(__name__)

_WITHHELD = {"", "anonymous", "unknown", "private", "restricted", "unavailable", "0000000000"}
_DIGITS = re.compile(r"\d+")
# Digits and the punctuation people write numbers with. Letters (vanity numbers, 'ext'),
# ';ext=', '#' or ',' would make phonenumbers drop or reinterpret text silently.
_WRITTEN = re.compile(r"[0-9 +\-().]+")


def mask(value: str | None) -> str:
    """Hide the middle digits: '+8613800001234' -> '+86138****1234'.

    Used for every number that reaches a log line, an error message or a metric label. Short
    values (service codes, user names) keep only their ends so they stay recognisable.
    Control characters are escaped as Python writes them ('\\n').
    """
    if value is None:
        return "-"
    text = str(value)
    if not text.isprintable():
        # A line break from the input must not split an error or forge a log line.
        text = repr(text)[1:-1]
    if len(text) <= 4:
        return "*" * len(text)
    if len(text) <= 7:
        return text[:1] + "*" * (len(text) - 3) + text[-2:]
    keep_head = min(6, len(text) - 8) if len(text) > 11 else 3
    keep_head = max(keep_head, 3)
    return text[:keep_head] + "*" * (len(text) - keep_head - 4) + text[-4:]


def parse(value: str, field: str = "number", region: str = "CN") -> str:
    """Return the E.164 form of ``value`` or raise InvalidInput naming the field.

    National forms are read under ``region``: '13800000000', '013800000000',
    '8613800000000' and '+86 138 0000 0000' all give '+8613800000000'. A number is accepted
    when it is *possible* (right length for its country), not only when it is in a known
    range: carriers open new ranges before the library learns of them. Only digits, spaces
    and ``+ - ( ) .`` are allowed: a letter or an extension marker refuses the whole input.
    """
    text = (value or "").strip()
    e164, problem = _e164(text, region or "")
    if e164 is None:
        raise InvalidInput(f"{field}: {problem}: {mask(text)}", field=field)
    return e164


@functools.lru_cache(maxsize=32768)
def _e164(text: str, region: str) -> tuple[str | None, str]:
    """``parse`` without the field: (E.164, "") or (None, what is wrong). Cached because
    every call parses X and its caller, and the same numbers come back all day."""
    if not text or len(text) > 32 or not _WRITTEN.fullmatch(text):
        return None, "not a phone number"

    candidate = text
    if not candidate.startswith("+") and region:
        country = phonenumbers.country_code_for_region(region.upper())
        digits = re.sub(r"[\s\-().]", "", candidate)
        if digits.isdigit() and country and digits.startswith(str(country)):
            # '8613800000000' is an international number written without its '+'.
            stripped = digits[len(str(country)):]
            if len(stripped) >= 7:
                candidate = "+" + digits
    try:
        parsed = phonenumbers.parse(candidate, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        return None, "not a phone number"

    # IS_POSSIBLE_LOCAL_ONLY ('12345' in CN) is a number without its area code: not one a
    # carrier can route to, so it is refused with the rest.
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None, "not a possible number"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), ""


def parse_caller(value: str | None, region: str = "CN") -> str | None:
    """A caller id as the PBX gave it, in E.164, or None when it is withheld or unusable.

    A caller with no usable number is a stranger: routing refuses it (reason ``withheld``)
    wherever a binding would otherwise take any caller, unless the binding allows it.
    """
    text = (value or "").strip()
    if text.lower() in _WITHHELD or not any(ch.isdigit() for ch in text):
        return None
    try:
        return parse(text, "caller", region)
    except InvalidInput:
        return None


def digits(e164: str) -> str:
    """The digits of an E.164 number, the only form of a number placed into PBX commands."""
    if not e164.startswith("+") or not e164[1:].isdigit():
        raise InvalidInput(f"not an E.164 number: {mask(e164)}", field="number")
    return e164[1:]


def expand_range(first: str, last: str, region: str = "CN", limit: int = 100_000) -> list[str]:
    """All numbers from ``first`` to ``last`` inclusive, both parsed, same length."""
    a, b = parse(first, "first", region), parse(last, "last", region)
    if len(a) != len(b):
        raise InvalidInput("range ends differ in length", field="range")
    lo, hi = int(a[1:]), int(b[1:])
    if hi < lo:
        raise InvalidInput("range end is below its start", field="range")
    if hi - lo + 1 > limit:
        raise InvalidInput(f"range holds more than {limit} numbers", field="range")
    return ["+" + str(n).zfill(len(a) - 1) for n in range(lo, hi + 1)]


def is_short_code(value: str | None) -> bool:
    """Emergency and service codes ('110', '120') are dialed as short digit strings."""
    return bool(value) and value.isdigit() and len(value) <= 6
