"""Amounts: `Money` (django-money / py-moneyed) inside, integer minor units (cents) on the wire.

Every rounding in billing goes through `round_minor`: half away from zero (ROUND_HALF_UP on
Decimal), never float."""

import decimal
from decimal import ROUND_HALF_UP, Decimal

from djmoney import settings as djmoney_settings
from moneyed import CURRENCIES, Money, get_currency

from billing.errors import AmountOutOfRange

# Exact arithmetic for amounts: usage up to 10^55 units (10^15 events below 10^40) times rates
# with 12 decimals never needs more digits than this; Python's default context rounds at 28.
EXACT = decimal.Context(
    prec=200, rounding=ROUND_HALF_UP, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN
)
# Stored amounts are numeric(19, 2): their absolute value stays below 10^17 major units.
MAX_STORED_MAJOR = Decimal(10) ** 17


def currency_choices() -> list:
    """The currencies an amount may be in (django-money's list). A callable, so that migrations
    refer to it instead of copying a list that changes with the installed currency data."""
    return list(djmoney_settings.CURRENCY_CHOICES)


def minor_factor(currency: str) -> int:
    """Minor units per major unit: 100 for USD/EUR, 1 for JPY."""
    return int(get_currency(currency).sub_unit or 1)


def round_minor(amount: Decimal) -> int:
    """An exact amount in minor units, rounded half away from zero to a whole minor unit."""
    return int(EXACT.quantize(Decimal(amount), Decimal(1)))


def check_storable(minor: int, currency: str, *, what: str, field=()) -> None:
    """AmountOutOfRange unless `minor` fits the amount columns."""
    if abs(Decimal(minor)) / minor_factor(currency) >= MAX_STORED_MAJOR:
        raise AmountOutOfRange(
            f"{what}: {minor} minor units of {currency} is out of range (an amount must stay "
            f"below {MAX_STORED_MAJOR:,.0f} {currency})",
            field=field,
        )


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


def format_amount(amount: Decimal, currency: str) -> str:
    """`1234.5, "USD"` → `1,234.50 USD`; negative amounts (credits) with a real minus sign."""
    text = f"{abs(amount):,.2f} {currency}"
    return f"−{text}" if amount < 0 else text
