"""The ClickHouse DDL as text: no cluster runs here, so the ON CLUSTER statements are checked
as written (the single-node ones also run against chdb in the other tests)."""

from metering.stores.clickhouse_schema import Layout, ledger, migrations


def test_single_node():
    [(version, statements)] = migrations(Layout("meterline"))
    assert version == 1
    assert statements[1] == (
        "CREATE TABLE IF NOT EXISTS `meterline`.events " + statements[1].split("events ", 1)[1]
    )
    assert "ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(timestamp) " in statements[1]
    assert "ORDER BY (organization_id, customer_id, timestamp, id)" in statements[1]
    assert "SETTINGS non_replicated_deduplication_window = 100000" in statements[1]
    assert "numbers Map(String, Decimal(76, 20))" in statements[1]
    assert "ON CLUSTER" not in " ".join(statements)
    assert len(statements) == 2


def test_cluster():
    layout = Layout("meterline", "billing")
    [(_, statements)] = migrations(layout)
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS `meterline` ON CLUSTER `billing`"
    assert statements[1].startswith(
        "CREATE TABLE IF NOT EXISTS `meterline`.events_local ON CLUSTER `billing` ("
    )
    assert (
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/meterline/"
        "events_local', '{replica}')" in statements[1]
    )
    assert (
        "SETTINGS replicated_deduplication_window = 100000, "
        "replicated_deduplication_window_seconds = 604800" in statements[1]
    )
    assert statements[2] == (
        "CREATE TABLE IF NOT EXISTS `meterline`.events ON CLUSTER `billing` AS "
        "`meterline`.events_local ENGINE = Distributed(`billing`, `meterline`, events_local, "
        "cityHash64(organization_id, customer_id))"
    )
    assert "ReplicatedMergeTree('/clickhouse/tables/all/meterline/meterline_migrations'" in (
        ledger(layout)
    )
    assert layout.events == "`meterline`.events" and layout.storage == "`meterline`.events_local"
