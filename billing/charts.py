"""Server-rendered SVG bar charts for the admin dashboard: no JavaScript, no chart library."""

from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT, AXIS = 640, 160, 18


@dataclass(frozen=True)
class Bar:
    label: str  # shown under the bar (may be empty) and in its tooltip
    value: Decimal
    tooltip: str


def bar_chart(bars: list[Bar], *, title: str) -> SafeString:
    """Bars scaled to the largest value; each carries a <title> tooltip with its exact figure."""
    if not bars:
        return format_html('<p class="help">{}: no data</p>', title)
    top = max((bar.value for bar in bars), default=Decimal(0)) or Decimal(1)
    slot = Decimal(WIDTH) / len(bars)
    width = max(slot * Decimal("0.8"), Decimal(1))
    plot = HEIGHT - AXIS
    rects = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690"><title>{}</title></rect>{}',
        (
            (
                f"{slot * index:.1f}",
                f"{plot - height:.1f}",
                f"{width:.1f}",
                f"{height:.1f}",
                bar.tooltip,
                format_html(
                    '<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>',
                    f"{slot * index + width / 2:.1f}",
                    HEIGHT - 4,
                    bar.label,
                )
                if bar.label
                else "",
            )
            for index, bar in enumerate(bars)
            for height in [max(Decimal(plot) * max(bar.value, Decimal(0)) / top, Decimal(0))]
        ),
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{}" viewBox="0 0 {} {}" '
        'width="{}" height="{}"><title>{}</title>{}'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#999"/></svg>',
        title,
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        title,
        rects,
        plot,
        WIDTH,
        plot,
    )
