"""Who is calling whom: the channel data FreeSWITCH sends on ``connect``, read under the
trust rules of the PBX contract (docs: pbx_contract, FreeSWITCH section).

A number in the channel data is only as trustworthy as the peer that sent the INVITE: any
peer that reaches the carrier profile can assert any number in P-Asserted-Identity, which
FreeSWITCH copies into ``Caller-Caller-ID-Number`` (recording 10a_trunk_pai). So the caller
is believed only on the carrier profile, from a configured carrier address, with the entry
variable the committed dialplan sets. A softphone is known by its authenticated directory
user (recording 8a), never by the From it sends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from ..config import FreeSwitchSettings
from .commands import is_uuid
from .protocol import ProtocolError

logger = logging.getLogger(__name__)


class Entry(StrEnum):
    CARRIER = "carrier"  # a trusted trunk: the caller number is believed
    SOFTPHONE = "softphone"  # an authenticated directory user placing its own call
    UNTRUSTED = "untrusted"  # reached the carrier side but not from a configured trunk
    STRANGER = "stranger"  # softphone side without authentication: refused


@dataclass(frozen=True)
class ChannelInfo:
    uuid: str
    entry: Entry
    caller_raw: str | None
    dialed_raw: str
    username: str | None = None

    @property
    def outbound(self) -> bool:
        return self.entry in (Entry.SOFTPHONE, Entry.STRANGER)


def read_channel(data: dict[str, str], settings: FreeSwitchSettings) -> ChannelInfo:
    """The call as the controller may believe it; ProtocolError if the data is unusable."""
    uuid = data.get("Unique-ID") or data.get("variable_uuid") or ""
    if not is_uuid(uuid):
        raise ProtocolError("channel data without a valid Unique-ID")
    dialed = (data.get("Caller-Destination-Number") or "").strip()
    if not dialed or len(dialed) > 64 or not dialed.isprintable():
        raise ProtocolError("channel data without a usable destination number")

    channel = data.get("Channel-Name", "")
    entry = data.get("variable_pbx_control_entry", "")
    if channel.startswith(f"sofia/{settings.softphone_profile}/") or entry == "softphone":
        return _softphone(uuid, dialed, channel, entry, data, settings)
    trusted = (
        channel.startswith(f"sofia/{settings.carrier_profile}/")
        and entry == "carrier"
        and _source(data) in settings.carrier_addresses
    )
    caller = data.get("Caller-Caller-ID-Number")
    return ChannelInfo(uuid, Entry.CARRIER if trusted else Entry.UNTRUSTED, caller, dialed)


def _softphone(uuid, dialed, channel, entry, data, settings) -> ChannelInfo:
    authorized = (
        channel.startswith(f"sofia/{settings.softphone_profile}/")
        and entry == "softphone"
        and data.get("variable_sip_authorized") == "true"
    )
    user = data.get("variable_sip_auth_username") or data.get("variable_user_name")
    if not authorized or not user:
        return ChannelInfo(uuid, Entry.STRANGER, None, dialed)
    return ChannelInfo(uuid, Entry.SOFTPHONE, None, dialed, username=user)


def _source(data: dict[str, str]) -> str:
    return data.get("variable_sip_network_ip") or data.get("Channel-Network-Addr") or ""
