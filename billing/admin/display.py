"""How the billing admin writes numbers."""

from decimal import Decimal


def units(value: Decimal) -> str:
    """A quantity as staff write it: 1000, 0.5, 0 (never 1E+3 or 0E-12)."""
    return f"{Decimal(value).normalize():f}"


def cents(value) -> str:
    """Minor units → '12.34' for display."""
    return f"{Decimal(value) / 100:,.2f}"
