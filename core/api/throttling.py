"""The REST API's rate limit: django-ratelimit's counters per API token, kept in the shared
counter store (Redis when CACHE_URL names one, else the database; the portal's sign-in limits
count there too). Over the limit: 429 with Retry-After (seconds until the window ends).

If the counter store is unreachable the request is let through and a warning logged: an outage
of the cache must not become an outage of the API.
"""

import logging

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)


def _usage(request, *, group: str, key, rate: str):
    try:
        return get_usage(request, group=group, key=key, rate=rate, increment=True)
    except Exception:  # the counter store is down: fail open (see module docstring)
        logger.warning("rate limit %s not checked: counter store unavailable", group, exc_info=True)
        return None


def _retry_after(usage) -> int:
    return max(1, int(usage["time_left"]))


class TokenRateThrottle(BaseThrottle):
    """DRF throttle: API_RATE_LIMIT requests per API token (e.g. "6000/m"; empty: no limit)."""

    def __init__(self):
        self.retry_after = None

    def allow_request(self, request, view):
        rate = settings.API_RATE_LIMIT
        token = request.auth
        if not rate or token is None:
            return True
        usage = _usage(request, group="api-token", key=lambda group, req: str(token.pk), rate=rate)
        if usage is None or not usage["should_limit"]:
            return True
        self.retry_after = _retry_after(usage)
        return False

    def wait(self):
        return self.retry_after
