"""Per-day values of every meter of an organization, read from the hourly rollups in one
statement per rollup table (for dashboards: no scan of the events table).

A day's value is the meter's aggregation over the day's events, across all customers; hours a
backfill has not reached yet are missing until it finishes."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from django.db import connection

from metering import rollups
from metering.aggregation import Partial, final_value
from metering.models import Meter

# Daily tier + pending deltas in one statement (each): compaction may run concurrently.
DAILY_PARTIALS_SQL = f"""
SELECT meter_id, (bucket AT TIME ZONE 'UTC')::date AS day, SUM(event_count),
       SUM(numeric_count), SUM(numeric_sum), MIN(numeric_min), MAX(numeric_max)
FROM (
    SELECT meter_id, bucket, {rollups.PARTIAL_COLUMNS} FROM {rollups.DAY_TABLE}
    WHERE meter_id = ANY(%(meters)s) AND bucket >= %(since)s AND bucket < %(until)s
    UNION ALL
    SELECT meter_id, date_trunc('day', bucket, 'UTC'), {rollups.PARTIAL_COLUMNS}
    FROM {rollups.DELTA_TABLE}
    WHERE meter_id = ANY(%(meters)s) AND bucket >= %(since)s AND bucket < %(until)s
) r
GROUP BY 1, 2
"""

DAILY_DISTINCT_SQL = f"""
SELECT meter_id, (bucket AT TIME ZONE 'UTC')::date AS day, COUNT(DISTINCT value_key)
FROM (
    SELECT meter_id, bucket, value_key FROM {rollups.UNIQUE_DAY_TABLE}
    WHERE meter_id = ANY(%(meters)s) AND bucket >= %(since)s AND bucket < %(until)s
    UNION ALL
    SELECT meter_id, date_trunc('day', bucket, 'UTC'), value_key
    FROM {rollups.UNIQUE_DELTA_TABLE}
    WHERE meter_id = ANY(%(meters)s) AND bucket >= %(since)s AND bucket < %(until)s
) r
GROUP BY 1, 2
"""


@dataclass
class MeterSeries:
    meter: Meter
    values: dict[date, Decimal] = field(default_factory=dict)

    @property
    def func(self) -> str:
        return self.meter.aggregation.get("func", "count")


def daily_values(*, organization_id, since: datetime, until: datetime) -> list[MeterSeries]:
    """The organization's live meters with their value per UTC day, for the days from the one
    of `since` to the one of `until` (whole days: read from the daily tier)."""
    since, until = rollups.floor_day(since), rollups.ceil_day(until)
    meters = list(
        Meter.objects.filter(organization_id=organization_id, archived_at__isnull=True).order_by(
            "name"
        )
    )
    series = {meter.pk: MeterSeries(meter) for meter in meters}
    unique_ids = [m.pk for m in meters if m.aggregation.get("func") == "unique"]
    other_ids = [m.pk for m in meters if m.pk not in set(unique_ids)]
    partials: dict = defaultdict(dict)
    with connection.cursor() as cursor:
        if other_ids:
            cursor.execute(
                DAILY_PARTIALS_SQL, {"meters": other_ids, "since": since, "until": until}
            )
            for meter_id, day, count, numeric_count, total, low, high in cursor.fetchall():
                partials[meter_id][day] = Partial(
                    event_count=count,
                    numeric_count=numeric_count,
                    numeric_sum=Decimal(total or 0),
                    numeric_min=low,
                    numeric_max=high,
                )
        if unique_ids:
            cursor.execute(
                DAILY_DISTINCT_SQL, {"meters": unique_ids, "since": since, "until": until}
            )
            for meter_id, day, distinct in cursor.fetchall():
                partials[meter_id][day] = Partial(distinct=distinct)
    for meter_id, days in partials.items():
        one = series[meter_id]
        one.values = {day: final_value(one.func, partial) for day, partial in sorted(days.items())}
    return list(series.values())
