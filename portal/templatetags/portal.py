from django import template

from portal.charts import format_number

register = template.Library()


@register.filter
def number(value) -> str:
    """1234567.5 -> "1,234,567.5" (at most 4 decimals, half away from zero)."""
    return format_number(value)
