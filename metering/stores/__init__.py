"""The configured event store (`EVENT_STORE`): PostgreSQL by default, ClickHouse when set.

The implementation is named by a dotted path, as Django names its backends, so the default
installation never imports the ClickHouse client."""

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from metering.stores.base import EventStore

BACKENDS = {
    "postgres": "metering.stores.postgres.PostgresStore",
    "clickhouse": "metering.stores.clickhouse.ClickHouseStore",
}


@cache
def _store(name: str) -> EventStore:
    return import_string(BACKENDS[name])()


def current() -> EventStore:
    """The store of this process's settings (tests switch `EVENT_STORE` with override_settings)."""
    return _store(settings.EVENT_STORE)
