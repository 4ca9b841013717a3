"""Metering's query API: what the apps above read of usage, and the only place they read it (no
SQL over the events table outside `metering`). Every read names windows — a meter, a customer,
time ranges — never a table, so a second event store can stand behind the same functions.

- `consistent_read()` opens a **committed read boundary**: every read inside it sees exactly the
  ingests that had committed when it began, and the boundary names that set. A later read can
  then ask for the events that *arrived after* it (an ingest, or the linking of a customer,
  that the boundary did not see) — which is how billing puts each event into exactly one
  period's set however ingests and closes interleave. PostgreSQL: a REPEATABLE READ snapshot
  (`pg_current_snapshot()`), compared with each event's `arrival_txid`.
- `window_values(windows)`: a meter's value over each window (several time ranges of one
  customer), count/sum set-based for many windows at once, avg/min/max/unique window by window,
  optionally joined by the late arrivals of earlier ranges (`Arrivals`).
- `credited_in_windows(windows)`: credits granted inside each window.
- `window_events(window)`: the raw matching events of a window (audits, tests).
- `bucket_values(...)`: a customer's value per bucket (charts); `daily_values(...)`: every meter's
  value per UTC day (dashboards); `customers_of_events(...)`: whose usage a batch was.
"""

import json
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction

from metering import aggregation, customer_meters, filters, rollups, series
from metering.models import Meter, MeterState

ADDITIVE = ("count", "sum")
HOUR = timedelta(hours=1)
Range = tuple[datetime, datetime]


# --- read boundaries ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadBoundary:
    """What a read saw: a committed snapshot (`token`, opaque to callers: store it as text) and
    the time it was taken."""

    token: str
    taken_at: datetime


SNAPSHOT_SQL = "SELECT pg_current_snapshot()::text, pg_current_xact_id_if_assigned()::text, now()"


@contextmanager
def consistent_read():
    """Yields the boundary of the reads made inside the block.

    Outside a transaction (every production caller: cycle closes, revocations, plan changes)
    this is a REPEATABLE READ transaction: all reads share one snapshot, and the boundary is that
    snapshot. Inside a caller's transaction (tests) the reads keep that transaction's isolation;
    the boundary is then taken when the block starts and counts the transaction's own writes as
    seen."""
    if connection.in_atomic_block:
        with transaction.atomic():  # a savepoint: a failed read leaves the caller's work intact
            yield _boundary()
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield _boundary()


def _boundary() -> ReadBoundary:
    with connection.cursor() as cursor:
        cursor.execute(SNAPSHOT_SQL)
        snapshot, own, taken_at = cursor.fetchone()
    return ReadBoundary(_seeing_own_writes(snapshot, own), taken_at)


def _seeing_own_writes(snapshot: str, own: str | None) -> str:
    """A snapshot never lists its own transaction as running, but the transaction's id may lie
    at or past the snapshot's xmax (then it would read as not yet started): extend xmax past it,
    keeping every id in between as running (they had not committed when the snapshot was
    taken)."""
    if own is None:
        return snapshot
    xmin, xmax, running = snapshot.split(":")
    own_id, xmax_id = int(own), int(xmax)
    if own_id < xmax_id:
        return snapshot
    ids = sorted({int(x) for x in running.split(",") if x} | set(range(xmax_id, own_id)))
    return f"{xmin}:{own_id + 1}:{','.join(map(str, ids))}"


def _arrived_after_sql(alias: str = "e") -> str:
    """True for an event that `%(since)s` (a snapshot) did not see: its arrival transaction is not
    visible in it. Events stored before arrivals were recorded fall back to `ingested_at`."""
    return (
        f"(CASE WHEN {alias}.arrival_txid IS NULL THEN {alias}.ingested_at > %(since_at)s "
        f"ELSE NOT pg_visible_in_snapshot({alias}.arrival_txid::text::xid8, "
        "%(since)s::pg_snapshot) END)"
    )


# --- windows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrivals:
    """Events with timestamps in `ranges` that arrived after the boundary `since`."""

    ranges: tuple[Range, ...]
    since: ReadBoundary


@dataclass(frozen=True)
class Window:
    """Usage of `meter` by `customer_id` with event timestamps in any of `ranges` (sorted,
    disjoint, each [start, end)). `late` (avg/min/max/unique) adds earlier events that arrived
    after a boundary: they join the window's set."""

    key: object
    meter: Meter
    customer_id: object
    ranges: tuple[Range, ...]
    late: Arrivals | None = None


@dataclass(frozen=True)
class WindowValue:
    value: Decimal
    late_events: int = 0  # how many late arrivals joined the window's set


def _ranges(ranges) -> list[Range]:
    return [(lo.astimezone(UTC), hi.astimezone(UTC)) for lo, hi in ranges if lo < hi]


def _ceil_hour(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + HOUR


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def window_values(windows: list[Window]) -> dict:
    """key → WindowValue. count/sum: one or two statements per meter for all its windows; the
    others window by window (their values don't add up across ranges)."""
    result = {window.key: WindowValue(Decimal(0)) for window in windows}
    by_meter: dict = defaultdict(list)
    for window in windows:
        by_meter[window.meter.pk].append(window)
    for group in by_meter.values():
        meter = group[0].meter
        if meter.aggregation.get("func") in ADDITIVE:
            for key, value in _additive(meter, group).items():
                result[key] = WindowValue(value)
            continue
        for window in group:
            result[window.key] = _set_value(window)
    return result


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


def _additive(meter: Meter, windows: list[Window]) -> dict:
    """count/sum over many windows of one meter: whole hours from the rollups (every tier,
    pending deltas included), edges — and everything while the meter backfills — from raw events
    on the customer index."""
    func = meter.aggregation["func"]
    use_rollups = meter.state == MeterState.READY
    hour_rows, raw_rows = [], []
    for index, window in enumerate(windows):
        for start, end in _ranges(window.ranges):
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
                totals[hour_rows[n][0]] += Decimal(count if func == "count" else total)
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
                totals[index] += Decimal(count if func == "count" else total)
    return {windows[index].key: value for index, value in totals.items()}


def _columns(rows: list[tuple]) -> list[list]:
    return [
        [row[0] for row in rows],
        [str(row[1]) for row in rows],
        [row[2] for row in rows],
        [row[3] for row in rows],
    ]


def _set_value(window: Window) -> WindowValue:
    meter = window.meter
    ranges = _ranges(window.ranges)
    own = aggregation.Partial()
    if ranges:
        _, own = aggregation.compute(
            meter,
            buckets=ranges,
            customer_ids=[window.customer_id],
            use_rollups=meter.state == MeterState.READY,
        )
    late = _late_partial(window, ranges)
    if late is None:
        return WindowValue(aggregation.final_value(meter.aggregation["func"], own))
    return WindowValue(
        aggregation.final_value(meter.aggregation["func"], _joined(own, late)), late.event_count
    )


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


def _named(sql: str, params: list, prefix: str) -> tuple[str, dict]:
    """Positional %s of a compiled expression → named parameters, to mix with named ones."""
    parts = sql.split("%s")
    named = {f"{prefix}{n}": value for n, value in enumerate(params)}
    out = parts[0] + "".join(f"%({prefix}{n})s{part}" for n, part in enumerate(parts[1:]))
    return out, named


def _expressions(meter: Meter) -> tuple[str, str, str, dict]:
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


def _late_partial(window: Window, own_ranges: list[Range]) -> aggregation.Partial | None:
    """The late arrivals of the window as a Partial whose `distinct` counts only the values
    the window's own events lack."""
    late = window.late
    ranges = _ranges(late.ranges) if late is not None else []
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
    sql = LATE_SQL.format(num=num_sql, key=key_sql, arrived=_arrived_after_sql(), filter=filter_sql)
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


def _joined(own: aggregation.Partial, late: aggregation.Partial) -> aggregation.Partial:
    def pick(chooser, a, b):
        present = [v for v in (a, b) if v is not None]
        return chooser(present) if present else None

    return aggregation.Partial(
        event_count=own.event_count + late.event_count,
        numeric_count=own.numeric_count + late.numeric_count,
        numeric_sum=aggregation.exact_sum([Decimal(own.numeric_sum or 0), late.numeric_sum]),
        numeric_min=pick(min, own.numeric_min, late.numeric_min),
        numeric_max=pick(max, own.numeric_max, late.numeric_max),
        distinct=own.distinct + late.distinct,
    )


# --- credits ------------------------------------------------------------------------------------

CREDITS_SQL = """
SELECT w.k, (e.metadata -> 'units')
FROM unnest(%s::int[], %s::uuid[], %s::text[], %s::timestamptz[], %s::timestamptz[])
     AS w(k, customer_id, meter_id, ws, we)
JOIN metering_event e
  ON e.customer_id = w.customer_id AND e.source = 'system' AND e.name = %s
 AND e.timestamp >= w.ws AND e.timestamp < w.we AND e.metadata ->> 'meter_id' = w.meter_id
ORDER BY w.k, e.timestamp, e.ingested_at, e.id
"""


def credited_in_windows(windows: list[Window]) -> dict:
    """key → credits granted in the window (its first range's start to its last range's end),
    summed in timestamp order and clamped at 0 after each step (the customer-meter rule). One
    statement for all windows."""
    result = {window.key: 0 for window in windows}
    rows = [
        (index, window, window.ranges[0][0], window.ranges[-1][1])
        for index, window in enumerate(windows)
        if window.ranges and window.ranges[0][0] < window.ranges[-1][1]
    ]
    if not rows:
        return result
    with connection.cursor() as cursor:
        cursor.execute(
            CREDITS_SQL,
            [
                [index for index, *_ in rows],
                [str(window.customer_id) for _, window, *_ in rows],
                [str(window.meter.pk) for _, window, *_ in rows],
                [start for *_, start, _ in rows],
                [end for *_, end in rows],
                customer_meters.CREDITED,
            ],
        )
        for index, units in cursor.fetchall():
            units = json.loads(units) if isinstance(units, str | bytes) else units
            if isinstance(units, bool) or not isinstance(units, int | float):
                continue
            key = windows[index].key
            result[key] = max(0, result[key] + int(units))
    return result


# --- raw events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowEvent:
    id: object
    timestamp: datetime
    number: Decimal | None  # the aggregated property as a number (sum/avg/min/max)
    value_key: str | None  # the aggregated property's identity (unique)
    arrival_txid: int | None


EVENTS_SQL = """
SELECT e.id, e.timestamp, {num}, {key}, e.arrival_txid
FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS w(ws, we)
JOIN metering_event e
  ON e.customer_id = %(customer)s AND e.source = 'user'
 AND e.timestamp >= w.ws AND e.timestamp < w.we
WHERE {filter} AND {visible}
ORDER BY e.timestamp, e.id
"""


def window_events(window: Window, *, seen_by: ReadBoundary | None = None) -> list[WindowEvent]:
    """The events matching the meter in the window's ranges (not its late arrivals), optionally
    only those a boundary saw. For audits and tests: it reads raw events."""
    ranges = _ranges(window.ranges)
    if not ranges:
        return []
    num_sql, key_sql, filter_sql, params = _expressions(window.meter)
    visible = "TRUE" if seen_by is None else f"NOT {_arrived_after_sql()}"
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


def bucket_values(meter: Meter, *, customer_id, buckets: list[Range]) -> list[Decimal]:
    """The meter's value for one customer in each of consecutive buckets (charts)."""
    parts, _total = aggregation.compute(
        meter,
        buckets=buckets,
        customer_ids=[customer_id],
        use_rollups=meter.state == MeterState.READY,
    )
    func = meter.aggregation["func"]
    return [aggregation.final_value(func, part) for part in parts]


CUSTOMERS_OF_EVENTS_SQL = """
SELECT DISTINCT customer_id FROM metering_event WHERE id = ANY(%s) AND customer_id IS NOT NULL
"""


def customers_of_events(event_ids: list) -> list:
    """The customers an ingested batch's events belong to."""
    with connection.cursor() as cursor:
        cursor.execute(CUSTOMERS_OF_EVENTS_SQL, [event_ids])
        return [row[0] for row in cursor.fetchall()]


def daily_values(*, organization_id, since: datetime, until: datetime):
    """Each live meter's value per UTC day (dashboards), from the rollups."""
    return series.daily_values(organization_id=organization_id, since=since, until=until)
