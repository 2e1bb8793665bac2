"""A thin typed ARI client: REST over httpx, events over one WebSocket (websockets).

ARI HTTP failures are mapped here, once, to a small hierarchy: ``AriNotFound`` (the channel
or bridge is gone), ``AriConflict`` (Asterisk refuses the request in the resource's current
state: 409/422), ``AriUnavailable`` (Asterisk unreachable or failing: connection errors, 5xx)
with ``AriTimeout`` under it, and ``AriRequestError`` for the rest of the 4xx. Every request
carries a timeout, so no call task can wait on Asterisk for ever. See docs/asterisk-client.md
for why this is not ari-py, ari-client or asyncari.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import websockets

logger = logging.getLogger(__name__)
# httpx logs every request line at INFO, query string included: the far leg's endpoint there
# carries the dialed number, and no log may print a full number.
logging.getLogger("httpx").setLevel(logging.WARNING)

Json = dict[str, Any]


class AriError(Exception):
    """An ARI request failed; ``status`` is the HTTP status (None without an answer)."""

    def __init__(self, message: str, status: int | None = None, method: str = "", path: str = ""):
        answer = message if status is None else f"{status} {message}"
        super().__init__(f"{method} {path}: {answer}".strip())
        self.status = status
        self.message = message
        self.method = method
        self.path = path


class AriNotFound(AriError):
    """The channel, bridge or application does not exist (any more): an ordinary outcome."""


class AriConflict(AriError):
    """Asterisk refused the request in the resource's current state (409, 422)."""


class AriRequestError(AriError):
    """Asterisk rejected the request itself (400, 401, 403 ...): a bug or a misconfiguration."""


class AriUnavailable(AriError):
    """Asterisk did not answer usefully: connection refused or dropped, 5xx."""


class AriTimeout(AriUnavailable):
    """Asterisk did not answer within the request timeout."""


def _error_for(status: int, message: str, method: str, path: str) -> AriError:
    if status == 404:
        return AriNotFound(message, status, method, path)
    if status in (409, 422):
        return AriConflict(message, status, method, path)
    if status >= 500:
        return AriUnavailable(message, status, method, path)
    return AriRequestError(message, status, method, path)


class AriClient:
    """REST calls of one ARI application. ``close()`` (or ``async with``) releases the pool."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        app: str,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.base = url.rstrip("/")
        self.app = app
        self._auth = (username, password)
        self._http = httpx.AsyncClient(
            base_url=self.base + "/ari",
            auth=self._auth,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
        )

    async def __aenter__(self) -> AriClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Json | None = None,
    ) -> Any:
        """One ARI request; the decoded JSON answer, or None for 204."""
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http.request(method, path, params=clean, json=body)
        except httpx.TimeoutException as exc:
            raise AriTimeout("no answer in time", None, method, path) from exc
        except httpx.TransportError as exc:
            raise AriUnavailable(_reason(exc), None, method, path) from exc

        if response.status_code >= 400:
            raise _error_for(response.status_code, _message(response), method, path)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # Channels

    async def ring(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/ring")

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/answer")

    async def hangup(self, channel_id: str, reason_code: int | None = None) -> None:
        """DELETE the channel; ``reason_code`` is the Q.850 cause the caller's answer carries."""
        await self.request("DELETE", f"/channels/{channel_id}", {"reason_code": reason_code})

    async def create_channel(
        self, endpoint: str, channel_id: str, app_args: str, originator: str | None,
        variables: Mapping[str, str],
    ) -> Json:
        """``/channels/create``: the leg enters Stasis only when dialled, still Down (W2v)."""
        params = {"endpoint": endpoint, "app": self.app, "appArgs": app_args,
                  "channelId": channel_id, "originator": originator}
        return await self.request("POST", "/channels/create", params, {"variables": variables})

    async def dial(self, channel_id: str, timeout_s: int) -> None:
        # Never pass ``caller``: Asterisk then copies the caller's identity into the far
        # leg's connected line and A's number goes out in the first INVITE (case12 W1).
        await self.request("POST", f"/channels/{channel_id}/dial", {"timeout": timeout_s})

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        params = {"variable": name, "value": value}
        await self.request("POST", f"/channels/{channel_id}/variable", params)

    async def play(self, channel_id: str, media: str, playback_id: str) -> Json:
        params = {"media": media, "playbackId": playback_id}
        return await self.request("POST", f"/channels/{channel_id}/play", params)

    async def list_channels(self) -> list[Json]:
        return await self.request("GET", "/channels") or []

    # Bridges

    async def create_bridge(self, name: str) -> Json:
        return await self.request("POST", "/bridges", {"type": "mixing", "name": name})

    async def add_channel(self, bridge_id: str, channel_id: str) -> None:
        await self.request("POST", f"/bridges/{bridge_id}/addChannel", {"channel": channel_id})

    async def record_bridge(self, bridge_id: str, name: str, fmt: str = "wav") -> Json:
        params = {"name": name, "format": fmt, "ifExists": "fail"}
        return await self.request("POST", f"/bridges/{bridge_id}/record", params)

    async def delete_bridge(self, bridge_id: str) -> None:
        await self.request("DELETE", f"/bridges/{bridge_id}")

    async def list_bridges(self) -> list[Json]:
        return await self.request("GET", "/bridges") or []

    async def application(self) -> Json:
        return await self.request("GET", f"/applications/{self.app}")

    # Events

    def events_url(self) -> str:
        scheme = "wss" if self.base.startswith("https") else "ws"
        host = self.base.split("://", 1)[-1]
        query = urlencode({"app": self.app, "subscribeAll": "false"})
        return f"{scheme}://{host}/ari/events?{query}"

    @asynccontextmanager
    async def events(self, open_timeout_s: float = 5.0) -> AsyncIterator[AsyncIterator[Json]]:
        """Open the event WebSocket; yields an iterator of decoded events until it closes.

        Asterisk registers the application while this socket is open; it drops (does not
        queue) the events of any gap, so the caller must reconcile after each open.
        """
        token = base64.b64encode(":".join(self._auth).encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        try:
            socket = await websockets.connect(
                self.events_url(), additional_headers=headers, open_timeout=open_timeout_s,
                ping_interval=10, ping_timeout=10, max_size=2**22,
            )
        except websockets.InvalidStatus as exc:
            raise _refusal(exc.response.status_code, self.base) from exc
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            raise AriUnavailable(f"cannot connect to ARI at {self.base}: {_reason(exc)}",
                                 None, "GET", "/events") from exc
        try:
            yield _decode(socket)
        finally:
            await socket.close()


def _refusal(status: int, base: str) -> AriError:
    """Asterisk answered the event WebSocket's upgrade with an HTTP error."""
    if status in (401, 403):
        message = (f"ARI at {base} refused the credentials (HTTP {status}): check "
                   "PBX_CONTROL_ASTERISK_USERNAME/PASSWORD and ari.conf")
        return AriRequestError(message, None, "GET", "/events")
    return _error_for(status, f"ARI at {base} refused the event WebSocket (HTTP {status})",
                      "GET", "/events")


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in words (the exception's own text is often empty)."""
    for error in _chain(exc):  # httpx wraps httpcore's error, which wraps the OSError
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, socket.gaierror):
            return "host name not found"
        if isinstance(error, TimeoutError | httpx.TimeoutException):
            return "no answer in time"
        if isinstance(error, websockets.InvalidURI):
            return "not a valid URL"
    if "refused" in str(exc).lower():  # asyncio's "Multiple exceptions: ..." of each address
        return "connection refused"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def _chain(exc: BaseException | None, depth: int = 4) -> list[BaseException]:
    errors = []
    while exc is not None and len(errors) < depth:
        errors.append(exc)
        exc = exc.__cause__ or exc.__context__
    return errors


async def _decode(socket) -> AsyncIterator[Json]:
    try:
        async for frame in socket:
            try:
                event = json.loads(frame)
            except ValueError:
                logger.warning("ARI sent a frame that is not JSON (%d bytes); skipped", len(frame))
                continue
            if isinstance(event, dict):
                yield event
    except websockets.ConnectionClosed as exc:
        logger.info("ARI event socket closed: %s", exc)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return response.reason_phrase
