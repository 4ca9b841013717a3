from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from billing.periods import period_bounds, shift


def test_month_end_anchor_comes_back():
    anchor = datetime(2024, 1, 31, 9, 30, tzinfo=UTC)
    ends = [period_bounds(anchor, "month", 1, k)[1] for k in range(4)]
    assert [e.date().isoformat() for e in ends] == [
        "2024-02-29",
        "2024-03-31",
        "2024-04-30",
        "2024-05-31",
    ]
    assert all(e.time() == anchor.time() for e in ends)


def test_other_intervals():
    anchor = datetime(2024, 2, 29, tzinfo=UTC)
    assert shift(anchor, "year", 1) == datetime(2025, 2, 28, tzinfo=UTC)
    assert shift(anchor, "year", 4) == datetime(2028, 2, 29, tzinfo=UTC)
    assert shift(anchor, "week", 2) == datetime(2024, 3, 14, tzinfo=UTC)
    assert period_bounds(anchor, "day", 3, 1) == (
        datetime(2024, 3, 3, tzinfo=UTC),
        datetime(2024, 3, 6, tzinfo=UTC),
    )


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
    st.sampled_from(["day", "week", "month", "year"]),
    st.integers(1, 3),
    st.integers(0, 60),
)
def test_periods_tile_time_without_gaps(naive, interval, count, k):
    anchor = naive.replace(tzinfo=UTC)
    start, end = period_bounds(anchor, interval, count, k)
    next_start, _ = period_bounds(anchor, interval, count, k + 1)
    assert start < end == next_start
    if interval == "month":
        assert end.day == anchor.day or end.day < anchor.day
