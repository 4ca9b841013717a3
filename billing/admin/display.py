"""How the billing admin writes numbers, dates and ids (the rules are core.display's)."""

from datetime import datetime
from decimal import Decimal

from django.utils.html import format_html

from core.display import day, money, money_minor, number, unit_price  # noqa: F401 - re-exported


def units(value: Decimal) -> str:
    """A quantity as staff write it in a form: 1000, 0.5, 0 (never 1E+3 or 0E-12)."""
    return f"{Decimal(value).normalize():f}"


def cents(value) -> str:
    """Minor units → '12.34' for display."""
    return f"{Decimal(value) / 100:,.2f}"


def span(start: datetime, end: datetime) -> str:
    """A billing period as days: "Oct 24 – Nov 24, 2026" (the exact times are in its title)."""
    if start.year == end.year:
        text = f"{start:%b %-d} – {end:%b %-d, %Y}"
    else:
        text = f"{start:%b %-d, %Y} – {end:%b %-d, %Y}"
    return format_html(
        '<span class="ml-nowrap" title="{} – {} UTC">{}</span>',
        f"{start:%Y-%m-%d %H:%M}",
        f"{end:%Y-%m-%d %H:%M}",
        text,
    )


def short_id(value) -> str:
    """A UUID on one line: its first 8 characters, the whole id in the tooltip."""
    text = str(value)
    return format_html('<code class="ml-id" title="{}">{}…</code>', text, text[:8])


def amount_cell(text: str) -> str:
    return format_html('<span class="ml-num">{}</span>', text)


def customer_cell(customer, organization=None) -> str:
    """A list cell: the customer's email on one line (cut with "…" when long, whole in the
    tooltip), the organization under it."""
    return format_html(
        '<div class="ml-ellipsis" title="{}">{}</div>{}',
        customer.email,
        customer.email,
        format_html('<div class="ml-sub">{}</div>', organization.name) if organization else "",
    )
