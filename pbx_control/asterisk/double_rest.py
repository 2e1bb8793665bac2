"""The ARI double's REST handlers: each answers as Asterisk 22.10.1 did in the recordings.

A handler takes the double, the query parameters, the JSON body and the path groups, and
returns ``(status, body)`` or raises ``RestError``.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from .double_model import Bridge, Chan, RestError

if TYPE_CHECKING:
    from .double import AriDouble

_ID = r"([^/]+)"


def _channel(ari: AriDouble, channel_id: str) -> Chan:
    chan = ari.channels.get(channel_id)
    if chan is None:
        raise RestError(404, "Channel not found")
    return chan


def _bridge(ari: AriDouble, bridge_id: str) -> Bridge:
    bridge = ari.bridges.get(bridge_id)
    if bridge is None:
        raise RestError(404, "Bridge not found")
    return bridge


def list_channels(ari, params, body):
    return 200, [c.json() for c in ari.channels.values()]


def get_channel(ari, params, body, channel_id):
    return 200, _channel(ari, channel_id).json()


def delete_channel(ari, params, body, channel_id):
    ari.hangup_requested(_channel(ari, channel_id), params)
    return 204, None


def ring(ari, params, body, channel_id):
    _channel(ari, channel_id)
    return 204, None


def answer(ari, params, body, channel_id):
    chan = _channel(ari, channel_id)
    if chan.state != "Up":
        ari.emit("ChannelStateChange", chan.with_state("Up"))
    return 204, None


def set_variable(ari, params, body, channel_id):
    chan = _channel(ari, channel_id)
    if not params.get("variable"):
        raise RestError(400, "Variable name is required")
    chan.variables[params["variable"]] = params.get("value", "")
    if params["variable"] == "TIMEOUT(absolute)":
        ari.spawn(ari.absolute_timeout(chan, params.get("value", "")))
    return 204, None


def play(ari, params, body, channel_id):
    """Not recorded: media to a ringing (not answered) channel follows the ARI docs, which
    accept it; Asterisk then sends the audio as early media."""
    chan = _channel(ari, channel_id)
    if not chan.in_stasis:
        raise RestError(409, "Channel not in a Stasis application")
    playback_id = params.get("playbackId") or str(uuid.uuid4())
    playback = {"id": playback_id, "media_uri": params.get("media", ""),
                "target_uri": f"channel:{chan.id}", "language": "en", "state": "queued"}
    ari.emit("PlaybackStarted", None, playback=dict(playback, state="playing"))
    ari.emit("PlaybackFinished", None, playback=dict(playback, state="done"))
    return 201, playback


def create_channel(ari, params, body, *_):
    """W2v: the created leg is Down, carries the CALLERID/CONNECTEDLINE of the body's
    variables, and emits ChannelCallerId / ChannelConnectedLine before it is dialled."""
    endpoint, app = params.get("endpoint", ""), params.get("app", "")
    if not endpoint.startswith("PJSIP/") or not app:
        raise RestError(400, "Endpoint and app are required")
    channel_id = params.get("channelId") or str(uuid.uuid4())
    if channel_id in ari.channels:
        raise RestError(409, "Channel with given unique ID already exists")
    variables = (body or {}).get("variables", {}) if isinstance(body, dict) else {}

    trunk = endpoint.split("@", 1)[1] if "@" in endpoint else endpoint.split("/", 1)[1]
    chan = Chan(id=channel_id, name=f"PJSIP/{trunk}-{len(ari.requests):08x}", state="Down",
                caller={"name": "", "number": ""}, context="from-carrier", is_far=True,
                endpoint=endpoint, app_args=params.get("appArgs", ""),
                variables=dict(variables))
    ari.channels[chan.id] = chan
    _apply_identity(ari, chan, variables)
    return 200, chan.json()


def _apply_identity(ari, chan: Chan, variables: dict) -> None:
    for name, value in variables.items():
        part = name[name.find("(") + 1:-1] if "(" in name else ""
        if name.startswith("CALLERID("):
            chan.caller[part] = str(value)
            ari.emit("ChannelCallerId", chan, caller_presentation=0,
                     caller_presentation_txt="Presentation Allowed, Not Screened")
        elif name.startswith("CONNECTEDLINE("):
            chan.connected[part] = str(value)
            ari.emit("ChannelConnectedLine", chan)


def dial(ari, params, body, channel_id):
    """W2v: StasisStart of the created leg (still Down) arrives before the 204."""
    chan = _channel(ari, channel_id)
    if not chan.is_far or chan.dialled:
        raise RestError(409, "Channel is not in a state to be dialed")
    chan.dialled = True
    chan.in_stasis = True
    chan.app_data = f"{ari.app},{chan.app_args}"
    args = chan.app_args.split(",") if chan.app_args else []
    ari.emit("StasisStart", chan, args=args)
    ari.spawn(ari.run_far(chan, float(params.get("timeout", 0) or 0)))
    return 204, None


def list_bridges(ari, params, body):
    return 200, [b.json() for b in ari.bridges.values()]


def create_bridge(ari, params, body):
    if params.get("type", "mixing") not in ("mixing", "holding", "dtmf_events", "proxy_media"):
        raise RestError(400, "Invalid bridge type")
    bridge = Bridge(name=params.get("name", ""))
    ari.bridges[bridge.id] = bridge
    return 200, bridge.json()


def delete_bridge(ari, params, body, bridge_id):
    bridge = ari.bridges.pop(bridge_id, None)
    if bridge is None:
        raise RestError(404, "Bridge not found")
    for channel_id in bridge.channels:
        if channel_id in ari.channels:
            ari.channels[channel_id].bridge = None
    ari.emit("BridgeDestroyed", None, bridge=bridge.json())
    return 204, None


def add_channel(ari, params, body, bridge_id):
    """Errors as res/ari/resource_bridges.c: 400 for an unknown channel, 422 for one not in
    Stasis. A caller not yet answered is accepted (not recorded; the ARI docs set no state
    condition), which lets ringback and early media of the far leg reach it."""
    bridge = _bridge(ari, bridge_id)
    ids = [c for c in params.get("channel", "").split(",") if c]
    if not ids:
        raise RestError(400, "Channel parameter is required")
    for channel_id in ids:
        chan = ari.channels.get(channel_id)
        if chan is None:
            raise RestError(400, "Channel not found")
        if not chan.in_stasis:
            raise RestError(422, "Channel not in Stasis application")
    for channel_id in ids:
        chan = ari.channels[channel_id]
        bridge.channels.append(chan.id)
        chan.bridge = bridge.id
        ari.emit("ChannelEnteredBridge", chan, bridge=bridge.json())
    return 204, None


def record_bridge(ari, params, body, bridge_id):
    """Not recorded: follows the ARI docs (201 with a LiveRecording; 409 when the name is
    taken and ifExists=fail; 422 for a bad format)."""
    bridge = _bridge(ari, bridge_id)
    name, fmt = params.get("name", ""), params.get("format", "")
    if not name or not fmt:
        raise RestError(400, "Recording name and format are required")
    if fmt not in ("wav", "gsm", "ulaw", "alaw", "sln", "g722", "wav49"):
        raise RestError(422, "Recording format not supported")
    if bridge.recording == name:
        raise RestError(409, "Recording with that name already in progress")
    bridge.recording = name
    recording = {"name": name, "format": fmt, "state": "queued",
                 "target_uri": f"bridge:{bridge.id}"}
    ari.emit("RecordingStarted", None, recording=dict(recording, state="recording"))
    return 201, recording


def get_application(ari, params, body, app):
    # case5a: the application stays listed (with its channels) while the WebSocket is away.
    if app != ari.app:
        raise RestError(404, "Application not found")
    return 200, {"name": app, "channel_ids": [c.id for c in ari.channels.values() if c.in_stasis],
                 "bridge_ids": list(ari.bridges), "endpoint_ids": [], "device_names": [],
                 "events_allowed": [], "events_disallowed": []}


def _routes(*rows: tuple[str, str, Any]) -> list[tuple[str, re.Pattern, Any]]:
    return [(method, re.compile("/ari" + path), handler) for method, path, handler in rows]


ROUTES = _routes(
    ("GET", "/channels", list_channels),
    ("POST", "/channels/create", create_channel),
    ("GET", f"/channels/{_ID}", get_channel),
    ("DELETE", f"/channels/{_ID}", delete_channel),
    ("POST", f"/channels/{_ID}/ring", ring),
    ("POST", f"/channels/{_ID}/answer", answer),
    ("POST", f"/channels/{_ID}/variable", set_variable),
    ("POST", f"/channels/{_ID}/play", play),
    ("POST", f"/channels/{_ID}/dial", dial),
    ("GET", "/bridges", list_bridges),
    ("POST", "/bridges", create_bridge),
    ("DELETE", f"/bridges/{_ID}", delete_bridge),
    ("POST", f"/bridges/{_ID}/addChannel", add_channel),
    ("POST", f"/bridges/{_ID}/record", record_bridge),
    ("GET", f"/applications/{_ID}", get_application),
)
