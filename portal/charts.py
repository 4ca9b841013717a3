"""Server-rendered bar charts: the geometry of an SVG chart of daily values. The template draws
it; the same numbers are also listed in a table for screen readers and for copying."""

import decimal
import math
from dataclasses import dataclass
from datetime import date, timedelta

WIDTH = 640
HEIGHT = 220
PLOT_LEFT = 72  # room for the y-axis labels
PLOT_RIGHT = 8
PLOT_TOP = 12
PLOT_BOTTOM = 28  # room for the x-axis labels


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: date
    value: decimal.Decimal


@dataclass(frozen=True)
class Tick:
    position: float
    label: str
    anchor: str = "end"  # SVG text-anchor


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    plot_left: int
    plot_right: int
    baseline: float
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]


def nice_ceiling(value: decimal.Decimal) -> decimal.Decimal:
    """The smallest 1, 2 or 5 × 10^k at or above `value` (1 for nothing to show)."""
    if value <= 0:
        return decimal.Decimal(1)
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = decimal.Decimal(step).scaleb(exponent)
        if candidate >= value:
            return candidate
    return decimal.Decimal(10).scaleb(exponent)  # unreachable: 10 × 10^k > value


def format_number(value: decimal.Decimal | int) -> str:
    """Thousands separators; at most 4 decimals, rounded half away from zero."""
    value = decimal.Decimal(value)
    if value == value.to_integral_value():
        return f"{int(value):,}"
    rounded = value.quantize(decimal.Decimal("0.0001"), rounding=decimal.ROUND_HALF_UP)
    text = f"{rounded:,.4f}".rstrip("0").rstrip(".")
    return text


def bar_chart(days: list[tuple[date, decimal.Decimal]], *, slots: int | None = None) -> BarChart:
    """Bars for consecutive `days`, drawn in the first of `slots` equal slots (the whole period,
    so the days still to come show as room on the right)."""
    slots = max(slots or len(days), len(days), 1)
    plot_width = WIDTH - PLOT_LEFT - PLOT_RIGHT
    plot_height = HEIGHT - PLOT_TOP - PLOT_BOTTOM
    baseline = PLOT_TOP + plot_height
    # Negative days (e.g. refunds sent as negative amounts) are drawn as empty bars; the table
    # next to the chart lists the exact values.
    top = nice_ceiling(max((v for _, v in days), default=decimal.Decimal(0)))
    slot = plot_width / slots
    gap = min(4.0, slot * 0.2)
    bars = []
    for index, (day, value) in enumerate(days):
        height = float(max(value, 0) / top) * plot_height
        bars.append(
            Bar(
                x=round(PLOT_LEFT + index * slot + gap / 2, 2),
                y=round(baseline - height, 2),
                width=round(slot - gap, 2),
                height=round(height, 2),
                day=day,
                value=value,
            )
        )
    y_ticks = [
        Tick(round(baseline - plot_height * fraction, 2), format_number(top * fraction))
        for fraction in (decimal.Decimal(0), decimal.Decimal("0.5"), decimal.Decimal(1))
    ]
    x_ticks = []
    if days:
        first = days[0][0]
        # first day flush left, last day of the period flush right, one in the middle
        x_ticks = [
            Tick(PLOT_LEFT, _day_label(first), "start"),
            Tick(
                round(PLOT_LEFT + (slots // 2 + 0.5) * slot, 2),
                _day_label(first + timedelta(days=slots // 2)),
                "middle",
            ),
            Tick(WIDTH - PLOT_RIGHT, _day_label(first + timedelta(days=slots - 1)), "end"),
        ]
        if slots == 1:
            x_ticks = [Tick(round(PLOT_LEFT + slot / 2, 2), _day_label(first), "middle")]
    return BarChart(
        width=WIDTH,
        height=HEIGHT,
        plot_left=PLOT_LEFT,
        plot_right=WIDTH - PLOT_RIGHT,
        baseline=baseline,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
    )


def _day_label(day: date) -> str:
    return f"{day:%b} {day.day}"
