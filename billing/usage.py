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
    "Window",
    "credited_in_windows",
    "daily_meter_values",
    "grant_credits",
    "usage_in_windows",
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
    """Usage of `meter` by `customer_id` with event timestamps in [start, end)."""

    key: object
    meter: Meter
    customer_id: object
    start: datetime
    end: datetime


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


def usage_in_windows(windows: list[Window]) -> dict:
    """key → the meter's value over the window. count/sum meters are read set-based (one or two
    statements per meter for all windows); avg/min/max/unique go through metering's read path
    window by window (their values don't add up across windows)."""
    result = {window.key: Decimal(0) for window in windows}
    by_meter: dict = defaultdict(list)
    for window in windows:
        by_meter[window.meter.pk].append(window)
    for group in by_meter.values():
        meter = group[0].meter
        if meter.aggregation.get("func") in ADDITIVE:
            result.update(_additive(meter, group))
            continue
        for window in group:
            if window.start >= window.end:
                continue
            _, total = aggregation.compute(
                meter,
                buckets=[(window.start, window.end)],
                customer_ids=[window.customer_id],
                use_rollups=meter.state == MeterState.READY,
            )
            result[window.key] = aggregation.final_value(meter.aggregation["func"], total)
    return result


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
