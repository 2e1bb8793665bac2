"""Who is calling: the trust rules for a channel entering the Stasis application.

The dialplan says how the call came in (``Stasis(pbx-control,carrier)`` or ``...,softphone``,
args[0]); the channel name says which PJSIP endpoint it came through (``PJSIP/<endpoint>-<n>``).
A caller's number is believed only when both agree that it came from a configured carrier
trunk: Asterisk took it from P-Asserted-Identity there (``trust_id_inbound``), and any peer
reaching such an endpoint could assert anything. A softphone is known by its endpoint name,
which PJSIP authenticated, never by the caller id it sends. Everything else is a stranger;
the older recordings' caller ``sipp`` (args = the dialed number) is one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AsteriskSettings

CARRIER = "carrier"
SOFTPHONE = "softphone"
STRANGER = "stranger"
FAR_LEG = "bleg"  # appArgs of the legs this controller creates: "bleg,<caller channel id>"


@dataclass(frozen=True)
class Entry:
    """A new call as read from its StasisStart."""

    kind: str  # carrier | softphone | stranger
    caller_raw: str | None
    dialed: str
    trusted: bool
    username: str | None = None


def endpoint_of(channel_name: str) -> str | None:
    """``PJSIP/carrier-0000007c`` -> ``carrier``; None for any other technology."""
    if not channel_name.startswith("PJSIP/"):
        return None
    endpoint, sep, _ = channel_name[len("PJSIP/"):].rpartition("-")
    return endpoint if sep and endpoint else None


def read_entry(event: dict, settings: AsteriskSettings) -> Entry:
    channel = event.get("channel") or {}
    args = event.get("args") or []
    kind = args[0] if args and isinstance(args[0], str) else ""
    endpoint = endpoint_of(str(channel.get("name", "")))
    caller_raw = (channel.get("caller") or {}).get("number") or None
    dialed = str((channel.get("dialplan") or {}).get("exten") or "")

    if kind == CARRIER and endpoint in settings.carrier_endpoints:
        return Entry(CARRIER, caller_raw, dialed, trusted=True)
    if kind == SOFTPHONE and endpoint and endpoint not in settings.carrier_endpoints:
        return Entry(SOFTPHONE, caller_raw, dialed, trusted=True, username=endpoint)
    return Entry(STRANGER, caller_raw, dialed, trusted=False)


def far_leg_owner(event: dict) -> str | None:
    """The caller channel id of a far leg this controller created, from its Stasis args."""
    args = event.get("args") or []
    if len(args) >= 2 and args[0] == FAR_LEG:
        return str(args[1])
    return None


def far_leg_owner_of_channel(channel: dict) -> str | None:
    """The same, from a listed channel's dialplan (``app_data`` = ``app,bleg,<caller>``)."""
    app_data = str((channel.get("dialplan") or {}).get("app_data") or "")
    parts = app_data.split(",")
    if len(parts) >= 3 and parts[1] == FAR_LEG:
        return parts[2]
    if str(channel.get("id", "")).startswith(FAR_LEG + "-"):
        return ""  # ours, caller unknown (not yet dialled): treat as left alone
    return None
