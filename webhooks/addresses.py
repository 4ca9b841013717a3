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


# IPv6 ranges whose addresses carry an IPv4 one that a router or the host's stack may deliver
# to: NAT64 (the well-known and the local-use prefix) and the deprecated IPv4-compatible form
NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for: mapped (::ffff:a.b.c.d), compatible
    (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:aabb:ccdd::) and Teredo (server, client)."""
    found = []
    if ip.ipv4_mapped:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour:
        found.append(ip.sixtofour)
    if ip.teredo:
        found.extend(ip.teredo)
    if ip in IPV4_COMPATIBLE or any(ip in prefix for prefix in NAT64_PREFIXES):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _global(ip) -> bool:
    return ip.is_global and not ip.is_multicast


def is_public(address: str) -> bool:
    """Every address the connection could reach is public: the address itself and any IPv4
    address embedded in it (a private IPv4 inside IPv6 reaches the private network too)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6:
        embedded = embedded_ipv4(ip)
        if ip.ipv4_mapped:
            # the mapped range is not global itself: the IPv4 address decides
            return _global(ip.ipv4_mapped)
        return _global(ip) and all(_global(inner) for inner in embedded)
    return _global(ip)


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
