"""The PostgreSQL event store (the default): events in `metering_event`, aggregate reads from the
rollups maintained at ingest (`metering.rollups`) completed by raw events, read boundaries that
are PostgreSQL snapshots compared with each event's `arrival_txid`."""

from collections import defaultdict
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q
from django.db.utils import OperationalError

from core.db import bound_cursor
from customers.models import Customer
from metering import aggregation, customer_meters, filters, ingest, jsonio, locks, rollups, series
from metering.errors import InvalidCorrection
from metering.models import Event, MeterState
from metering.stores.base import (
    EventStore,
    PreviewFigures,
    Range,
    ReadTimedOut,
    StoredEvent,
    Window,
    WindowEvent,
    utc_ranges,
)


def _ceil_hour(moment):
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + aggregation.HOUR


def _floor_hour(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def arrived_after_sql(alias: str = "e") -> str:
    """True for an event that `%(since)s` (a snapshot) did not see: its arrival transaction is not
    visible in it. Events stored before arrivals were recorded fall back to `ingested_at`."""
    return (
        f"(CASE WHEN {alias}.arrival_txid IS NULL THEN {alias}.ingested_at > %(since_at)s "
        f"ELSE NOT pg_visible_in_snapshot({alias}.arrival_txid::text::xid8, "
        "%(since)s::pg_snapshot) END)"
    )


RAW_SQL = """
SELECT w.k, count(x.num), count(*), COALESCE(sum(x.num), 0)
FROM unnest(%s::int[], %s::uuid[], %s::timestamptz[], %s::timestamptz[]) AS w(k, customer_id, ws, we)
CROSS JOIN LATERAL (
    SELECT {num} AS num FROM metering_event e
    WHERE e.customer_id = w.customer_id AND e.timestamp >= w.ws AND e.timestamp < w.we
      AND e.source = 'user' AND {filter} OFFSET 0
) x
GROUP BY w.k
"""

LATE_SQL = """
SELECT count(*), count(x.num), COALESCE(sum(x.num), 0), min(x.num), max(x.num),
       array_remove(array_agg(DISTINCT x.vk), NULL)
FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS w(ws, we)
CROSS JOIN LATERAL (
    SELECT {num} AS num, {key} AS vk FROM metering_event e
    WHERE e.customer_id = %(customer)s AND e.source = 'user'
      AND e.timestamp >= w.ws AND e.timestamp < w.we AND {arrived} AND {filter} OFFSET 0
) x
"""

# which of the late events' values the window's own events already have (unique meters)
SEEN_KEYS_SQL = """
SELECT DISTINCT x.vk
FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS w(ws, we)
CROSS JOIN LATERAL (
    SELECT {key} AS vk FROM metering_event e
    WHERE e.customer_id = %(customer)s AND e.source = 'user'
      AND e.timestamp >= w.ws AND e.timestamp < w.we AND {filter} OFFSET 0
) x
WHERE x.vk = ANY(%(keys)s::text[])
"""

EVENTS_SQL = """
SELECT e.id, e.timestamp, {num}, {key}, e.arrival_txid
FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS w(ws, we)
JOIN metering_event e
  ON e.customer_id = %(customer)s AND e.source = 'user'
 AND e.timestamp >= w.ws AND e.timestamp < w.we
WHERE {filter} AND {visible}
ORDER BY e.timestamp, e.id
"""

CUSTOMERS_OF_EVENTS_SQL = """
SELECT DISTINCT customer_id FROM metering_event WHERE id = ANY(%s) AND customer_id IS NOT NULL
"""

HAS_EVENTS_SQL = (
    "SELECT EXISTS (SELECT 1 FROM metering_event WHERE organization_id = %s "
    "AND customer_id IS NOT NULL AND source = 'user')"
)

LINK_SQL = """
UPDATE metering_event SET customer_id = %(customer)s, arrival_txid = __TXID__
WHERE organization_id = %(org)s AND external_customer_id = %(external_id)s AND customer_id IS NULL
RETURNING id
""".replace("__TXID__", ingest.CURRENT_TXID_SQL)


PREVIEW_SQL = """
WITH ev AS MATERIALIZED (
    SELECT e.customer_id, (e.timestamp AT TIME ZONE 'UTC')::date AS day,
           {num} AS num, {key} AS vk
    FROM metering_event e
    WHERE e.organization_id = %s AND e.source = 'user'
      AND e.timestamp >= %s AND e.timestamp < %s AND {where}
)
SELECT GROUPING(customer_id), GROUPING(day), customer_id, day,
       count(*), count(num), sum(num), min(num), max(num), count(DISTINCT vk)
FROM ev
GROUP BY GROUPING SETS ((), (customer_id), (day))
"""


def customer_q(customer_ids: list, external_ids: list) -> Q:
    """Events of these customers, by id or external id (including events sent for an external
    id before its customer existed).

    A linked event sent with an external id belongs to the customer holding that id (ids are
    immutable once set and kept on soft delete), so "external id in X" is "customer with an
    external id in X" (`event_customer_ts`) or "not linked yet, sent with an id in X" (the
    partial `event_unlinked_customer`): no index on the events' external customer id needed."""
    q = Q()
    if customer_ids:
        q |= Q(customer_id__in=customer_ids)
    if external_ids:
        q |= Q(customer_id__isnull=True, external_customer_id__in=external_ids) | Q(
            customer_id__in=Customer.objects.filter(external_id__in=external_ids).values("pk")
        )
    return q


def event_names(organization_id, *, customer_ids, external_ids, sources, query) -> list[dict]:
    """Per-customer event names from the customer's own events in `metering_event` (indexed by
    customer): in ClickHouse mode the system events'."""
    events = Event.objects.filter(organization_id=organization_id).filter(
        customer_q(customer_ids, external_ids)
    )
    if sources:
        events = events.filter(source__in=sources)
    if query:
        events = events.filter(name__icontains=query)
    return list(
        events.order_by()
        .values("name", "source")
        .annotate(occurrences=Count("*"), first_seen=Min("timestamp"), last_seen=Max("timestamp"))
    )


def _named(sql: str, params: list, prefix: str) -> tuple[str, dict]:
    """Positional %s of a compiled expression → named parameters, to mix with named ones."""
    parts = sql.split("%s")
    named = {f"{prefix}{n}": value for n, value in enumerate(params)}
    out = parts[0] + "".join(f"%({prefix}{n})s{part}" for n, part in enumerate(parts[1:]))
    return out, named


def _expressions(meter) -> tuple[str, str, str, dict]:
    func, prop = meter.aggregation["func"], meter.aggregation.get("property")
    num_sql, num_params = (
        filters.numeric_sql(prop) if func in filters.PROPERTY_FUNCS else ("NULL::numeric", [])
    )
    key_sql, key_params = filters.value_key_sql(prop) if func == "unique" else ("NULL::text", [])
    filter_sql, filter_params = filters.compile_filter(meter.filter)
    num_sql, num_named = _named(num_sql, num_params, "num")
    key_sql, key_named = _named(key_sql, key_params, "key")
    filter_sql, filter_named = _named(filter_sql, filter_params, "flt")
    return num_sql, key_sql, filter_sql, {**num_named, **key_named, **filter_named}


def _columns(rows: list[tuple]) -> list[list]:
    return [
        [row[0] for row in rows],
        [str(row[1]) for row in rows],
        [row[2] for row in rows],
        [row[3] for row in rows],
    ]


FIND_EVENTS_SQL = """
SELECT id, name, source, timestamp, customer_id, external_customer_id, external_id, parent_id,
       parent_reference, arrival_txid, metadata::text
FROM metering_event
WHERE organization_id = %(org)s
  AND (id = ANY(%(ids)s::uuid[]) OR external_id = ANY(%(external_ids)s::text[]))
"""

CANCEL_SQL = """
UPDATE metering_event SET source = 'canceled'
WHERE organization_id = %(org)s AND id = ANY(%(ids)s::uuid[]) AND source = 'user'
RETURNING id
"""

INHERIT_ARRIVAL_SQL = """
UPDATE metering_event e SET arrival_txid = t.txid
FROM unnest(%(ids)s::uuid[], %(txids)s::bigint[]) AS t(id, txid)
WHERE e.id = t.id
"""


class PostgresStore(EventStore):
    name = "postgres"
    rollups = True

    def write(self, *, organization, rows: list) -> list:
        return ingest.insert_events(organization=organization, rows=rows)

    def link(self, *, customer) -> int:
        with bound_cursor() as cursor:
            locks.lock_external_ids(
                cursor, customer.organization_id, [customer.external_id], exclusive=True
            )
            cursor.execute(
                LINK_SQL,
                {
                    "customer": customer.pk,
                    "org": customer.organization_id,
                    "external_id": customer.external_id,
                },
            )
            ids = [row[0] for row in cursor.fetchall()]
            if ids:
                rollups.after_insert(
                    cursor, organization_id=customer.organization_id, event_ids=ids
                )
                cursor.execute(ingest.FIRST_EVENT_SQL, {"ids": ids})  # ingestion's lock order
        return len(ids)

    def find_events(self, organization_id, *, ids: list, external_ids: list) -> list:
        if not ids and not external_ids:
            return []
        with connection.cursor() as cursor:
            cursor.execute(
                FIND_EVENTS_SQL,
                {"org": organization_id, "ids": ids, "external_ids": external_ids},
            )
            return [
                StoredEvent(*row[:-1], jsonio.loads(row[-1]) if row[-1] else {})
                for row in cursor.fetchall()
            ]

    def correct(self, *, organization, corrections: list) -> list:
        """The originals marked, the replacements inserted (one by one: their ids must pair
        with the corrections), and the customer-days they touch rolled up again under the
        organization's exclusive lock (after the external-id slots: the lock order)."""
        ids = [c.event.id for c in corrections]
        with bound_cursor() as cursor:
            locks.lock_external_ids(
                cursor,
                organization.pk,
                [c.event.external_customer_id for c in corrections if c.replacement],
            )
            locks.lock_organization(cursor, organization.pk, exclusive=True)
            cursor.execute(CANCEL_SQL, {"org": organization.pk, "ids": ids})
            if cursor.rowcount != len(ids):
                raise InvalidCorrection(
                    "One of these events was corrected by another request meanwhile.",
                    type_="already_corrected",
                )
        replacement_ids = []
        for correction in corrections:
            if correction.replacement is None:
                replacement_ids.append(None)
                continue
            (new_id,) = ingest.insert_events(
                organization=organization, rows=[correction.replacement]
            )
            replacement_ids.append(new_id)
        inherited = [
            (new_id, c.event.arrival_txid)
            for c, new_id in zip(corrections, replacement_ids, strict=True)
            if new_id is not None and c.event.arrival_txid is not None
        ]
        with bound_cursor() as cursor:
            if inherited:
                cursor.execute(
                    INHERIT_ARRIVAL_SQL,
                    {"ids": [i for i, _ in inherited], "txids": [t for _, t in inherited]},
                )
            rollups.rebuild_customer_days(
                cursor,
                organization.pk,
                [
                    (c.event.customer_id, rollups.floor_day(c.event.timestamp))
                    for c in corrections
                    if c.event.customer_id is not None
                ],
            )
        return replacement_ids

    def compute(self, meter, **kwargs):
        return aggregation.postgres_compute(meter, **kwargs)

    def additive_values(self, meter, windows: list[Window]) -> dict:
        """Whole hours from the rollups (every tier, pending deltas included), edges — and
        everything while the meter backfills — from raw events on the customer index."""
        func = meter.aggregation["func"]
        use_rollups = meter.state == MeterState.READY
        hour_rows, raw_rows = [], []
        for index, window in enumerate(windows):
            for start, end in utc_ranges(window.ranges):
                hs, he = _ceil_hour(start), _floor_hour(end)
                if not use_rollups or hs >= he:
                    raw_rows.append((index, window.customer_id, start, end))
                    continue
                hour_rows.append((index, window.customer_id, hs, he))
                if start < hs:
                    raw_rows.append((index, window.customer_id, start, hs))
                if he < end:
                    raw_rows.append((index, window.customer_id, he, end))
        totals: dict = defaultdict(lambda: Decimal(0))
        with connection.cursor() as cursor:
            if hour_rows:
                # window_partials keys rows by their position: a window may have several ranges
                keyed = [(n, *row[1:]) for n, row in enumerate(hour_rows)]
                for n, (count, _numeric, total, _low, _high) in rollups.window_partials(
                    cursor, meter.pk, keyed
                ).items():
                    key = hour_rows[n][0]
                    totals[key] = aggregation.EXACT.add(
                        totals[key], Decimal(count if func == "count" else total)
                    )
            if raw_rows:
                filter_sql, filter_params = filters.compile_filter(meter.filter)
                if func == "sum":
                    num_sql, num_params = filters.numeric_sql(meter.aggregation.get("property"))
                else:
                    num_sql, num_params = "NULL::numeric", []
                cursor.execute(
                    RAW_SQL.format(num=num_sql, filter=filter_sql),
                    [*_columns(raw_rows), *num_params, *filter_params],
                )
                for index, _numeric, count, total in cursor.fetchall():
                    # exact: the default context would round a sum past 28 digits
                    totals[index] = aggregation.EXACT.add(
                        totals[index], Decimal(count if func == "count" else total)
                    )
        return dict(totals)

    def late_partial(self, window: Window, own_ranges: list[Range]):
        late = window.late
        ranges = utc_ranges(late.ranges) if late is not None else []
        if not ranges:
            return None
        num_sql, key_sql, filter_sql, params = _expressions(window.meter)
        params.update(
            customer=str(window.customer_id),
            since=late.since.token,
            since_at=late.since.taken_at,
            starts=[lo for lo, _ in ranges],
            ends=[hi for _, hi in ranges],
        )
        sql = LATE_SQL.format(
            num=num_sql, key=key_sql, arrived=arrived_after_sql(), filter=filter_sql
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            count, numeric_count, numeric_sum, low, high, keys = cursor.fetchone()
            if not count:
                return None
            keys = set(keys or ())
            if keys and own_ranges:
                params.update(
                    starts=[lo for lo, _ in own_ranges],
                    ends=[hi for _, hi in own_ranges],
                    keys=sorted(keys),
                )
                cursor.execute(SEEN_KEYS_SQL.format(key=key_sql, filter=filter_sql), params)
                keys -= {row[0] for row in cursor.fetchall()}
        return aggregation.Partial(
            event_count=count,
            numeric_count=numeric_count,
            numeric_sum=Decimal(numeric_sum),
            numeric_min=low,
            numeric_max=high,
            distinct=len(keys),
            keys=keys,
        )

    def window_events(self, window: Window, seen_by) -> list[WindowEvent]:
        ranges = utc_ranges(window.ranges)
        if not ranges:
            return []
        num_sql, key_sql, filter_sql, params = _expressions(window.meter)
        visible = "TRUE" if seen_by is None else f"NOT {arrived_after_sql()}"
        params.update(
            customer=str(window.customer_id),
            starts=[lo for lo, _ in ranges],
            ends=[hi for _, hi in ranges],
        )
        if seen_by is not None:
            params.update(since=seen_by.token, since_at=seen_by.taken_at)
        sql = EVENTS_SQL.format(num=num_sql, key=key_sql, filter=filter_sql, visible=visible)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [WindowEvent(*row) for row in cursor.fetchall()]

    def customers_of_events(self, event_ids: list) -> list:
        with connection.cursor() as cursor:
            cursor.execute(CUSTOMERS_OF_EVENTS_SQL, [event_ids])
            return [row[0] for row in cursor.fetchall()]

    def daily_values(self, *, organization_id, since, until) -> list:
        return series.daily_values(organization_id=organization_id, since=since, until=until)

    def all_time_partials(self, customer_meters_: list) -> dict:
        return customer_meters._all_time_partials(customer_meters_)

    def has_user_events(self, organization_id) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(HAS_EVENTS_SQL, [organization_id])
            return cursor.fetchone()[0]

    def customer_event_names(
        self, organization_id, *, customer_ids, external_ids, sources=None, query=None
    ) -> list[dict]:
        return event_names(
            organization_id,
            customer_ids=customer_ids,
            external_ids=external_ids,
            sources=sources,
            query=query,
        )

    def preview(self, organization_id, *, filter_, aggregation, start, end, timeout_ms):
        """One statement over the raw events, grouping sets for the total, customers and days."""
        func, prop = aggregation["func"], aggregation.get("property")
        num_sql, num_params = (
            filters.numeric_sql(prop) if func in filters.PROPERTY_FUNCS else ("NULL::numeric", [])
        )
        key_sql, key_params = (
            filters.value_key_sql(prop) if func == "unique" else ("NULL::text", [])
        )
        where_sql, where_params = filters.compile_filter(filter_)
        sql = PREVIEW_SQL.format(num=num_sql, key=key_sql, where=where_sql)
        params = [*num_params, *key_params, organization_id, start, end, *where_params]
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                # a broad filter on a big organization must not hold the admin page for long
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true)", [str(timeout_ms)]
                )
                cursor.execute(sql, params)
                rows = cursor.fetchall()
                cursor.execute("SELECT set_config('statement_timeout', '0', true)")
        except OperationalError as exc:
            raise ReadTimedOut(str(exc)) from exc
        figures = PreviewFigures()
        for g_customer, g_day, customer_id, day, *numbers in rows:
            if g_customer and g_day:
                figures.total = tuple(numbers)
            elif not g_customer:
                figures.customers[customer_id] = tuple(numbers)
            else:
                figures.days[day] = tuple(numbers)
        return figures
