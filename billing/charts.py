"""Server-rendered SVG bar charts for the admin dashboard: no JavaScript, no chart library.

Every label stays inside the drawing: x-axis labels near an edge are anchored to that edge
instead of centred (a centred "Dec 01" on the last bar is cut to "Dec 0"), value labels sit
above their bar, and the scale's top value is written at the top right. Figures are also in
each bar's tooltip and, on the dashboard, in a table under the chart."""

from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT, AXIS, TOP = 640, 180, 18, 16
FONT = 10
# an average glyph of the admin's sans-serif at FONT px, slightly over-estimated
CHAR_WIDTH = Decimal("6.2")


@dataclass(frozen=True)
class Bar:
    label: str  # shown under the bar (may be empty) and in its tooltip
    value: Decimal
    tooltip: str
    value_label: str = ""  # written above the bar when given


def _text(x: Decimal, y, text: str, *, css: str = "") -> SafeString:
    """A label centred on x, moved to start/end at x when centring would cross an edge."""
    half = CHAR_WIDTH * len(text) / 2
    anchor = "middle"
    if x - half < 0:
        anchor, x = "start", max(x - half, Decimal(0))
    elif x + half > WIDTH:
        anchor, x = "end", min(x + half, Decimal(WIDTH))
    return format_html(
        '<text x="{}" y="{}" font-size="{}" text-anchor="{}"{}>{}</text>',
        f"{x:.1f}",
        y,
        FONT,
        anchor,
        format_html(' class="{}"', css) if css else "",
        text,
    )


def bar_chart(bars: list[Bar], *, title: str, top_label: str = "") -> SafeString:
    """Bars scaled to the largest value; each carries a <title> tooltip with its exact figure.
    `top_label` names the largest value (written at the top right)."""
    if not bars:
        return format_html('<p class="help">{}: no data</p>', title)
    top = max((bar.value for bar in bars), default=Decimal(0)) or Decimal(1)
    slot = Decimal(WIDTH) / len(bars)
    width = max(slot * Decimal("0.8"), Decimal(1))
    plot = HEIGHT - AXIS
    scale = Decimal(plot - TOP)
    parts = []
    for index, bar in enumerate(bars):
        height = max(scale * max(bar.value, Decimal(0)) / top, Decimal(0))
        centre = slot * index + width / 2
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690"><title>{}</title></rect>',
                f"{slot * index:.1f}",
                f"{plot - height:.1f}",
                f"{width:.1f}",
                f"{height:.1f}",
                bar.tooltip,
            )
        )
        if bar.label:
            parts.append(_text(centre, HEIGHT - 4, bar.label))
        if bar.value_label:
            parts.append(_text(centre, f"{plot - height - 3:.1f}", bar.value_label, css="value"))
    scale_note = (
        format_html(
            '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>{}',
            TOP,
            WIDTH,
            TOP,
            _text(Decimal(WIDTH), TOP - 4, top_label),
        )
        if top_label
        else ""
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{}" viewBox="0 0 {} {}" '
        'width="{}" height="{}" class="ml-chart"><title>{}</title>{}{}'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#999"/></svg>',
        title,
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        title,
        scale_note,
        format_html_join("", "{}", ((part,) for part in parts)),
        plot,
        WIDTH,
        plot,
    )
