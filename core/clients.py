"""The address a request came from, for the per-address limits (admin sign-in lockouts, portal
sign-in rate) and the audit log.

`X-Forwarded-For` is a list anyone can start: only the entries appended by proxies we run can be
believed. With `TRUSTED_PROXY_COUNT = N` (docs/operations.md, "Reverse proxy and TLS"), each of
the N proxies appends the address it received the request from, so the client's is the N-th
entry from the right; whatever stands left of it was written by the client. With 0 (the default:
gunicorn faces the clients) the header is ignored and the connection's address is the answer."""

import ipaddress

from django.conf import settings


def client_address(request) -> str:
    connection = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return connection
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [hop for hop in hops if hop]
    if len(hops) < proxies:
        # a request that reached us without passing every proxy (or a misconfigured count)
        return connection
    candidate = hops[-proxies]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return connection
