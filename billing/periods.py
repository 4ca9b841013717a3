"""Period arithmetic: anniversary periods that keep their anchor day.

Period *k* of a subscription is `[anchor + k·n intervals, anchor + (k+1)·n intervals)`, always
computed from the anchor (never from the previous period's end), so a month-end anchor comes back:
Jan 31 → Feb 29 → Mar 31 → Apr 30."""

import calendar
from datetime import datetime, timedelta

DAY, WEEK, MONTH, YEAR = "day", "week", "month", "year"
INTERVALS = (DAY, WEEK, MONTH, YEAR)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def shift(anchor: datetime, interval: str, count: int) -> datetime:
    """`anchor` moved by `count` intervals (count may be 0)."""
    if interval == DAY:
        return anchor + timedelta(days=count)
    if interval == WEEK:
        return anchor + timedelta(weeks=count)
    if interval == MONTH:
        return _add_months(anchor, count)
    if interval == YEAR:
        return _add_months(anchor, 12 * count)
    raise ValueError(f"unknown interval {interval!r}")


def period_bounds(
    anchor: datetime, interval: str, interval_count: int, index: int
) -> tuple[datetime, datetime]:
    """[start, end) of period `index` (0 = the first period from the anchor)."""
    return (
        shift(anchor, interval, index * interval_count),
        shift(anchor, interval, (index + 1) * interval_count),
    )
