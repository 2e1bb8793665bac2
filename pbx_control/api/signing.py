"""The signature on every webhook delivery, and its check for receivers and tests.

``Pbx-Signature: v1=<hex>`` where hex is HMAC-SHA256 keyed with the customer's signing secret
over ``f"{timestamp}.{body}"``: the ``Pbx-Timestamp`` header (Unix seconds, as text), a dot,
and the raw body bytes. Binding the timestamp into the MAC lets a receiver refuse a replayed
delivery by its age without trusting an unsigned header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Pbx-Signature"
TIMESTAMP_HEADER = "Pbx-Timestamp"
EVENT_ID_HEADER = "Pbx-Event-Id"
ATTEMPT_HEADER = "Pbx-Delivery-Attempt"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, header: str, *, now: float,
           tolerance_s: int = 300) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    try:
        age = abs(now - int(timestamp))
    except ValueError:
        return False
    expected = signature(secret, timestamp, body)
    return age <= tolerance_s and hmac.compare_digest(expected, header or "")
