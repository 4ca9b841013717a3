"""The event-store contract runs against both stores: PostgreSQL, and ClickHouse through chdb
(ClickHouse's engine in this process, driven by clickhouse-connect's `chdb://` backend). chdb
allows one process per data folder: the folder is this pytest process's own, and anything that
must reach it over HTTP uses the live server (a thread of this process)."""

import pytest
from django.db import connection

STORES = ("postgres", "clickhouse")


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory):
    """An empty chdb folder with the event store's schema, for this test session."""
    from metering.stores import clickhouse, clickhouse_schema

    url = f"chdb://{tmp_path_factory.mktemp('chdb')}"
    from django.conf import settings

    previous = settings.CLICKHOUSE_URL
    settings.CLICKHOUSE_URL = url
    try:
        clickhouse_schema.migrate(clickhouse.client(), clickhouse.layout())
    finally:
        settings.CLICKHOUSE_URL = previous
    return url


@pytest.fixture(params=STORES)
def store(request, settings):
    """The store under test, configured through the settings the product reads."""
    settings.EVENT_STORE = request.param
    if request.param == "clickhouse":
        settings.CLICKHOUSE_URL = request.getfixturevalue("chdb_url")
    return request.param


def txid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text::bigint")
        return cursor.fetchone()[0]
