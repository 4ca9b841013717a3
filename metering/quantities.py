"""`GET /v1/meters/{id}/quantities`: calendar buckets in an IANA timezone, clipped to the range,
each aggregated by the meter; `total` over the whole range (docs/meters.md)."""

import decimal
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from metering import aggregation

INTERVALS = ("hour", "day", "week", "month", "year")
MAX_BUCKETS = 2000
APPROX_SECONDS = {
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 28 * 86400,
    "year": 365 * 86400,
}


class TooManyBuckets(ValueError):
    pass


def _local_floor(moment: datetime, interval: str, zone: ZoneInfo) -> datetime:
    local = moment.astimezone(zone)
    if interval == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    if interval == "week":
        day = day - timedelta(days=day.weekday())  # weeks start on Monday
    elif interval == "month":
        day = day.replace(day=1)
    elif interval == "year":
        day = day.replace(month=1, day=1)
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def _next(boundary: datetime, interval: str, zone: ZoneInfo) -> datetime:
    if interval == "hour":
        # step in absolute time: DST changes move wall clocks by whole hours here
        return (boundary.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)
    day = boundary.date()
    if interval == "day":
        day = day + timedelta(days=1)
    elif interval == "week":
        day = day + timedelta(days=7)
    elif interval == "month":
        day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    else:
        if day.year >= 9999:
            return datetime.max.replace(tzinfo=UTC)
        day = day.replace(year=day.year + 1, month=1, day=1)
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def buckets(start: datetime, end: datetime, interval: str, zone: ZoneInfo) -> list:
    """[(bucket start, bucket end)] in UTC, the calendar intervals meeting [start, end)."""
    span = (end - start).total_seconds()
    if span / APPROX_SECONDS[interval] > MAX_BUCKETS + 2:
        raise TooManyBuckets()
    result = []
    boundary = _local_floor(start, interval, zone)
    while boundary < end:
        following = _next(boundary, interval, zone)
        lo = max(boundary, start)
        hi = min(following, end)
        if lo < hi:
            result.append((lo.astimezone(UTC), hi.astimezone(UTC)))
            if len(result) > MAX_BUCKETS:
                raise TooManyBuckets()
        if following <= boundary:
            break
        boundary = following
    return result


def quantities(
    meter,
    *,
    start: datetime,
    end: datetime,
    interval: str,
    zone: ZoneInfo,
    customer_ids: list | None,
    customer_aggregation_function: str | None,
    metadata: dict | None,
) -> dict:
    ranges = buckets(start, end, interval, zone)
    func = meter.aggregation["func"]
    if not ranges:
        return {"quantities": [], "total": decimal.Decimal(0)}
    per_customer = customer_aggregation_function is not None
    parts, total = aggregation.compute(
        meter,
        buckets=ranges,
        customer_ids=customer_ids,
        use_rollups=meter.state == "ready",
        metadata=metadata,
        per_customer=per_customer,
    )

    def value(partial) -> decimal.Decimal:
        if not per_customer:
            return aggregation.final_value(func, partial)
        per = [aggregation.final_value(func, p) for p in partial.values() if p.event_count]
        return aggregation.combine(customer_aggregation_function, per)

    return {
        "quantities": [
            {"timestamp": lo, "quantity": value(part)}
            for (lo, _hi), part in zip(ranges, parts, strict=True)
        ],
        "total": value(total),
    }
