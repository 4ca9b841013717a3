"""A cache backend that holds only counters, in a PostgreSQL table: the rate limits' store when
no Redis is configured.

django-ratelimit needs `add` and an atomic `incr` from its cache. Django's database cache has
neither cheaply (it counts the whole table before each write, pickles every value and
increments by read-then-write, so parallel requests undercount). Here each operation is one
statement on one row: an upsert that only replaces an expired window, and
`count = count + n ... RETURNING count`. Expired windows are deleted now and then by `add`.
"""

import random
from datetime import UTC, datetime

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.db import connection
from django.utils import timezone

from core.models import RateCounter

TABLE = RateCounter._meta.db_table
PURGE_PROBABILITY = 0.01


class CounterCache(BaseCache):
    def __init__(self, location, params):
        super().__init__(params)

    def _expires(self, timeout) -> datetime:
        moment = self.get_backend_timeout(timeout)  # epoch seconds, or None for "forever"
        if moment is None:
            return datetime.max.replace(tzinfo=UTC)
        return datetime.fromtimestamp(moment, tz=UTC)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version=version)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {TABLE} AS c (key, count, expires) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET count = EXCLUDED.count, expires = EXCLUDED.expires "
                "WHERE c.expires < now() RETURNING 1",
                [key, int(value), self._expires(timeout)],
            )
            added = cursor.fetchone() is not None
            if added and random.random() < PURGE_PROBABILITY:
                cursor.execute(f"DELETE FROM {TABLE} WHERE expires < now()")
        return added

    def incr(self, key, delta=1, version=None):
        key = self.make_and_validate_key(key, version=version)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {TABLE} SET count = count + %s WHERE key = %s AND expires >= now() "
                "RETURNING count",
                [int(delta), key],
            )
            row = cursor.fetchone()
        if row is None:
            raise ValueError(f"Key '{key}' not found.")
        return row[0]

    def get(self, key, default=None, version=None):
        key = self.make_and_validate_key(key, version=version)
        row = (
            RateCounter.objects.filter(key=key, expires__gte=timezone.now())
            .values_list("count", flat=True)
            .first()
        )
        return default if row is None else row

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version=version)
        RateCounter.objects.update_or_create(
            key=key, defaults={"count": int(value), "expires": self._expires(timeout)}
        )

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version=version)
        return bool(RateCounter.objects.filter(key=key).update(expires=self._expires(timeout)))

    def delete(self, key, version=None):
        key = self.make_and_validate_key(key, version=version)
        return bool(RateCounter.objects.filter(key=key).delete()[0])

    def clear(self):
        RateCounter.objects.all().delete()
