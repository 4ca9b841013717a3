"""Amounts: `Money` (django-money / py-moneyed) inside, integer minor units (cents) on the wire.

Every rounding in billing goes through `round_minor`: half away from zero (ROUND_HALF_UP on
Decimal), never float."""

from decimal import ROUND_HALF_UP, Decimal

from moneyed import CURRENCIES, Money, get_currency


def minor_factor(currency: str) -> int:
    """Minor units per major unit: 100 for USD/EUR, 1 for JPY."""
    return int(get_currency(currency).sub_unit or 1)


def round_minor(amount: Decimal) -> int:
    """An exact amount in minor units, rounded half away from zero to a whole minor unit."""
    return int(Decimal(amount).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_money(minor: int, currency: str) -> Money:
    return Money(Decimal(int(minor)) / minor_factor(currency), currency)


def to_minor(money: Money | None) -> int:
    """Money → integer minor units (exact: stored amounts have the currency's precision)."""
    if money is None:
        return 0
    return round_minor(money.amount * minor_factor(str(money.currency)))


def is_known_currency(code) -> bool:
    """An ISO 4217 code py-moneyed knows (any case), other than the placeholder XYZ."""
    return isinstance(code, str) and code.upper() in CURRENCIES and code.upper() != "XYZ"
