"""Where a webhook may point: the SSRF policy, checked at registration and at every delivery.

A webhook URL must be https (plain http only when ``api.webhook_allow_http``) and every
address its host resolves to must be public: loopback, private, link-local, multicast,
reserved and unspecified addresses are refused unless they fall inside
``api.webhook_allow_networks``. The delivery then connects to the very address that passed
(``Target.address``): resolving twice would let a DNS answer that changes in between (DNS
rebinding) steer the request into the PBX's event socket or ARI.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from ..config import ApiSettings, ConfigError
from ..errors import PbxControlError

logger = logging.getLogger(__name__)

# host, port -> the addresses it resolves to (text). Injected so tests can answer anything.
Resolver = Callable[[str, int], list[str]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookRefused(PbxControlError):
    code = "webhook_refused"
    http_status = 422

    def __init__(self, message: str):
        super().__init__(message, field="url")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the one address the request goes to."""

    url: httpx.URL
    address: str

    @property
    def host(self) -> str:
        return self.url.host

    def request_url(self) -> httpx.URL:
        """The URL with the checked address in place of the host name."""
        return self.url.copy_with(host=self.address)

    def host_header(self) -> str:
        default = 443 if self.url.scheme == "https" else 80
        port = self.url.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if port in (None, default) else f"{host}:{port}"


class WebhookPolicy:
    """The operator's rules for webhook URLs; ``check`` applies them to one URL."""

    def __init__(self, settings: ApiSettings, resolver: Resolver = system_resolver):
        self.allow_http = settings.webhook_allow_http
        self.allowed = _networks(settings.webhook_allow_networks)
        self.resolver = resolver

    def parse(self, text: str) -> httpx.URL:
        """The URL's form alone: scheme, host, no credentials."""
        try:
            url = httpx.URL(text)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise WebhookRefused("url: not a URL") from None
        schemes = ("https", "http") if self.allow_http else ("https",)
        if url.scheme not in schemes:
            raise WebhookRefused(f"url: the scheme must be {' or '.join(schemes)}")
        if not url.host:
            raise WebhookRefused("url: a host is required")
        if url.userinfo:
            raise WebhookRefused("url: credentials in the URL are not accepted")
        if url.fragment:
            raise WebhookRefused("url: a fragment is not accepted")
        return url

    def check(self, text: str) -> Target:
        """Parse, resolve once and check every address; the first one is used."""
        url = self.parse(text)
        port = url.port or (443 if url.scheme == "https" else 80)

        addresses = self._resolve(url.host, port)
        for address in addresses:
            if not self.permitted(address):
                raise WebhookRefused(
                    f"url: {url.host} resolves to a non-public address ({address})")
        return Target(url=url, address=addresses[0])

    def _resolve(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise WebhookRefused(f"url: {host} does not resolve ({type(exc).__name__})") \
                from None
        if not addresses:
            raise WebhookRefused(f"url: {host} does not resolve")
        return addresses

    def permitted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.allowed):
            return True
        return not (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local
                    or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def _networks(items: list[str]) -> list[Network]:
    try:
        return [ipaddress.ip_network(item, strict=False) for item in items]
    except ValueError as exc:
        raise ConfigError(f"api.webhook_allow_networks: {exc}") from None
