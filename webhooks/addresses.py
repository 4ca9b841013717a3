"""Where a webhook may go: never to the server's own networks.

A tenant chooses the URL, so without this rule it could make the server probe its private
network (SSRF). The host is resolved and *every* address checked; the request then connects to
an address that was checked (no second lookup a DNS rebinding could answer differently).
`WEBHOOK_ALLOW_PRIVATE_URLS` lifts the rule (development, tests)."""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from webhooks.errors import UnsafeWebhookURL


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP the request connects to


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(url: str, *, loc=("url",)) -> Target:
    """The checked target of `url`, or UnsafeWebhookURL naming the field."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeWebhookURL.single(loc, "The URL must be an http(s) URL with a host.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeWebhookURL.single(loc, f"The host {parts.hostname!r} does not resolve.")
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        refused = [address for address in addresses if not is_public(address)]
        if refused:
            raise UnsafeWebhookURL.single(
                loc,
                f"The host {parts.hostname!r} resolves to a private, loopback or otherwise "
                f"non-public address ({refused[0]}); webhooks are only sent to public addresses.",
            )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])
