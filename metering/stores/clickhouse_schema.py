"""The ClickHouse schema of the event store, as ordered migrations of DDL text (the
`clickhouse_schema` command applies the ones not yet recorded in `meterline_migrations`).

Single node: `events` is a ReplacingMergeTree. With a cluster name: every statement runs
`ON CLUSTER`, the rows live in `events_local` (ReplicatedReplacingMergeTree, one replica set per
shard) and `events` is a Distributed table over it, sharded by organization and customer so
that a customer's events — and so every copy of a retried insert — land on one shard, where
`FINAL` collapses them. Nothing here imports the client: the text is unit-tested."""

from dataclasses import dataclass

# Months: a customer's history is a few partitions; a backdated import touches old ones only.
PARTITION_BY = "toYYYYMM(timestamp)"
# The read paths filter by organization, then customer, then time.
ORDER_BY = "(organization_id, customer_id, timestamp, id)"
# Blocks whose deduplication token is remembered: enough for every batch inserted while the
# relay's worst delay lasts (docs/scaling.md sizes it). A retried batch older than this is
# still counted once, by FINAL / the ReplacingMergeTree key.
DEDUPLICATION_WINDOW = 100_000
DEDUPLICATION_WINDOW_SECONDS = 7 * 86400

EVENT_COLUMNS = """(
    organization_id UUID,
    customer_id UUID,
    timestamp DateTime64(6, 'UTC'),
    id UUID,
    name String,
    source LowCardinality(String),
    external_customer_id String,
    external_id String,
    parent_reference String,
    ingested_at DateTime64(6, 'UTC'),
    arrival_txid UInt64,
    batch_id UInt64,
    numbers Map(String, Decimal(76, 20)),
    strings Map(String, String),
    booleans Map(String, Bool),
    metadata String CODEC(ZSTD(3))
)"""


@dataclass(frozen=True)
class Layout:
    database: str
    cluster: str = ""

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER `{self.cluster}`" if self.cluster else ""

    @property
    def events(self) -> str:
        """The table reads and inserts name."""
        return f"`{self.database}`.events"

    @property
    def storage(self) -> str:
        """The table that stores the rows (the Distributed table's local one in a cluster)."""
        return f"`{self.database}`.events_local" if self.cluster else self.events


def migrations(layout: Layout) -> list[tuple[int, list[str]]]:
    """(version, statements) in order."""
    if layout.cluster:
        engine = (
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/"
            f"{layout.database}/events_local', '{{replica}}')"
        )
        dedup = (
            f"replicated_deduplication_window = {DEDUPLICATION_WINDOW}, "
            f"replicated_deduplication_window_seconds = {DEDUPLICATION_WINDOW_SECONDS}"
        )
    else:
        engine = "ReplacingMergeTree"
        dedup = f"non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
    first = [
        f"CREATE DATABASE IF NOT EXISTS `{layout.database}`{layout.on_cluster}",
        f"CREATE TABLE IF NOT EXISTS {layout.storage}{layout.on_cluster} {EVENT_COLUMNS} "
        f"ENGINE = {engine} PARTITION BY {PARTITION_BY} ORDER BY {ORDER_BY} "
        f"SETTINGS {dedup}",
    ]
    if layout.cluster:
        first.append(
            f"CREATE TABLE IF NOT EXISTS {layout.events}{layout.on_cluster} "
            f"AS {layout.storage} ENGINE = Distributed(`{layout.cluster}`, "
            f"`{layout.database}`, events_local, cityHash64(organization_id, customer_id))"
        )
    return [(1, first)]


def ledger(layout: Layout) -> str:
    """The table recording applied versions (replicated with the schema in a cluster)."""
    engine = (
        "ReplicatedMergeTree('/clickhouse/tables/all/"
        f"{layout.database}/meterline_migrations', '{{replica}}')"
        if layout.cluster
        else "MergeTree"
    )
    return (
        f"CREATE TABLE IF NOT EXISTS `{layout.database}`.meterline_migrations"
        f"{layout.on_cluster} (version UInt32, applied_at DateTime DEFAULT now()) "
        f"ENGINE = {engine} ORDER BY version"
    )


def migrate(client, layout: Layout) -> list[int]:
    """Apply the migrations not yet recorded; returns the versions applied."""
    client.command(f"CREATE DATABASE IF NOT EXISTS `{layout.database}`{layout.on_cluster}")
    client.command(ledger(layout))
    done = {
        row[0]
        for row in client.query(
            f"SELECT version FROM `{layout.database}`.meterline_migrations"
        ).result_rows
    }
    applied = []
    for version, statements in migrations(layout):
        if version in done:
            continue
        for statement in statements:
            client.command(statement)
        client.command(
            f"INSERT INTO `{layout.database}`.meterline_migrations (version) VALUES ({version})"
        )
        applied.append(version)
    return applied
