"""A fixed-window request counter on Django's cache.

Kept deliberately small and on its own so it can be replaced by a rate-limit library without
touching the views: callers only use `Rate.parse` and `hit`. Counts live in the shared counter
store of the API's rate limits (settings.RATELIMIT_USE_CACHE: Redis with CACHE_URL, else a
PostgreSQL table), so they hold across web processes."""

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """ "10/900" -> 10 requests per 900 seconds."""
        count, _, seconds = text.partition("/")
        rate = cls(int(count), int(seconds))
        if rate.count < 1 or rate.seconds < 1:
            raise ValueError(f"Invalid rate {text!r}: expected <count>/<seconds>, both >= 1")
        return rate


def hit(scope: str, key: str, rate: Rate, *, now: float | None = None) -> int | None:
    """Count one request for (scope, key). Returns None while within the rate, else the number of
    seconds until the current window ends (for Retry-After)."""
    now = time.time() if now is None else now
    window = int(now // rate.seconds)
    # Hashed: keys may be email addresses, which need not sit in the cache in clear.
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    cache_key = f"ratelimit:{scope}:{digest}:{window}"
    cache = caches[settings.RATELIMIT_USE_CACHE]
    if cache.add(cache_key, 1, timeout=rate.seconds + 1):
        count = 1
    else:
        try:
            count = cache.incr(cache_key)
        except ValueError:  # the window's key expired between add and incr
            cache.add(cache_key, 1, timeout=rate.seconds + 1)
            count = 1
    if count <= rate.count:
        return None
    return max(1, rate.seconds - int(now % rate.seconds))
