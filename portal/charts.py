"""Server-rendered bar charts: the geometry of an SVG chart of daily values. The template draws
it; the same numbers are also listed in a table for screen readers and for copying.

The y axis has three ticks (0, a step, two steps) whose labels are compact ("400M", "2.5K") and
never carry more digits than the step itself; the plot starts right of the widest label, sized
for the largest font the stylesheet gives axis labels (portal.css, phone widths)."""

import decimal
import math
from dataclasses import dataclass
from datetime import date, timedelta

WIDTH = 640
HEIGHT = 240
PLOT_RIGHT = 8
PLOT_TOP = 20  # half a label above the top grid line
PLOT_BOTTOM = 42  # room for the x-axis labels
X_LABEL_BASELINE = HEIGHT - 10  # descenders stay inside the viewport
LABEL_GAP = 8  # between a y label and the plot
# portal.css draws axis labels at up to 26 user units (phones, where the SVG is scaled down);
# an average digit of the UI fonts is ~0.6 em wide, capitals up to ~0.85 em.
LABEL_FONT_MAX = 26
DIGIT_EM = 0.62
LETTER_EM = 0.9
PUNCTUATION_EM = 0.35

COMPACT_SUFFIXES = [(decimal.Decimal(10) ** 12, "T"), (decimal.Decimal(10) ** 9, "B")]
COMPACT_SUFFIXES += [(decimal.Decimal(10) ** 6, "M"), (decimal.Decimal(10) ** 3, "K")]


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
    plot_left: float
    plot_right: int
    baseline: float
    label_x: float  # where the y labels end (text-anchor end)
    x_label_y: int
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


def format_number(value: decimal.Decimal | int, places: int = 4) -> str:
    """Thousands separators; at most `places` decimals (trailing zeros dropped), rounded half
    away from zero."""
    value = decimal.Decimal(value)
    if value == value.to_integral_value():
        return f"{int(value):,}"
    quantum = decimal.Decimal(1).scaleb(-places)
    rounded = value.quantize(quantum, rounding=decimal.ROUND_HALF_UP)
    if rounded == rounded.to_integral_value():
        return f"{int(rounded):,}"
    return f"{rounded:,.{places}f}".rstrip("0").rstrip(".")


def compact_number(value: decimal.Decimal) -> str:
    """Axis labels: 1,200,000 → "1.2M", 2,500 → "2.5K", small values as they are."""
    for size, suffix in COMPACT_SUFFIXES:
        if abs(value) >= size:
            return format_number(value / size, places=1) + suffix
    return format_number(value)


def label_width(text: str, font_size: float = LABEL_FONT_MAX) -> float:
    """An upper estimate of a label's width in user units."""
    ems = sum(DIGIT_EM if c.isdigit() else PUNCTUATION_EM if c in ",." else LETTER_EM for c in text)
    return ems * font_size


def axis_step(days: list[tuple[date, decimal.Decimal]]) -> decimal.Decimal:
    """The y axis's step: 1, 2 or 5 × 10^k, two steps covering the highest day; whole numbers
    when every value is one (no "0.5 calls")."""
    highest = max((v for _, v in days), default=decimal.Decimal(0))
    step = nice_ceiling(highest / 2)
    if all(v == v.to_integral_value() for _, v in days):
        step = max(step, decimal.Decimal(1))
    return step


def bar_chart(days: list[tuple[date, decimal.Decimal]], *, slots: int | None = None) -> BarChart:
    """Bars for consecutive `days`, drawn in the first of `slots` equal slots (the whole period,
    so the days still to come show as room on the right)."""
    slots = max(slots or len(days), len(days), 1)
    step = axis_step(days)
    top = step * 2
    labels = [compact_number(step * n) for n in range(3)]
    plot_left = math.ceil(max(label_width(label) for label in labels)) + 2 * LABEL_GAP
    plot_width = WIDTH - plot_left - PLOT_RIGHT
    plot_height = HEIGHT - PLOT_TOP - PLOT_BOTTOM
    baseline = PLOT_TOP + plot_height
    # Negative days (e.g. refunds sent as negative amounts) are drawn as empty bars; the table
    # next to the chart lists the exact values.
    slot = plot_width / slots
    gap = min(4.0, slot * 0.2)
    bars = []
    for index, (day, value) in enumerate(days):
        height = float(min(max(value, 0), top) / top) * plot_height
        bars.append(
            Bar(
                x=round(plot_left + index * slot + gap / 2, 2),
                y=round(baseline - height, 2),
                width=round(slot - gap, 2),
                height=round(height, 2),
                day=day,
                value=value,
            )
        )
    y_ticks = [
        Tick(round(baseline - plot_height * n / 2, 2), label) for n, label in enumerate(labels)
    ]
    x_ticks = []
    if days:
        first = days[0][0]
        # first day flush left, last day of the period flush right, one in the middle
        x_ticks = [
            Tick(plot_left, _day_label(first), "start"),
            Tick(
                round(plot_left + (slots // 2 + 0.5) * slot, 2),
                _day_label(first + timedelta(days=slots // 2)),
                "middle",
            ),
            Tick(WIDTH - PLOT_RIGHT, _day_label(first + timedelta(days=slots - 1)), "end"),
        ]
        if slots < 5:  # a middle label would crowd (or repeat) the last one
            del x_ticks[1]
        if slots == 1:
            x_ticks = [Tick(round(plot_left + slot / 2, 2), _day_label(first), "middle")]
    return BarChart(
        width=WIDTH,
        height=HEIGHT,
        plot_left=plot_left,
        plot_right=WIDTH - PLOT_RIGHT,
        baseline=baseline,
        label_x=plot_left - LABEL_GAP,
        x_label_y=X_LABEL_BASELINE,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
    )


def _day_label(day: date) -> str:
    return f"{day:%b} {day.day}"
