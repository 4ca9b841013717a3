from datetime import timedelta

from django import template
from django.utils.dateformat import format as date_format

from portal.charts import format_number

register = template.Library()


@register.filter
def number(value, places=4) -> str:
    """1234567.5 -> "1,234,567.5" (at most `places` decimals, half away from zero)."""
    return format_number(value, int(places))


@register.simple_tag
def day_range(start, end, exclusive=True) -> str:
    """ "3 Dec 2026 – 2 Jan 2027", "1 – 31 Dec 2026", "5 Nov – 5 Dec 2026": the days a range
    touches (an exclusive end's last day is the day before it ends)."""
    if start is None or end is None:
        return ""
    last = end - timedelta(microseconds=1) if exclusive and end > start else end
    if hasattr(last, "date"):
        last = last.date()
    first = start.date() if hasattr(start, "date") else start
    if first == last:
        return date_format(first, "j M Y")
    if first.year != last.year:
        return f"{date_format(first, 'j M Y')} – {date_format(last, 'j M Y')}"
    if first.month != last.month:
        return f"{date_format(first, 'j M')} – {date_format(last, 'j M Y')}"
    return f"{first.day} – {date_format(last, 'j M Y')}"
