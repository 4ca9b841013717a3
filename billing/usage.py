"""Billing's adapter to metering: the only module of `billing` that imports metering.

- meter lookups and the meter-credit service (credits are `meter.credited` system events);
- set-based usage reads for many (customer, meter, time window) triples at once, from metering's
  rollups (`metering.rollups.window_partials`) completed by raw events at edges that are not on whole hours;
- credits granted inside windows;
- the hook through which customer meters show the current billing period.
"""

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection

from metering import aggregation, customer_meters, filters, hooks, rollups, series
from metering.models import Meter, MeterState

ADDITIVE = ("count", "sum")
HOUR = timedelta(hours=1)
CREDITED = customer_meters.CREDITED

__all__ = [
    "Meter",
    "LateArrivals",
    "Window",
    "credited_in_windows",
    "daily_meter_values",
    "grant_credits",
    "usage_and_late_in_windows",
]


def organization_meter(organization, meter_id) -> Meter | None:
    if meter_id is None:
        return None
    return Meter.objects.filter(organization=organization, pk=meter_id).first()


def grant_credits(*, customer, meter, units: int, rollover: bool, reason: str, timestamp):
    """A `meter.credited` system event through metering's credit service (same transaction)."""
    return customer_meters.grant_credits(
        customer=customer,
        meter=meter,
        units=units,
        rollover=rollover,
        reason=reason,
        timestamp=timestamp,
    )


def register_period_numbers(provider) -> None:
    hooks.register_period_numbers(provider)


def register_meter_blockers(*, definition_change, archive) -> None:
    hooks.register_definition_change_guard(definition_change)
    hooks.register_archive_guard(archive)


@dataclass(frozen=True)
class Window:
    """Usage of `meter` by `customer_id` with event timestamps in [start, end).

    `late` (avg/min/max/unique only) adds the events with timestamps in [late.start, late.end)
    that arrived after `late.since` — an earlier period's events that came after its close and
    join this period's set."""

    key: object
    meter: Meter
    customer_id: object
    start: datetime
    end: datetime
    late: "LateArrivals | None" = None


@dataclass(frozen=True)
class LateArrivals:
    start: datetime
    end: datetime
    since: datetime


def _ceil_hour(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + HOUR


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


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
    """count/sum over many windows of one meter in two statements: whole hours from the rollups,
    edges (and everything while the meter backfills) from raw events on the customer index."""
    func = meter.aggregation["func"]
    use_rollups = meter.state == MeterState.READY
    hour_rows, raw_rows = [], []
    for index, window in enumerate(windows):
        start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
        if start >= end:
            continue
        hs, he = _ceil_hour(start), _floor_hour(end)
        if not use_rollups or hs >= he:
            raw_rows.append((index, window.customer_id, start, end))
            continue
        hour_rows.append((index, window.customer_id, hs, he))
        if start < hs:
            raw_rows.append((index, window.customer_id, start, hs))
        if he < end:
            raw_rows.append((index, window.customer_id, he, end))
    totals = defaultdict(lambda: Decimal(0))
    with connection.cursor() as cursor:
        if hour_rows:
            # metering's public rollup read (every tier, consistent with a compaction)
            partials = rollups.window_partials(cursor, meter.pk, hour_rows)
            for index, (count, _numeric, total, _low, _high) in partials.items():
                totals[index] += Decimal(count if func == "count" else total)
        if raw_rows:
            filter_sql, filter_params = filters.compile_filter(meter.filter)
            if func == "sum":
                num_sql, num_params = filters.numeric_sql(meter.aggregation.get("property"))
            else:
                num_sql, num_params = "NULL::numeric", []
            sql = RAW_SQL.format(num=num_sql, filter=filter_sql)
            cursor.execute(sql, [*_columns(raw_rows), *num_params, *filter_params])
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


def usage_and_late_in_windows(windows: list[Window]) -> tuple[dict, dict]:
    """(key → the meter's value over the window, key → how many late arrivals joined it).
    count/sum meters are read set-based (one or two statements per meter for all windows);
    avg/min/max/unique go through metering's read path window by window (their values don't
    add up across windows), plus their late arrivals when the window names them."""
    result = {window.key: Decimal(0) for window in windows}
    late_counts: dict = {}
    by_meter: dict = defaultdict(list)
    for window in windows:
        by_meter[window.meter.pk].append(window)
    for group in by_meter.values():
        meter = group[0].meter
        if meter.aggregation.get("func") in ADDITIVE:
            result.update(_additive(meter, group))
            continue
        for window in group:
            total = aggregation.Partial()
            if window.start < window.end:
                _, total = aggregation.compute(
                    meter,
                    buckets=[(window.start, window.end)],
                    customer_ids=[window.customer_id],
                    use_rollups=meter.state == MeterState.READY,
                )
                total = total or aggregation.Partial()
            late = _late_partial(window)
            if late is not None:
                late_counts[window.key] = late.event_count
                total = _joined(total, late)
            result[window.key] = aggregation.final_value(meter.aggregation["func"], total)
    return result, late_counts


LATE_SQL = """
SELECT count(*), count(x.num), COALESCE(sum(x.num), 0), min(x.num), max(x.num),
       array_remove(array_agg(DISTINCT x.vk), NULL)
FROM (
    SELECT {num} AS num, {key} AS vk FROM metering_event e
    WHERE e.customer_id = %s AND e.source = 'user'
      AND e.timestamp >= %s AND e.timestamp < %s AND e.ingested_at > %s AND {filter}
) x
"""

# which of the late events' values the window's own events already have (unique meters)
SEEN_KEYS_SQL = """
SELECT DISTINCT {key} FROM metering_event e
WHERE e.customer_id = %s AND e.source = 'user' AND e.timestamp >= %s AND e.timestamp < %s
  AND {filter} AND {key} = ANY(%s::text[])
"""


def _late_partial(window: Window) -> aggregation.Partial | None:
    """The late arrivals of the window as a Partial (`keys`: their values new to the window)."""
    late = window.late
    if late is None or late.start >= late.end:
        return None
    meter = window.meter
    func, prop = meter.aggregation["func"], meter.aggregation.get("property")
    filter_sql, filter_params = filters.compile_filter(meter.filter)
    num_sql, num_params = (
        filters.numeric_sql(prop) if func in filters.PROPERTY_FUNCS else ("NULL::numeric", [])
    )
    key_sql, key_params = filters.value_key_sql(prop) if func == "unique" else ("NULL::text", [])
    with connection.cursor() as cursor:
        cursor.execute(
            LATE_SQL.format(num=num_sql, key=key_sql, filter=filter_sql),
            [
                *num_params,
                *key_params,
                str(window.customer_id),
                late.start,
                late.end,
                late.since,
                *filter_params,
            ],
        )
        count, numeric_count, numeric_sum, low, high, keys = cursor.fetchone()
        if not count:
            return None
        keys = set(keys or ())
        if keys and window.start < window.end:
            cursor.execute(
                SEEN_KEYS_SQL.format(key=key_sql, filter=filter_sql),
                [
                    *key_params,
                    str(window.customer_id),
                    window.start,
                    window.end,
                    *filter_params,
                    *key_params,
                    sorted(keys),
                ],
            )
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
    """key → credits granted in the window, summed in timestamp order and clamped at 0 after
    each step (the customer-meter rule). One statement for all windows."""
    result = {window.key: 0 for window in windows}
    rows = [(i, w) for i, w in enumerate(windows) if w.start < w.end]
    if not rows:
        return result
    with connection.cursor() as cursor:
        cursor.execute(
            CREDITS_SQL,
            [
                [i for i, _ in rows],
                [str(w.customer_id) for _, w in rows],
                [str(w.meter.pk) for _, w in rows],
                [w.start for _, w in rows],
                [w.end for _, w in rows],
                CREDITED,
            ],
        )
        for index, units in cursor.fetchall():
            units = json.loads(units) if isinstance(units, str | bytes) else units
            if isinstance(units, bool) or not isinstance(units, int | float):
                continue
            key = windows[index].key
            result[key] = max(0, result[key] + int(units))
    return result


def daily_meter_values(*, organization_id, since: datetime, until: datetime):
    """Each live meter's value per UTC day (the dashboard), from metering's rollups."""
    return series.daily_values(organization_id=organization_id, since=since, until=until)
