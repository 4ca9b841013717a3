"""The ClickHouse event store (`EVENT_STORE=clickhouse`, docs/scaling.md).

Writes: the ingest transaction in PostgreSQL claims the idempotency keys (`EventKey`), creates
the customer meters, updates first-event times and event names, and records the batch in the
outbox (`EventBatch`) with the rows to insert. After the commit the batch is inserted into
ClickHouse with `insert_deduplication_token` = the batch id and marked delivered; a batch whose
insert failed (or whose process died) is resent by the relay with the same token.

Reads: events are aggregated where they are, with `FINAL` (a retried insert never counts twice),
typed columns computed at ingest (numbers as Decimal(76, 20), strings, booleans: no JSON
function on a billing path) and the arithmetic of `metering.aggregation` (avg in Python from sum
and count). A consistent read (`reading`) is PostgreSQL's snapshot less the batches not yet
delivered (the watermark): those count as arriving after it, so a cycle close never misses a
batch in flight nor reads it twice.

Customers: events sent with an external customer id nobody had yet keep it (the zero customer);
a `CustomerLink` row written when a customer gets that id makes them its usage."""

import logging
import os
import secrets
import threading
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from core.db import bound_cursor
from core.metadata import metadata_value_candidates
from customers.models import Customer
from metering import aggregation, filters, jsonio, locks, rollups, series
from metering.errors import InvalidCorrection
from metering.models import (
    CustomerLink,
    Event,
    EventBatch,
    EventCorrection,
    EventKey,
    EventSource,
    Meter,
)
from metering.stores import clickhouse_schema, postgres
from metering.stores.base import (
    EventStore,
    PreviewFigures,
    Range,
    ReadBoundary,
    ReadTimedOut,
    Window,
    WindowEvent,
    snapshot_ids,
    utc_ranges,
    visible,
)
from metering.stores.base import StoredEvent as FoundEvent

logger = logging.getLogger(__name__)

ZERO = uuid.UUID(int=0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# DateTime64's range: query bounds outside it (all time, far future) are clamped
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2299, 12, 31, tzinfo=UTC)
COLUMNS = [
    "organization_id",
    "customer_id",
    "timestamp",
    "id",
    "name",
    "source",
    "external_customer_id",
    "external_id",
    "parent_reference",
    "ingested_at",
    "arrival_txid",
    "batch_id",
    "numbers",
    "strings",
    "booleans",
    "metadata",
]
READ_SETTINGS = {
    # FINAL within each partition only: a row and its retried copy share the partition
    "do_not_merge_across_partitions_select_final": 1,
    # set-based reads name many windows/customers in one statement
    "max_query_size": 64 * 1024 * 1024,
}
# a backdated import may span many months
INSERT_SETTINGS = {"max_partitions_per_insert_block": 0}
# the relay leaves batches younger than this to the request that wrote them
RELAY_MIN_AGE = timedelta(seconds=5)
RELAY_BATCHES = 100
# delivered batches are kept this long (the ingest signal looks its batch up), then deleted
KEEP_DELIVERED = timedelta(days=1)

# the boundary of the consistent read in progress (None: read everything delivered)
_reading: ContextVar[ReadBoundary | None] = ContextVar("clickhouse_reading", default=None)
_local = threading.local()


# --- connection -----------------------------------------------------------------------------


def layout() -> clickhouse_schema.Layout:
    url = urlparse(settings.CLICKHOUSE_URL)
    database = "default"
    if url.scheme != "chdb":
        database = url.path.strip("/") or "default"
    return clickhouse_schema.Layout(database, settings.CLICKHOUSE_CLUSTER)


def client():
    """One client per thread (a client is not thread-safe); chdb's engine is shared by all the
    clients of the process."""
    key = (settings.CLICKHOUSE_URL, os.getpid())
    cached = getattr(_local, "client", None)
    if cached is None or cached[0] != key:
        if not settings.CLICKHOUSE_URL:
            raise RuntimeError("EVENT_STORE=clickhouse needs CLICKHOUSE_URL")
        made = clickhouse_connect.get_client(dsn=settings.CLICKHOUSE_URL, settings=READ_SETTINGS)
        cached = (key, made)
        _local.client = cached
    return cached[1]


def insert_settings() -> dict:
    extra = dict(INSERT_SETTINGS)
    if settings.CLICKHOUSE_CLUSTER:
        # read-your-writes across replicas: the insert returns once a majority has the block
        extra.update(insert_quorum="auto", insert_quorum_parallel=1)
    return extra


# --- values ---------------------------------------------------------------------------------


def micros(moment: datetime) -> int:
    moment = min(max(moment.astimezone(UTC), EARLIEST), LATEST)
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _partial(count, nc, ns, mn, mx, distinct) -> aggregation.Partial:
    """A window's figures; a close reads only those its meter's function needs (NULL sum)."""
    return aggregation.Partial(
        event_count=int(count),
        numeric_count=int(nc),
        numeric_sum=trimmed(ns) if nc and ns is not None else Decimal(0),
        numeric_min=trimmed(mn) if nc else None,
        numeric_max=trimmed(mx) if nc else None,
        distinct=int(distinct),
    )


def trimmed(value) -> Decimal | None:
    """ClickHouse returns every number at scale 20: drop the trailing zeros."""
    if value is None:
        return None
    value = Decimal(value)
    if value == value.to_integral_value():
        return value.quantize(Decimal(1), context=aggregation.EXACT)
    return value.normalize(context=aggregation.EXACT)


def uuid7() -> uuid.UUID:
    """Time-ordered ids, as the PostgreSQL store makes them."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


def typed_paths(metadata: dict) -> tuple[dict, dict, dict]:
    """Every property path of the metadata with a scalar value, by type: a flat key by its
    name, a nested value by its dotted path unless a flat key of that name exists (the
    resolution rule of `metering.filters.resolve`)."""
    numbers, strings, booleans = {}, {}, {}

    def put(path, value):
        if isinstance(value, bool):
            booleans[path] = value
        elif isinstance(value, str):
            strings[path] = value
        elif isinstance(value, int | float | Decimal):
            numbers[path] = filters._as_decimal(value)

    def walk(prefix, value):
        for key, item in value.items():
            path = f"{prefix}.{key}"
            if isinstance(item, dict):
                walk(path, item)
            elif path not in metadata:
                put(path, item)

    for key, value in metadata.items():
        # exact types first (the ingest path's common case: ~3x faster than isinstance chains)
        kind = type(value)
        if kind is str:
            strings[key] = value
        elif kind is Decimal:
            numbers[key] = value
        elif kind is dict:
            walk(key, value)
        else:
            put(key, value)
    return numbers, strings, booleans


# --- SQL over the typed columns ---------------------------------------------------------------


class Params:
    """Named parameters, bound client-side by clickhouse-connect (quoted and escaped)."""

    def __init__(self):
        self.values: dict = {}

    def __call__(self, value) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"%({name})s"

    def decimal(self, value) -> str:
        return f"toDecimal256({self(str(filters._as_decimal(value)))}, 20)"

    @staticmethod
    def literal_uuids(values: list[str]) -> str:
        """UUIDs written into the text (validated by uuid.UUID: nothing else can get in)."""
        listed = ",".join(f"'{uuid.UUID(v)}'" for v in values)
        return f"[{listed}]::Array(UUID)" if values else "[]::Array(UUID)"


SECONDS_SQL = (
    "(intDiv(toUnixTimestamp64Micro(timestamp), 1000000) - "
    "(modulo(toUnixTimestamp64Micro(timestamp), 1000000) < 0))"
)
NO_NUMBER = "CAST(NULL, 'Nullable(Decimal(76, 20))')"
OPS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _path(prop: str) -> str:
    return filters.metadata_path(prop)


def clause_sql(clause: dict, p: Params) -> str:
    """One clause by the typed comparison rule (docs/meters.md), never NULL."""
    prop, operator, expected = clause["property"], clause["operator"], clause["value"]
    if prop in ("name", "source"):
        if not isinstance(expected, str):
            return "0"
        if operator == "like":
            return f"(position({prop}, {p(expected)}) > 0)"
        if operator == "not_like":
            return f"(position({prop}, {p(expected)}) = 0)"
        return f"({prop} {OPS[operator]} {p(expected)})"
    if prop == "timestamp":
        if isinstance(expected, bool) or not filters._is_number(expected):
            return "0"
        if operator in ("like", "not_like"):
            return "0"
        return f"(toDecimal256({SECONDS_SQL}, 20) {OPS[operator]} {p.decimal(expected)})"
    key = p(_path(prop))
    if isinstance(expected, bool):
        if operator not in ("eq", "ne"):
            return "0"
        return (
            f"(mapContains(booleans, {key}) AND booleans[{key}] "
            f"{OPS[operator]} {'true' if expected else 'false'})"
        )
    if isinstance(expected, str):
        if operator == "like":
            return f"(mapContains(strings, {key}) AND position(strings[{key}], {p(expected)}) > 0)"
        if operator == "not_like":
            return f"(mapContains(strings, {key}) AND position(strings[{key}], {p(expected)}) = 0)"
        return f"(mapContains(strings, {key}) AND strings[{key}] {OPS[operator]} {p(expected)})"
    if operator in ("like", "not_like"):
        return "0"
    return f"(mapContains(numbers, {key}) AND numbers[{key}] {OPS[operator]} {p.decimal(expected)})"


def filter_sql(filter_: dict, p: Params) -> str:
    clauses = filter_.get("clauses") or []
    if not clauses:
        return "1"
    parts = [
        filter_sql(clause, p) if "clauses" in clause else clause_sql(clause, p)
        for clause in clauses
    ]
    return "(" + (" AND " if filter_["conjunction"] == "and" else " OR ").join(parts) + ")"


def number_sql(meter: Meter, p: Params) -> str:
    func, prop = meter.aggregation["func"], meter.aggregation.get("property")
    if func not in filters.PROPERTY_FUNCS:
        return "CAST(NULL, 'Nullable(Decimal(76, 20))')"
    if prop == "timestamp":
        return f"toNullable(toDecimal256({SECONDS_SQL}, 20))"
    if prop in ("name", "source"):
        return "CAST(NULL, 'Nullable(Decimal(76, 20))')"
    key = p(_path(prop))
    return f"if(mapContains(numbers, {key}), toNullable(numbers[{key}]), NULL)"


def key_sql(meter: Meter, p: Params) -> str:
    """The typed distinct key of `unique` (`s:`, `n:`, `b:`), as the PostgreSQL store spells
    it: numbers have one scale here, so equal numbers have one text."""
    func, prop = meter.aggregation["func"], meter.aggregation.get("property")
    if func != "unique":
        return "CAST(NULL, 'Nullable(String)')"
    if prop in ("name", "source"):
        return f"toNullable(concat('s:', {prop}))"
    if prop == "timestamp":
        return f"toNullable(concat('n:', toString({SECONDS_SQL})))"
    key = p(_path(prop))
    return (
        f"multiIf(mapContains(numbers, {key}), toNullable(concat('n:', toString(numbers[{key}]))), "
        f"mapContains(strings, {key}), toNullable(concat('s:', strings[{key}])), "
        f"mapContains(booleans, {key}), toNullable(if(booleans[{key}], 'b:true', 'b:false')), "
        "NULL)"
    )


def metadata_filter_sql(metadata: dict | None, p: Params) -> str:
    """`metadata[key]=value` query filters (values of a key OR-ed, keys AND-ed): a value
    matches the string, and also `true`/`false` and numbers (as the PostgreSQL store)."""
    if not metadata:
        return "1"
    parts = []
    for key, raw_values in metadata.items():
        alternatives = []
        for raw in raw_values:
            for candidate in metadata_value_candidates(raw):
                clause = {"property": key, "operator": "eq", "value": candidate}
                if isinstance(candidate, str | bool) or filters._is_number(candidate):
                    alternatives.append(clause_sql({**clause, "property": f"metadata.{key}"}, p))
        parts.append("(" + (" OR ".join(alternatives) or "0") + ")")
    return "(" + " AND ".join(parts) + ")"


# --- boundaries -------------------------------------------------------------------------------


def visible_sql(token: str, column: str = "arrival_txid") -> str:
    xmin, xmax, running = snapshot_ids(token)  # integers: safe to write into the text
    listed = ",".join(map(str, running))
    return (
        f"({column} < {xmin} OR ({column} < {xmax} AND NOT has([{listed}]::Array(UInt64), "
        f"{column})))"
        if running
        else f"({column} < {xmin} OR {column} < {xmax})"
    )


def without(token: str, pending: list[int]) -> str:
    """The snapshot with the transactions in `pending` counted as not committed yet."""
    xmin, xmax, running = snapshot_ids(token)
    extra = {t for t in pending if t < xmax}
    if not extra:
        return token
    ids = sorted(set(running) | extra)
    return f"{min(xmin, ids[0])}:{xmax}:{','.join(map(str, ids))}"


# --- customers ----------------------------------------------------------------------------------


class Scope:
    """Whose events a read takes: linked events by customer id, plus unlinked ones by the
    external id a linked customer holds (when its link is visible to the read)."""

    def __init__(self, organization_id, customer_ids, links: dict):
        self.organization_id = organization_id
        self.customer_ids = customer_ids  # None: every customer of the organization
        self.links = links  # external id → customer id

    def where(self, p: Params) -> str:
        org = f"organization_id = {p(str(self.organization_id))}"
        linked = (
            "customer_id != toUUID('00000000-0000-0000-0000-000000000000')"
            if self.customer_ids is None
            # written into the text: a close names thousands of customers
            else "customer_id IN "
            + Params.literal_uuids([str(c) for c in self.customer_ids] or [str(ZERO)])
        )
        if not self.links:
            return f"({org} AND {linked})"
        unlinked = (
            "(customer_id = toUUID('00000000-0000-0000-0000-000000000000') AND "
            f"external_customer_id IN {p(list(self.links))})"
        )
        return f"({org} AND ({linked} OR {unlinked}))"

    def customer(self, p: Params) -> str:
        if not self.links:
            return "customer_id"
        return (
            "if(customer_id = toUUID('00000000-0000-0000-0000-000000000000'), "
            f"toUUID(transform(external_customer_id, {p(list(self.links))}, "
            f"{p([str(c) for c in self.links.values()])}, "
            "'00000000-0000-0000-0000-000000000000')), customer_id)"
        )


def _links(organization_id, *, customer_ids=None, external_ids=None, boundary=None) -> dict:
    rows = CustomerLink.objects.filter(organization_id=organization_id)
    if customer_ids is not None:
        rows = rows.filter(customer_id__in=list(customer_ids))
    if external_ids is not None:
        rows = rows.filter(external_customer_id__in=list(external_ids))
    return {
        ext: customer
        for ext, customer, txid in rows.values_list("external_customer_id", "customer_id", "txid")
        if boundary is None or visible(txid, boundary.token)
    }


# --- the store ----------------------------------------------------------------------------------

CLAIM_SQL = """
INSERT INTO metering_eventkey (organization_id, external_id, event_id)
SELECT %(org)s, k, e FROM unnest(%(keys)b::text[], %(ids)b::uuid[]) AS t(k, e)
ORDER BY k
ON CONFLICT DO NOTHING
RETURNING external_id
"""

RESOLVE_SQL = """
SELECT external_id, id FROM customers_customer
WHERE organization_id = %(org)s AND external_id = ANY(%(ids)s::text[]) AND deleted_at IS NULL
"""

CUSTOMER_METERS_SQL = """
INSERT INTO metering_customermeter AS m (id, customer_id, meter_id, created_at, modified_at)
SELECT gen_random_uuid(), c, mt, now(), now()
FROM unnest(%(customers)b::uuid[], %(meters)b::uuid[]) AS t(c, mt)
WHERE NOT EXISTS (SELECT 1 FROM metering_customermeter o WHERE o.customer_id = t.c
                  AND o.meter_id = t.mt)
ORDER BY mt, c
ON CONFLICT (customer_id, meter_id) DO NOTHING
"""

FIRST_EVENT_SQL = """
WITH m AS (
    SELECT * FROM unnest(%(customers)b::uuid[], %(firsts)b::timestamptz[]) AS m(customer_id, first)
), locked AS (
    SELECT c.id, m.first FROM customers_customer c JOIN m ON c.id = m.customer_id
    WHERE c.first_user_event_at IS NULL OR c.first_user_event_at > m.first
    ORDER BY c.id FOR NO KEY UPDATE OF c
)
UPDATE customers_customer c
SET first_user_event_at = LEAST(COALESCE(c.first_user_event_at, locked.first), locked.first)
FROM locked WHERE c.id = locked.id
"""

EVENT_NAMES_SQL = """
INSERT INTO metering_eventname (organization_id, name, source, occurrences, first_seen, last_seen)
SELECT %(org)s, n, 'user', c, f, l
FROM unnest(%(names)b::text[], %(counts)b::bigint[], %(firsts)b::timestamptz[],
            %(lasts)b::timestamptz[]) AS t(n, c, f, l)
ORDER BY n
ON CONFLICT (organization_id, name, source) DO UPDATE SET
    occurrences = metering_eventname.occurrences + EXCLUDED.occurrences,
    first_seen = LEAST(metering_eventname.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(metering_eventname.last_seen, EXCLUDED.last_seen)
"""

OUTBOX_SQL = """
INSERT INTO metering_eventbatch (organization_id, txid, created_at, attempts, last_error,
                                 event_count, first_event_id, customer_ids, rows)
VALUES (%(org)s, pg_current_xact_id()::text::bigint, now(), 0, '', %(count)s, %(first)s,
        %(customers)s::uuid[], %(rows)s)
RETURNING id, txid
"""


def _count_names(cursor, org, names: dict) -> None:
    """The organization's event-name summary: name → [occurrences, first, last], by name (the
    writers' lock order)."""
    order = sorted(names)
    cursor.execute(
        EVENT_NAMES_SQL,
        {
            "org": org,
            "names": order,
            "counts": [names[n][0] for n in order],
            "firsts": [names[n][1] for n in order],
            "lasts": [names[n][2] for n in order],
        },
    )


def _payload(row: list) -> list:
    """A ClickHouse row as JSON (UUIDs and times as text and microseconds, decimals exact)."""
    numbers, strings, booleans = row[12], row[13], row[14]
    return [
        str(row[0]),
        str(row[1]),
        micros(row[2]),
        str(row[3]),
        *row[4:9],
        micros(row[9]),
        row[10],
        row[11],
        numbers,
        strings,
        booleans,
        row[15],
    ]


def _from_payload(item: list, batch_id: int, txid: int) -> list:
    """A payload row back, with its batch's id and transaction (both known only after the
    outbox insert). A row that names its own arrival keeps it: a correction's rows stand where
    the original stood (`ClickHouseStore.correct`)."""
    return [
        uuid.UUID(item[0]),
        uuid.UUID(item[1]),
        from_micros(item[2]),
        uuid.UUID(item[3]),
        *item[4:9],
        from_micros(item[9]),
        item[10] or txid,
        batch_id,
        {k: Decimal(v) for k, v in item[12].items()},
        item[13],
        item[14],
        item[15],
    ]


def _insert(rows: list, batch_id: int) -> None:
    """The one insert of a batch: its id is the deduplication token, so a resend (relay, or the
    request and the relay racing) is stored once."""
    if not rows:
        return
    client().insert(
        layout().events,
        rows,
        column_names=COLUMNS,
        settings={**insert_settings(), "insert_deduplication_token": f"batch-{batch_id}"},
    )


def _mark_delivered(batch_ids: list[int]) -> None:
    EventBatch.objects.filter(pk__in=batch_ids, delivered_at__isnull=True).update(
        delivered_at=timezone.now(), rows=None
    )


def _enqueue(cursor, org, ch_rows: list, customers: set) -> None:
    """Record `ch_rows` in the outbox, in the caller's transaction (whose id becomes the
    arrival of every row that names none), and deliver them as one insert after its commit.
    `customers`: what `customers_of_events` answers for the batch's first event."""
    cursor.execute(
        OUTBOX_SQL,
        {
            "org": org,
            "count": len(ch_rows),
            "first": ch_rows[0][3],
            "customers": sorted(customers, key=str),
            "rows": jsonio.dumps([_payload(r) for r in ch_rows]),
        },
    )
    batch_id, txid = cursor.fetchone()
    for r in ch_rows:
        r[10], r[11] = r[10] or txid, batch_id
    transaction.on_commit(lambda: deliver(batch_id, ch_rows))


def deliver(batch_id: int, rows: list) -> bool:
    """Insert a committed batch and mark it delivered; on failure leave it to the relay."""
    try:
        _insert(rows, batch_id)
    except Exception as exc:  # noqa: BLE001 - the relay resends it; the ingest stays accepted
        logger.warning(
            "clickhouse: batch %s not delivered (%s); the relay resends it", batch_id, exc
        )
        EventBatch.objects.filter(pk=batch_id).update(
            attempts=F("attempts") + 1, last_error=str(exc)[:2000]
        )
        return False
    _mark_delivered([batch_id])
    return True


def relay(*, min_age: timedelta = RELAY_MIN_AGE, organization_id=None, limit=RELAY_BATCHES) -> int:
    """Resend undelivered batches older than `min_age` (oldest first); returns how many were
    delivered. Safe to run anywhere, any number of times: the token makes a resend a no-op."""
    delivered = 0
    while True:
        with transaction.atomic():
            pending = EventBatch.objects.select_for_update(skip_locked=True).filter(
                delivered_at__isnull=True, created_at__lte=timezone.now() - min_age
            )
            if organization_id is not None:
                pending = pending.filter(organization_id=organization_id)
            batches = list(pending.order_by("id")[:limit])
            for batch in batches:
                rows = [
                    _from_payload(item, batch.pk, batch.txid)
                    for item in jsonio.loads(batch.rows or "[]")
                ]
                try:
                    _insert(rows, batch.pk)
                except Exception as exc:  # noqa: BLE001 - counted, retried next round
                    batch.attempts += 1
                    batch.last_error = str(exc)[:2000]
                    batch.save(update_fields=["attempts", "last_error"])
                    logger.warning("clickhouse relay: batch %s failed (%s)", batch.pk, exc)
                    return delivered
                batch.delivered_at, batch.rows = timezone.now(), None
                batch.save(update_fields=["delivered_at", "rows"])
                delivered += 1
        if len(batches) < limit:
            break
    EventBatch.objects.filter(
        delivered_at__isnull=False, delivered_at__lt=timezone.now() - KEEP_DELIVERED
    ).delete()
    return delivered


def watermark() -> datetime | None:
    """When the oldest undelivered batch was committed (None: everything is in ClickHouse)."""
    return (
        EventBatch.objects.filter(delivered_at__isnull=True)
        .order_by("id")
        .values_list("created_at", flat=True)
        .first()
    )


class ClickHouseStore(EventStore):
    name = "clickhouse"
    rollups = False
    user_events_in_postgres = False
    reads_meters_together = True

    # --- writes -------------------------------------------------------------------------------

    def write(self, *, organization, rows: list) -> list:
        if not rows:
            return []
        org = organization.pk
        ids = [uuid7() for _ in rows]
        with bound_cursor() as cursor:
            external_customers = [r.external_customer_id for r in rows]
            locks.lock_external_ids(cursor, org, external_customers)
            resolved = {}
            wanted = sorted({x for x in external_customers if x is not None})
            if wanted:
                cursor.execute(RESOLVE_SQL, {"org": org, "ids": wanted})
                resolved = dict(cursor.fetchall())
            keyed = [(r.external_id, i) for r, i in zip(rows, ids, strict=True) if r.external_id]
            claimed: set = set()
            if keyed:
                cursor.execute(
                    CLAIM_SQL,
                    {"org": org, "keys": [k for k, _ in keyed], "ids": [i for _, i in keyed]},
                )
                claimed = {row[0] for row in cursor.fetchall()}
            accepted = [
                (row, event_id)
                for row, event_id in zip(rows, ids, strict=True)
                if row.external_id is None or row.external_id in claimed
            ]
            if not accepted:
                return []
            # the organization's meters, read under its shared lock as ingestion does
            locks.lock_organization(cursor, org)
            meters = [
                m for m in rollups.organization_meters(cursor, org) if m.filter and m.aggregation
            ]
            batch_customers = list(
                {row.customer_id or resolved.get(row.external_customer_id) for row, _ in accepted}
                - {None}
            )
            # pairs that have their customer meter already need no filter evaluation
            cursor.execute(
                "SELECT meter_id, customer_id FROM metering_customermeter "
                "WHERE customer_id = ANY(%(customers)b::uuid[])",
                {"customers": batch_customers},
            )
            known = set(cursor.fetchall())
            # per customer, the meters it has no customer meter for yet (usually none)
            unknown = {}
            for customer in batch_customers:
                missing = [m for m in meters if (m.id, customer) not in known]
                if missing:
                    unknown[customer] = missing
            now = timezone.now()
            ch_rows, pairs, firsts, names = [], set(), {}, {}
            for row, event_id in accepted:
                customer = row.customer_id or resolved.get(row.external_customer_id)
                numbers, strings, booleans = typed_paths(row.metadata)
                ch_rows.append(
                    [
                        org,
                        customer or ZERO,
                        row.timestamp,
                        event_id,
                        row.name,
                        "user",
                        row.external_customer_id or "",
                        row.external_id or "",
                        row.parent_reference or "",
                        now,
                        0,
                        0,
                        numbers,
                        strings,
                        booleans,
                        jsonio.dumps(row.metadata),
                    ]
                )
                seen = names.get(row.name)
                names[row.name] = (
                    (1, row.timestamp, row.timestamp)
                    if seen is None
                    else (seen[0] + 1, min(seen[1], row.timestamp), max(seen[2], row.timestamp))
                )
                if customer is None:
                    continue
                if customer not in firsts or row.timestamp < firsts[customer]:
                    firsts[customer] = row.timestamp
                missing = unknown.get(customer)
                if not missing:
                    continue
                event = {
                    "name": row.name,
                    "source": "user",
                    "timestamp": row.timestamp,
                    "metadata": row.metadata,
                }
                for meter in missing:
                    pair = (meter.id, customer)
                    if pair not in pairs and filters.evaluate(meter.filter, event):
                        pairs.add(pair)
            if pairs:
                ordered = sorted(pairs, key=lambda pair: (str(pair[0]), str(pair[1])))
                cursor.execute(
                    CUSTOMER_METERS_SQL,
                    {
                        "customers": [c for _, c in ordered],
                        "meters": [m for m, _ in ordered],
                    },
                )
            if firsts:
                order = sorted(firsts, key=str)
                cursor.execute(
                    FIRST_EVENT_SQL, {"customers": order, "firsts": [firsts[c] for c in order]}
                )
            _count_names(cursor, org, names)
            _enqueue(cursor, org, ch_rows, {r[1] for r in ch_rows if r[1] != ZERO})
        return [r[3] for r in ch_rows]

    def link(self, *, customer) -> int:
        """Record the link (its transaction is the events' arrival); create the customer meters
        and first-event time from the unlinked events ClickHouse has."""
        with bound_cursor() as cursor:
            locks.lock_external_ids(
                cursor, customer.organization_id, [customer.external_id], exclusive=True
            )
            cursor.execute(
                "INSERT INTO metering_customerlink (customer_id, organization_id, "
                "external_customer_id, txid, linked_at) VALUES (%s, %s, %s, "
                "pg_current_xact_id()::text::bigint, now()) ON CONFLICT DO NOTHING RETURNING 1",
                [customer.pk, customer.organization_id, customer.external_id],
            )
            if cursor.fetchone() is None:
                return 0  # the id was linked to an earlier customer (deleted since)
            locks.lock_organization(cursor, customer.organization_id)
            meters = [
                m
                for m in rollups.organization_meters(cursor, customer.organization_id)
                if m.filter and m.aggregation
            ]
        p = Params()
        counts = ", ".join(f"countIf({filter_sql(m.filter, p)})" for m in meters)
        sql = (
            f"SELECT count(), min(timestamp){', ' + counts if counts else ''} "
            f"FROM {layout().events} FINAL WHERE organization_id = {p(str(customer.organization_id))} "
            "AND customer_id = toUUID('00000000-0000-0000-0000-000000000000') "
            f"AND external_customer_id = {p(customer.external_id)} AND source = 'user'"
        )
        row = client().query(sql, parameters=p.values).result_rows[0]
        total, first = row[0], row[1]
        if not total:
            return 0
        matched = [m.id for m, n in zip(meters, row[2:], strict=True) if n]
        with bound_cursor() as cursor:
            if matched:
                cursor.execute(
                    CUSTOMER_METERS_SQL,
                    {"customers": [customer.pk] * len(matched), "meters": sorted(matched, key=str)},
                )
            cursor.execute(FIRST_EVENT_SQL, {"customers": [customer.pk], "firsts": [_utc(first)]})
        return total

    def find_events(self, organization_id, *, ids: list, external_ids: list) -> list:
        """User and canceled events from ClickHouse (an event whose correction is committed
        but not delivered yet reads as canceled), external ids through `EventKey`; system
        events from PostgreSQL, so the service can tell why they can't be corrected."""
        if not ids and not external_ids:
            return []
        keys = dict(
            EventKey.objects.filter(
                organization_id=organization_id, external_id__in=list(external_ids)
            ).values_list("event_id", "external_id")
        )
        if EventBatch.objects.filter(
            organization_id=organization_id, delivered_at__isnull=True
        ).exists():
            # batches accepted but not (known to be) in ClickHouse yet go first: their events
            # can then be found, and no resend of a batch can reach ClickHouse after the
            # canceled copy of one of its rows (a later row with the same key would win)
            relay(min_age=timedelta(0), organization_id=organization_id)
        rows = _stored_rows(organization_id, set(ids) | set(keys))
        corrected = set(
            EventCorrection.objects.filter(
                organization_id=organization_id, event_id__in=list(rows)
            ).values_list("event_id", flat=True)
        )
        links = {
            ext: (customer, txid)
            for ext, customer, txid in CustomerLink.objects.filter(
                organization_id=organization_id,
                external_customer_id__in=[r[6] for r in rows.values() if r[1] == ZERO],
            ).values_list("external_customer_id", "customer_id", "txid")
        }
        parents = _parent_ids(organization_id, {r[8] for r in rows.values() if r[8]})
        found = [_found(row, links, parents, corrected) for row in rows.values()]
        named = {r[7] for r in rows.values() if r[7]}
        found += [
            event
            for event in postgres.PostgresStore().find_events(
                organization_id,
                ids=[i for i in ids if i not in rows],
                external_ids=[x for x in external_ids if x not in named],
            )
            if event.source == EventSource.SYSTEM
        ]
        return found

    def correct(self, *, organization, corrections: list) -> list:
        """One outbox batch, so one ClickHouse insert: each original re-inserted as stored
        (same sorting key, so FINAL keeps this later copy) with `source = 'canceled'`, and each
        replacement in the original's place — customer column, timestamp, parent reference
        and arrival as stored. The batch's transaction is the caller's: a consistent read sees
        the correction exactly when ClickHouse has it."""
        org = organization.pk
        ids = [c.event.id for c in corrections]
        stored = _stored_rows(org, ids)
        corrected = EventCorrection.objects.filter(organization_id=org, event_id__in=ids)
        if corrected.exists() or any(
            i not in stored or stored[i][5] != EventSource.USER for i in ids
        ):
            raise InvalidCorrection(
                "One of these events was corrected by another request meanwhile.",
                type_="already_corrected",
            )
        replaced = [stored[c.event.id] for c in corrections if c.replacement is not None]
        now = timezone.now()
        replacements, canceled, replacement_ids = [], [], []
        pairs, names, customers = set(), {}, set()
        with bound_cursor() as cursor:
            locks.lock_external_ids(cursor, org, [r[6] for r in replaced if r[6]])
            # under the slots' lock: a link being made for one of them has committed or waits
            unlinked = [r[6] for r in replaced if r[1] == ZERO]
            links = _links(org, external_ids=unlinked) if unlinked else {}
            # the organization's meters, read under its shared lock as ingestion does
            locks.lock_organization(cursor, org)
            meters = [
                m for m in rollups.organization_meters(cursor, org) if m.filter and m.aggregation
            ]
            for correction in corrections:
                row = stored[correction.event.id]
                canceled.append([*row[:5], "canceled", *row[6:11], 0, *row[12:]])
                new = correction.replacement
                if new is None:
                    replacement_ids.append(None)
                    continue
                new_id = uuid7()
                replacement_ids.append(new_id)
                numbers, strings, booleans = typed_paths(new.metadata)
                replacements.append(
                    [
                        *row[:3],
                        new_id,
                        new.name,
                        "user",
                        row[6],
                        "",  # the original keeps its external id: a resend stays a duplicate
                        row[8],
                        now,
                        row[10],
                        0,
                        numbers,
                        strings,
                        booleans,
                        jsonio.dumps(new.metadata),
                    ]
                )
                seen = names.get(new.name)
                names[new.name] = (
                    (1, row[2], row[2])
                    if seen is None
                    else (seen[0] + 1, min(seen[1], row[2]), max(seen[2], row[2]))
                )
                customer = row[1] if row[1] != ZERO else links.get(row[6])
                if customer is None:
                    continue
                customers.add(customer)
                event = {
                    "name": new.name,
                    "source": EventSource.USER,
                    "timestamp": row[2],
                    "metadata": new.metadata,
                }
                # new name or metadata: the replacement may fall under meters the original
                # didn't (existing pairs are skipped by the statement)
                pairs |= {(m.id, customer) for m in meters if filters.evaluate(m.filter, event)}
            if pairs:
                ordered = sorted(pairs, key=lambda pair: (str(pair[0]), str(pair[1])))
                cursor.execute(
                    CUSTOMER_METERS_SQL,
                    {"customers": [c for _, c in ordered], "meters": [m for m, _ in ordered]},
                )
            if names:
                _count_names(cursor, org, names)
            # replacements first: the batch's first event is what customers_of_events finds
            _enqueue(cursor, org, replacements + canceled, customers)
        return replacement_ids

    def relay(self) -> int:
        return relay()

    def list_events(self, organization_id, criteria: dict, *, descending: bool, limit: int):
        return list_events(organization_id, criteria, descending=descending, limit=limit)

    def count_events(self, organization_id, criteria: dict, *, cap: int) -> int:
        return count_events(organization_id, criteria, cap=cap)

    def customer_event_names(
        self, organization_id, *, customer_ids, external_ids, sources=None, query=None
    ) -> list[dict]:
        return customer_event_names(
            organization_id,
            customer_ids=customer_ids,
            external_ids=external_ids,
            sources=sources,
            query=query,
        )

    def preview(self, organization_id, *, filter_, aggregation, start, end, timeout_ms):
        return preview(
            organization_id,
            filter_=filter_,
            aggregation=aggregation,
            start=start,
            end=end,
            timeout_ms=timeout_ms,
        )

    def backfill(self, meter) -> None:
        """A new or redefined meter: customer meters for every customer with matching events
        (the numbers themselves are computed on read)."""
        relay(min_age=timedelta(0), organization_id=meter.organization_id)
        scope = self._scope(meter.organization_id, None, None)
        p = Params()
        sql = (
            f"SELECT DISTINCT {scope.customer(p)} AS c FROM {layout().events} FINAL "
            f"WHERE {scope.where(p)} AND source = 'user' AND {filter_sql(meter.filter, p)}"
        )
        customers = [
            c for (c,) in client().query(sql, parameters=p.values).result_rows if c != ZERO
        ]
        if customers:
            customers.sort(key=str)
            with bound_cursor() as cursor:
                cursor.execute(
                    CUSTOMER_METERS_SQL,
                    {"customers": customers, "meters": [meter.pk] * len(customers)},
                )

    # --- boundaries ---------------------------------------------------------------------------

    @contextmanager
    def reading(self, snapshot: ReadBoundary):
        with connection.cursor() as cursor:
            cursor.execute("SELECT txid FROM metering_eventbatch WHERE delivered_at IS NULL")
            pending = [row[0] for row in cursor.fetchall()]
        boundary = ReadBoundary(without(snapshot.token, pending), snapshot.taken_at)
        token = _reading.set(boundary)
        try:
            yield boundary
        finally:
            _reading.reset(token)

    # --- reads --------------------------------------------------------------------------------

    def _scope(self, organization_id, customer_ids, boundary) -> Scope:
        if customer_ids is not None:
            customer_ids = list(dict.fromkeys(customer_ids))
            links = _links(organization_id, customer_ids=customer_ids, boundary=boundary)
            return Scope(organization_id, customer_ids, links)
        p = Params()
        unlinked = (
            client()
            .query(
                f"SELECT DISTINCT external_customer_id FROM {layout().events} "
                f"WHERE organization_id = {p(str(organization_id))} "
                "AND customer_id = toUUID('00000000-0000-0000-0000-000000000000')",
                parameters=p.values,
            )
            .result_rows
        )
        links = (
            _links(organization_id, external_ids=[r[0] for r in unlinked], boundary=boundary)
            if unlinked
            else {}
        )
        return Scope(organization_id, None, links)

    def _seen(self, boundary: ReadBoundary | None) -> str:
        return "1" if boundary is None else visible_sql(boundary.token)

    def compute(
        self,
        meter,
        *,
        buckets,
        customer_ids=None,
        use_rollups=True,
        metadata=None,
        per_customer=False,
    ):
        boundary = _reading.get()
        ranges = [(micros(lo), micros(hi)) for lo, hi in utc_ranges_keep(buckets)]
        count = len(buckets)

        def empty():
            return {} if per_customer else aggregation.Partial()

        parts, total = [empty() for _ in range(count)], empty()
        live = [(n, lo, hi) for n, (lo, hi) in enumerate(ranges, start=1) if lo < hi]
        if not live:
            return parts, total
        scope = self._scope(meter.organization_id, customer_ids, boundary)
        p = Params()
        starts = p([lo for _, lo, _ in live])
        ends = p([hi for _, _, hi in live])
        if per_customer:
            cust, group = scope.customer(p), "GROUPING SETS ((slot, c), (c))"
        else:
            cust, group = (
                "toUUID('00000000-0000-0000-0000-000000000000')",
                "GROUPING SETS ((slot), ())",
            )
        sql = f"""
SELECT slot, {"c" if per_customer else "toUUID('00000000-0000-0000-0000-000000000000')"}, count(), count(v), sum(v),
       min(v), max(v), uniqExact(k)
FROM (
    SELECT arrayFirstIndex(e -> e > t, {ends}) AS slot, {cust} AS c, {number_sql(meter, p)} AS v,
           {key_sql(meter, p)} AS k, toUnixTimestamp64Micro(timestamp) AS t
    FROM {layout().events} FINAL
    WHERE {scope.where(p)} AND source = 'user'
      AND timestamp >= fromUnixTimestamp64Micro({p(min(lo for _, lo, _ in live))}, 'UTC')
      AND timestamp < fromUnixTimestamp64Micro({p(max(hi for _, _, hi in live))}, 'UTC')
      AND {filter_sql(meter.filter, p)} AND {metadata_filter_sql(metadata, p)}
      AND {self._seen(boundary)}
)
WHERE slot > 0 AND t >= {starts}[slot]
GROUP BY {group}
"""
        for slot, c, ec, nc, ns, mn, mx, distinct in (
            client().query(sql, parameters=p.values).result_rows
        ):
            i = live[slot - 1][0] if slot else 0
            partial = aggregation.Partial(
                event_count=int(ec),
                numeric_count=int(nc),
                numeric_sum=trimmed(ns) if nc else Decimal(0),
                numeric_min=trimmed(mn) if nc else None,
                numeric_max=trimmed(mx) if nc else None,
                distinct=int(distinct),
            )
            if per_customer:
                (parts[i - 1] if i else total)[c] = partial
            elif i:
                parts[i - 1] = partial
            else:
                total = partial
        return parts, total

    def additive_values(self, meter, windows: list[Window]) -> dict:
        func = meter.aggregation["func"]
        return {
            index: Decimal(partial.event_count) if func == "count" else partial.numeric_sum
            for index, partial in self.window_partials(meter, windows).items()
        }

    def window_partials(self, meter, windows: list[Window]) -> dict:
        return self.meters_partials([windows])[0][0]

    def late_partials(self, meter, windows: list[Window]) -> dict:
        return self.meters_partials([windows])[0][1]

    def _sliced(self, meters_, entries, scope, extra_where: str, *, keys: bool) -> dict:
        """Every meter's figures for each customer and range set, in one scan: -If aggregates
        per meter (its filter, value and distinct key), grouped by customer and by the range
        set an event falls in (`entries`: customer, meter position, ranges in µs). Returns
        (customer, meter position, ranges) → count, numbers, sum, min, max, distinct, and the
        distinct keys with `keys`."""
        sets: dict = {}
        for customer, _pos, ranges in entries:
            sets.setdefault(ranges, set()).add(customer)
        ordered = list(sets)
        t = "toUnixTimestamp64Micro(timestamp)"

        def inside(ranges) -> str:  # integers: safe to write into the text
            return " OR ".join(f"({t} >= {int(lo)} AND {t} < {int(hi)})" for lo, hi in ranges)

        if len(ordered) == 1:
            slot, in_set = "0", f"({inside(ordered[0])})"
        else:
            # an event counts in each range set holding it that one of its customer's windows use
            choices = ", ".join(
                f"if(({inside(ranges)}) AND c IN {Params.literal_uuids(sorted(sets[ranges]))}, "
                f"{n}, 0)"
                for n, ranges in enumerate(ordered, start=1)
            )
            slot, in_set = f"arrayJoin(arrayFilter(s -> s > 0, [{choices}])) - 1", "1"
        p = Params()
        columns = []
        for meter in meters_:
            f, v, k = filter_sql(meter.filter, p), number_sql(meter, p), key_sql(meter, p)
            func = meter.aggregation["func"]
            # only what the meter's value needs (the rest as empty figures): six meters cost
            # about one aggregate each instead of six
            numeric = func in ("sum", "avg", "min", "max")
            columns.append(
                ", ".join(
                    [
                        f"countIf({f})",
                        f"countIf(({v}) IS NOT NULL AND {f})" if numeric else "0",
                        f"sumIf({v}, {f})" if func in ("sum", "avg") else NO_NUMBER,
                        f"minIf({v}, {f})" if func == "min" else NO_NUMBER,
                        f"maxIf({v}, {f})" if func == "max" else NO_NUMBER,
                        f"uniqExactIf({k}, {f})" if func == "unique" else "0",
                    ]
                    + (
                        [f"groupUniqArrayIf({k}, {f})" if func == "unique" else "[]"]
                        if keys
                        else []
                    )
                )
            )
        lo = min(r[0][0] for r in ordered)
        hi = max(r[-1][1] for r in ordered)
        sql = (
            f"SELECT {scope.customer(p)} AS c, {slot} AS s, {', '.join(columns)} "
            f"FROM {layout().events} FINAL WHERE {scope.where(p)} AND source = 'user' "
            f"AND timestamp >= fromUnixTimestamp64Micro({int(lo)}, 'UTC') "
            f"AND timestamp < fromUnixTimestamp64Micro({int(hi)}, 'UTC') "
            f"AND {in_set} AND {extra_where} GROUP BY c, s"
        )
        width = 7 if keys else 6
        figures = {}
        for customer, s, *values in client().query(sql, parameters=p.values).result_rows:
            for pos in range(len(meters_)):
                figures[str(customer), pos, ordered[s]] = values[width * pos : width * pos + width]
        return figures

    def meters_partials(self, groups: list[list[Window]]) -> list[tuple[dict, dict]]:
        """Every meter's windows of a close at once, per organization: one scan for the
        windows' own events, one per boundary their late arrivals came after (count/sum take
        none)."""
        results: list[tuple[dict, dict]] = [({}, {}) for _ in groups]
        by_org: dict = defaultdict(list)
        for g, group in enumerate(groups):
            if group:
                by_org[group[0].meter.organization_id].append(g)
        boundary = _reading.get()
        for organization_id, members in by_org.items():
            self._organization_partials(organization_id, groups, members, boundary, results)
        return results

    def _organization_partials(self, organization_id, groups, members, boundary, results):
        meters_ = [groups[g][0].meter for g in members]
        # every window of the organization: (meter position, group, index in group, window)
        flat = [
            (pos, g, i, window)
            for pos, g in enumerate(members)
            for i, window in enumerate(groups[g])
        ]

        converted: dict = {}  # a close's windows mostly share their ranges

        def in_micros(ranges) -> tuple:
            if ranges not in converted:
                converted[ranges] = tuple((micros(lo), micros(hi)) for lo, hi in utc_ranges(ranges))
            return converted[ranges]

        late_of: dict = defaultdict(list)  # boundary token → flat positions
        for n, (pos, _g, _i, window) in enumerate(flat):
            late = window.late
            if (
                late is not None
                and meters_[pos].aggregation.get("func") not in ("count", "sum")
                and utc_ranges(late.ranges)
            ):
                late_of[late.since.token].append(n)
        # a late unique value counts only if the window's own events lack it: read own keys
        keys = any(
            meters_[flat[n][0]].aggregation.get("func") == "unique"
            for positions in late_of.values()
            for n in positions
        )
        scope = self._scope(organization_id, {w.customer_id for *_, w in flat}, boundary)
        own = [
            (n, str(window.customer_id), pos, in_micros(window.ranges))
            for n, (pos, _g, _i, window) in enumerate(flat)
        ]
        own = [entry for entry in own if entry[3]]
        own_keys: dict = {}
        if own:
            figures = self._sliced(
                meters_, [e[1:] for e in own], scope, self._seen(boundary), keys=keys
            )
            for n, *key in own:
                found = figures.get(tuple(key))
                if found is None or not found[0]:
                    continue
                _pos, g, i, _window = flat[n]
                results[g][0][i] = _partial(*found[:6])
                if keys:
                    own_keys[n] = set(found[6])
        if not late_of:
            return
        links = dict(
            CustomerLink.objects.filter(
                customer_id__in=list({w.customer_id for *_, w in flat})
            ).values_list("customer_id", "txid")
        )
        for token, positions in late_of.items():
            entries = [
                (n, str(flat[n][3].customer_id), flat[n][0], in_micros(flat[n][3].late.ranges))
                for n in positions
            ]
            # unlinked rows were seen by the old boundary only if their link was
            linked_then = [str(c) for c, txid in links.items() if visible(txid, token)]
            seen_then = (
                f"({visible_sql(token)} AND (customer_id != "
                "toUUID('00000000-0000-0000-0000-000000000000') OR "
                f"c IN {Params.literal_uuids(linked_then)}))"
            )
            figures = self._sliced(
                meters_,
                [e[1:] for e in entries],
                scope,
                f"{self._seen(boundary)} AND NOT {seen_then}",
                keys=True,
            )
            for n, *key in entries:
                found = figures.get(tuple(key))
                if found is None or not found[0]:
                    continue
                _pos, g, i, _window = flat[n]
                partial = _partial(*found[:5], 0)
                partial.keys = set(found[6]) - own_keys.get(n, set())
                partial.distinct = len(partial.keys)
                results[g][1][i] = partial

    def _one_customer(self, window: Window, boundary):
        """(scope, the link's transaction or None) of a window's customer."""
        link = (
            CustomerLink.objects.filter(customer_id=window.customer_id)
            .values_list("external_customer_id", "txid")
            .first()
        )
        links = {}
        if link is not None and (boundary is None or visible(link[1], boundary.token)):
            links = {link[0]: window.customer_id}
        scope = Scope(window.meter.organization_id, [window.customer_id], links)
        return scope, (link[1] if link else None)

    def _seen_by(self, token: str, link_txid) -> str:
        """Rows a boundary saw: their batch was in it, and for unlinked rows, the link too."""
        linked = "1" if link_txid is not None and visible(link_txid, token) else "0"
        return (
            f"({visible_sql(token)} AND (customer_id != "
            f"toUUID('00000000-0000-0000-0000-000000000000') OR {linked}))"
        )

    def late_partial(self, window: Window, own_ranges: list[Range]):
        late = window.late
        ranges = utc_ranges(late.ranges) if late is not None else []
        if not ranges:
            return None
        boundary = _reading.get()
        scope, link_txid = self._one_customer(window, boundary)
        p = Params()
        number, key = number_sql(window.meter, p), key_sql(window.meter, p)
        sql = f"""
SELECT count(), count(v), sum(v), min(v), max(v), groupUniqArray(k)
FROM (
    SELECT {number} AS v, {key} AS k FROM {layout().events} FINAL
    WHERE {scope.where(p)} AND source = 'user' AND ({_ranges_sql(ranges, p)})
      AND {filter_sql(window.meter.filter, p)} AND {self._seen(boundary)}
      AND NOT {self._seen_by(late.since.token, link_txid)}
)
"""
        count, nc, ns, mn, mx, keys = client().query(sql, parameters=p.values).result_rows[0]
        if not count:
            return None
        keys = set(keys)
        if keys and own_ranges:
            q = Params()
            found = (
                client()
                .query(
                    f"SELECT DISTINCT k FROM (SELECT {key_sql(window.meter, q)} AS k "
                    f"FROM {layout().events} FINAL WHERE {scope.where(q)} AND source = 'user' "
                    f"AND ({_ranges_sql(own_ranges, q)}) AND {filter_sql(window.meter.filter, q)} "
                    f"AND {self._seen(boundary)}) WHERE k IN {q(sorted(keys))}",
                    parameters=q.values,
                )
                .result_rows
            )
            keys -= {row[0] for row in found}
        return aggregation.Partial(
            event_count=int(count),
            numeric_count=int(nc),
            numeric_sum=trimmed(ns) if nc else Decimal(0),
            numeric_min=trimmed(mn) if nc else None,
            numeric_max=trimmed(mx) if nc else None,
            distinct=len(keys),
            keys=keys,
        )

    def window_events(self, window: Window, seen_by) -> list[WindowEvent]:
        ranges = utc_ranges(window.ranges)
        if not ranges:
            return []
        boundary = _reading.get()
        scope, link_txid = self._one_customer(window, boundary)
        p = Params()
        seen = "1" if seen_by is None else self._seen_by(seen_by.token, link_txid)
        sql = f"""
SELECT id, timestamp, {number_sql(window.meter, p)}, {key_sql(window.meter, p)}, arrival_txid,
       customer_id = toUUID('00000000-0000-0000-0000-000000000000')
FROM {layout().events} FINAL
WHERE {scope.where(p)} AND source = 'user' AND ({_ranges_sql(ranges, p)})
  AND {filter_sql(window.meter.filter, p)} AND {self._seen(boundary)} AND {seen}
ORDER BY timestamp, id
"""
        return [
            WindowEvent(
                event_id,
                _utc(moment),
                trimmed(number),
                key,
                link_txid if unlinked else txid,
            )
            for event_id, moment, number, key, txid, unlinked in client()
            .query(sql, parameters=p.values)
            .result_rows
        ]

    def customers_of_events(self, event_ids: list) -> list:
        found = set()
        for customers in EventBatch.objects.filter(first_event_id__in=event_ids).values_list(
            "customer_ids", flat=True
        ):
            found.update(customers)
        return sorted(found, key=str)

    def daily_values(self, *, organization_id, since, until) -> list:
        since, until = rollups.floor_day(since), rollups.ceil_day(until)
        meters = list(
            Meter.objects.filter(
                organization_id=organization_id, archived_at__isnull=True
            ).order_by("name")
        )
        days = []
        day = since
        while day < until:
            days.append((day, day + timedelta(days=1)))
            day += timedelta(days=1)
        result = []
        for meter in meters:
            one = series.MeterSeries(meter)
            parts, _ = self.compute(meter, buckets=days) if days else ([], None)
            func = one.func
            one.values = {
                date(lo.year, lo.month, lo.day): aggregation.final_value(func, part)
                for (lo, _hi), part in zip(days, parts, strict=True)
                if (part.distinct if func == "unique" else part.event_count)
            }
            result.append(one)
        return result

    def all_time_partials(self, customer_meters_: list) -> dict:
        """Every pair's all-time partial in one scan of the customers' events: each meter's
        filter and expressions as -If aggregates (customer state reads six meters at once)."""
        if not customer_meters_:
            return {}
        boundary = _reading.get()
        meters_ = {cm.meter_id: cm.meter for cm in customer_meters_}
        by_org: dict = defaultdict(set)
        for cm in customer_meters_:
            by_org[cm.meter.organization_id].add(cm.customer_id)
        wanted = {(cm.customer_id, cm.meter_id) for cm in customer_meters_}
        partials = {}
        for organization_id, customers in by_org.items():
            ordered = [m for m in meters_.values() if m.organization_id == organization_id]
            scope = self._scope(organization_id, customers, boundary)
            p = Params()
            columns = []
            for meter in ordered:
                f, v, k = filter_sql(meter.filter, p), number_sql(meter, p), key_sql(meter, p)
                columns.append(
                    f"countIf({f}), countIf(({v}) IS NOT NULL AND {f}), sumIf({v}, {f}), "
                    f"minIf({v}, {f}), maxIf({v}, {f}), uniqExactIf({k}, {f})"
                )
            sql = (
                f"SELECT {scope.customer(p)} AS c, {', '.join(columns)} "
                f"FROM {layout().events} FINAL WHERE {scope.where(p)} AND source = 'user' "
                f"AND {self._seen(boundary)} GROUP BY c"
            )
            for row in client().query(sql, parameters=p.values).result_rows:
                for n, meter in enumerate(ordered):
                    if (row[0], meter.pk) in wanted:
                        partial = _partial(*row[1 + 6 * n : 7 + 6 * n])
                        if partial.event_count:
                            partials[row[0], meter.pk] = partial
        return partials

    def has_user_events(self, organization_id) -> bool:
        p = Params()
        rows = (
            client()
            .query(
                f"SELECT 1 FROM {layout().events} WHERE organization_id = {p(str(organization_id))} "
                "LIMIT 1",
                parameters=p.values,
            )
            .result_rows
        )
        return bool(rows)


def utc_ranges_keep(buckets) -> list[Range]:
    """Buckets in UTC, keeping empty ones (their position matters)."""
    return [(lo.astimezone(UTC), hi.astimezone(UTC)) for lo, hi in buckets]


def _ranges_sql(ranges: list[Range], p: Params) -> str:
    return " OR ".join(
        f"(timestamp >= fromUnixTimestamp64Micro({p(micros(lo))}, 'UTC') AND "
        f"timestamp < fromUnixTimestamp64Micro({p(micros(hi))}, 'UTC'))"
        for lo, hi in ranges
    )


# --- event lists and lookups (the API's GET /v1/events/) ----------------------------------------


class StoredEvent:
    """A user event read from ClickHouse, with the attributes the event serializer reads."""

    def __init__(self, row, customers: dict, links: dict, parents: dict, children: dict):
        (
            self.id,
            self.organization_id,
            customer_id,
            moment,
            self.name,
            self.source,
            external_customer_id,
            external_id,
            parent_reference,
            metadata,
            ingested_at,
        ) = row
        self.timestamp = _utc(moment)
        self.ingested_at = _utc(ingested_at)
        self.parent_reference = parent_reference or None
        if customer_id == ZERO:
            customer_id = links.get(external_customer_id)
        self.customer_id = customer_id
        self.customer = customers.get(customer_id)
        self.external_customer_id = external_customer_id or None
        self.external_id = external_id or None
        self.parent_id = parents.get(parent_reference) if parent_reference else None
        self.child_count = children.get(self.id, 0)
        self.metadata = jsonio.loads(metadata)
        cost = self.metadata.get("_cost")
        self.cost_amount = (
            str(cost["amount"]) if isinstance(cost, dict) and "amount" in cost else None
        )


EVENT_LIST_COLUMNS = (
    "id, organization_id, customer_id, timestamp, name, source, external_customer_id, "
    "external_id, parent_reference, metadata, ingested_at"
)


def event_where(organization_id, criteria: dict, p: Params) -> str:
    """The list filters of the event API (and the admin's, across organizations when
    `organization_id` is None) over ClickHouse (the user events it holds, and the canceled
    ones with `include_canceled`)."""
    parts = ["1"] if organization_id is None else [f"organization_id = {p(str(organization_id))}"]
    # canceled events (usage corrections) only when asked for: the admin, the API on request
    sources = (
        {EventSource.USER, EventSource.CANCELED}
        if criteria.get("include_canceled")
        else {EventSource.USER}
    )
    if criteria.get("sources"):
        sources &= set(criteria["sources"])
    if not sources:
        return "0"
    parts.append(f"source IN {p(sorted(str(s) for s in sources))}")
    customer_ids, external_ids = criteria.get("customer_ids"), criteria.get("external_ids")
    if customer_ids or external_ids:
        ids = {str(c) for c in customer_ids or ()}
        if external_ids:
            ids |= {
                str(c)
                for c in Customer.objects.filter(
                    organization_id=organization_id, external_id__in=external_ids
                ).values_list("pk", flat=True)
            }
        # unlinked events sent with the customers' external ids, in their own organization
        unlinked = {(str(organization_id), x) for x in external_ids or ()}
        unlinked |= {
            (str(org), x)
            for org, x in CustomerLink.objects.filter(customer_id__in=list(ids)).values_list(
                "organization_id", "external_customer_id"
            )
        }
        sent_with = (
            f"external_customer_id IN {p(sorted(x for _, x in unlinked) or [''])}"
            if organization_id is not None
            else "concat(toString(organization_id), '/', external_customer_id) IN "
            f"{p(sorted(f'{org}/{x}' for org, x in unlinked) or [''])}"
        )
        parts.append(
            f"(customer_id IN {Params.literal_uuids(sorted(ids))} OR (customer_id = "
            f"toUUID('00000000-0000-0000-0000-000000000000') AND {sent_with}))"
        )
    if criteria.get("names"):
        parts.append(f"name IN {p(criteria['names'])}")
    if criteria.get("start"):
        parts.append(
            f"timestamp >= fromUnixTimestamp64Micro({p(micros(criteria['start']))}, 'UTC')"
        )
    if criteria.get("end"):
        parts.append(f"timestamp <= fromUnixTimestamp64Micro({p(micros(criteria['end']))}, 'UTC')")
    if criteria.get("before"):
        parts.append(
            f"timestamp < fromUnixTimestamp64Micro({p(micros(criteria['before']))}, 'UTC')"
        )
    if criteria.get("search"):
        parts.append(_search_sql(criteria["search"], p))
    if criteria.get("query"):
        parts.append(f"positionCaseInsensitiveUTF8(name, {p(criteria['query'])}) > 0")
    if criteria.get("metadata"):
        parts.append(metadata_filter_sql(criteria["metadata"], p))
    for condition in criteria.get("filters", ()):
        parts.append(filter_sql(condition, p))
    if criteria.get("parent_refs") is not None:
        parts.append(f"parent_reference IN {p(criteria['parent_refs'] or [''])}")
    if criteria.get("parent_ids") is not None:
        parts.append(f"parent_reference IN {p(references(criteria['parent_ids']) or [''])}")
    if criteria.get("ids") is not None:
        parts.append(f"id IN {Params.literal_uuids([str(i) for i in criteria['ids']] or [])}")
    if criteria.get("depth_from_roots") is not None:
        parts.append(_tree_sql(organization_id, criteria["depth_from_roots"], p))
    return " AND ".join(parts)


def _stored_rows(organization_id, ids) -> dict:
    """id → the row as stored (COLUMNS order, times in UTC), as FINAL reads it."""
    if not ids:
        return {}
    p = Params()
    rows = (
        client()
        .query(
            f"SELECT {', '.join(COLUMNS)} FROM {layout().events} FINAL "
            f"WHERE organization_id = {p(str(organization_id))} "
            f"AND id IN {Params.literal_uuids(sorted({str(i) for i in ids}))}",
            parameters=p.values,
        )
        .result_rows
    )
    found = {}
    for row in rows:
        row = list(row)
        row[2], row[9] = _utc(row[2]), _utc(row[9])
        found[row[3]] = row
    return found


def _found(row: list, links: dict, parents: dict, corrected: set) -> FoundEvent:
    """A stored row as a correction needs it: an unlinked row is its linked customer's, and
    arrived with the link (as `window_events` reports it)."""
    customer, arrival = row[1], row[10]
    if customer == ZERO:
        customer, link_txid = links.get(row[6], (None, None))
        arrival = link_txid or arrival
    return FoundEvent(
        id=row[3],
        name=row[4],
        source=EventSource.CANCELED if row[3] in corrected else row[5],
        timestamp=row[2],
        customer_id=customer,
        external_customer_id=row[6] or None,
        external_id=row[7] or None,
        parent_id=parents.get(row[8]) if row[8] else None,
        parent_reference=row[8] or None,
        arrival_txid=arrival,
        metadata=jsonio.loads(row[15]) if row[15] else {},
    )


def references(event_ids: list) -> list[str]:
    """How children name these events: by id, or by their external id (their key)."""
    keys = EventKey.objects.filter(event_id__in=event_ids).values_list("external_id", flat=True)
    return [str(i) for i in event_ids] + list(keys)


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _search_sql(term: str, p: Params) -> str:
    """The admin's exact search: the event's id or external id, or its customer's external id
    (sent with the event, or held by the customer it was sent for)."""
    customers = [
        str(c) for c in Customer.objects.filter(external_id=term).values_list("pk", flat=True)[:100]
    ]
    alternatives = [
        f"external_id = {p(term)}",
        "(customer_id = toUUID('00000000-0000-0000-0000-000000000000') AND "
        f"external_customer_id = {p(term)})",
    ]
    if customers:
        alternatives.append(f"customer_id IN {Params.literal_uuids(customers)}")
    event_id = _as_uuid(term)
    if event_id is not None:
        alternatives.append(f"id = toUUID({p(str(event_id))})")
    return "(" + " OR ".join(alternatives) + ")"


def _tree_sql(organization_id, depth: int, p: Params) -> str:
    """Events at most `depth` levels below a root, as PostgreSQL's recursive query over
    `parent_id` answers it: a root names no parent, or one that no event of the organization
    is (by id or external id); level k+1 names an event of level k. One IN subquery per level
    (depth is at most 5)."""
    org = f"organization_id = {p(str(organization_id))}"
    names = "arrayJoin(arrayFilter(x -> x != '', [toString(id), external_id]))"
    level = (
        f"(parent_reference = '' OR parent_reference NOT IN "
        f"(SELECT {names} FROM {layout().events} WHERE {org}))"
    )
    levels = [level]
    for _ in range(depth):
        level = (
            f"(parent_reference != '' AND parent_reference IN "
            f"(SELECT {names} FROM {layout().events} WHERE {org} AND {level}))"
        )
        levels.append(level)
    return "(" + " OR ".join(levels) + ")"


def _parent_ids(organization_id, references: set) -> dict:
    """parent reference → parent id: the event whose external id it is, or whose id it is when
    that event exists (as PostgreSQL resolves it)."""
    parents: dict = {}
    if not references:
        return parents
    for key, event_id in EventKey.objects.filter(
        organization_id=organization_id, external_id__in=references
    ).values_list("external_id", "event_id"):
        parents[key] = event_id
    by_id = {
        reference: _as_uuid(reference)
        for reference in references - set(parents)
        if _as_uuid(reference) is not None
    }
    if by_id:
        p = Params()
        wanted = sorted({str(i) for i in by_id.values()})
        existing = {
            row[0]
            for row in client()
            .query(
                f"SELECT DISTINCT id FROM {layout().events} WHERE organization_id = "
                f"{p(str(organization_id))} AND id IN {Params.literal_uuids(wanted)}",
                parameters=p.values,
            )
            .result_rows
        }
        existing |= set(
            Event.objects.filter(organization_id=organization_id, pk__in=wanted).values_list(
                "pk", flat=True
            )
        )
        parents.update({r: i for r, i in by_id.items() if i in existing})
    return parents


def _parents_and_children(organization_id, rows) -> tuple[dict, dict]:
    """parent reference → parent id (an event id, or an external id), and event id → number of
    events naming it as parent."""
    parents = _parent_ids(organization_id, {r[8] for r in rows if r[8]})
    children: dict = {}
    names = {str(r[0]): r[0] for r in rows} | {r[7]: r[0] for r in rows if r[7]}
    if names:
        p = Params()
        for reference, count in (
            client()
            .query(
                f"SELECT parent_reference, count() FROM {layout().events} FINAL "
                f"WHERE organization_id = {p(str(organization_id))} "
                f"AND parent_reference IN {p(sorted(names))} GROUP BY parent_reference",
                parameters=p.values,
            )
            .result_rows
        ):
            children[names[reference]] = children.get(names[reference], 0) + count
    return parents, children


def list_events(organization_id, criteria: dict, *, descending: bool, limit: int) -> list:
    """The first `limit` user events matching `criteria`, by timestamp then id."""
    p = Params()
    direction = "DESC" if descending else "ASC"
    rows = (
        client()
        .query(
            f"SELECT {EVENT_LIST_COLUMNS} FROM {layout().events} FINAL "
            f"WHERE {event_where(organization_id, criteria, p)} "
            f"ORDER BY timestamp {direction}, id {direction} LIMIT {int(limit)}",
            parameters=p.values,
        )
        .result_rows
    )
    if not rows:
        return []
    by_organization = defaultdict(list)
    for row in rows:
        by_organization[row[1]].append(row)
    links, parents, children = {}, {}, {}
    for organization, its in by_organization.items():
        unlinked = {r[6] for r in its if r[2] == ZERO}
        found = dict(
            CustomerLink.objects.filter(
                organization_id=organization, external_customer_id__in=unlinked
            ).values_list("external_customer_id", "customer_id")
        )
        links[organization] = found
        parents[organization], found_children = _parents_and_children(organization, its)
        children.update(found_children)
    wanted = {r[2] for r in rows if r[2] != ZERO} | {
        c for found in links.values() for c in found.values()
    }
    customers = Customer.objects.in_bulk(list(wanted))
    return [StoredEvent(r, customers, links[r[1]], parents[r[1]], children) for r in rows]


def count_events(organization_id, criteria: dict, *, cap: int) -> int:
    p = Params()
    return (
        client()
        .query(
            f"SELECT count() FROM (SELECT 1 FROM {layout().events} FINAL "
            f"WHERE {event_where(organization_id, criteria, p)} LIMIT {int(cap)})",
            parameters=p.values,
        )
        .result_rows[0][0]
    )


def customer_event_names(organization_id, *, customer_ids, external_ids, sources, query) -> list:
    """User event names from the store, system ones (credits, resets) from PostgreSQL."""
    rows = []
    if not sources or "system" in sources:
        rows += postgres.event_names(
            organization_id,
            customer_ids=customer_ids,
            external_ids=external_ids,
            sources=["system"],
            query=query,
        )
    if sources and "user" not in sources:
        return rows
    p = Params()
    criteria = {"customer_ids": customer_ids, "external_ids": external_ids, "query": query}
    sql = (
        f"SELECT name, count(), min(timestamp), max(timestamp) FROM {layout().events} FINAL "
        f"WHERE {event_where(organization_id, criteria, p)} AND source = 'user' GROUP BY name"
    )
    for name, occurrences, first, last in client().query(sql, parameters=p.values).result_rows:
        rows.append(
            {
                "name": name,
                "source": "user",
                "occurrences": occurrences,
                "first_seen": _utc(first),
                "last_seen": _utc(last),
            }
        )
    return rows


# ClickHouse's error code for max_execution_time
TIMEOUT_EXCEEDED = 159


def preview(organization_id, *, filter_, aggregation, start, end, timeout_ms) -> PreviewFigures:
    """The meter editor's preview in one scan: grouping sets for the total, customers (linked
    through their external id too) and UTC days."""
    meter = SimpleNamespace(aggregation=aggregation)
    scope = Scope(organization_id, None, _all_links(organization_id))
    p = Params()
    sql = f"""
SELECT grouping(c), grouping(d), c, d, count(), count(v), sum(v), min(v), max(v), uniqExact(k)
FROM (
    SELECT {scope.customer(p)} AS c, toDate(timestamp, 'UTC') AS d, {number_sql(meter, p)} AS v,
           {key_sql(meter, p)} AS k
    FROM {layout().events} FINAL
    WHERE organization_id = {p(str(organization_id))} AND source = 'user'
      AND timestamp >= fromUnixTimestamp64Micro({p(micros(start))}, 'UTC')
      AND timestamp < fromUnixTimestamp64Micro({p(micros(end))}, 'UTC')
      AND {filter_sql(filter_, p)}
)
GROUP BY GROUPING SETS ((), (c), (d))
"""
    limits = {
        "max_execution_time": max(timeout_ms / 1000, 0.001),
        "force_grouping_standard_compatibility": 1,  # grouping() is 1 for a rolled-up column
    }
    try:
        rows = client().query(sql, parameters=p.values, settings=limits).result_rows
    except DatabaseError as exc:
        if f"code: {TIMEOUT_EXCEEDED}" not in str(exc).lower():
            raise
        raise ReadTimedOut(str(exc)) from exc
    figures = PreviewFigures()
    for g_customer, g_day, customer, day, count, nc, ns, mn, mx, distinct in rows:
        numbers = (
            int(count),
            int(nc),
            trimmed(ns) if nc else None,
            trimmed(mn) if nc else None,
            trimmed(mx) if nc else None,
            int(distinct),
        )
        if g_customer and g_day:
            figures.total = numbers
        elif not g_customer:
            figures.customers[None if customer == ZERO else customer] = numbers
        else:
            figures.days[day] = numbers
    return figures


def _all_links(organization_id) -> dict:
    """external id → customer id of every link of the organization."""
    return dict(
        CustomerLink.objects.filter(organization_id=organization_id).values_list(
            "external_customer_id", "customer_id"
        )
    )
