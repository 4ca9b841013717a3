"""The one range of instants Meterline accepts, for event timestamps and every time query.

Wide enough for any real history (backdated imports included), narrow enough that the calendar
arithmetic done on them (UTC offsets, hour/day/month buckets, billing periods) never leaves
Python's and PostgreSQL's date range."""

from datetime import UTC, datetime

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
RANGE_MESSAGE = "Timestamp must lie between 1900-01-01 and 9000-01-01 (UTC)"


def to_utc(value: datetime) -> datetime | None:
    """An aware datetime in UTC, or None when it lies outside the accepted range (including
    offsets that would move it past year 1 or 9999)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        return None
    return utc if EARLIEST <= utc < LATEST else None
