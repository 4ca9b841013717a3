"""How the back office writes numbers. One rule per kind of number, so no page shows a stored
value raw (`82.69206145966709346991037131882202304738`, `0.000000000000`):

- money: to its currency's minor units (2 for USD, 0 for JPY, 3 for KWD), thousands separated,
  the ISO code after it ("1,234.50 USD"), a real minus sign for credits;
- unit prices: at least the currency's places and as many more as the rate has significant
  digits, no trailing zeros beyond those ("0.005 USD" a unit, not "0.500000000000" cents);
- meter values and quantities: at most `places` fraction digits (2 by default: averages),
  trailing zeros trimmed, thousands separated ("872,358", "81.83", "0.5");
- values in form fields: what staff would type, exact (the form saves what it shows): a rate
  by its significant digits ("0.2", not "0.200000000000"), an amount with its currency's places
  ("29.00", "1000" yen).

Rounding is half away from zero, like billing's."""

from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal

from moneyed import Money, get_currency

MINUS = "\u2212"
# exact for any stored value (the default context keeps 28 digits and refuses to quantize a
# larger number: a usage total of 10^39 units is valid and must still print)
EXACT = Context(prec=200, rounding=ROUND_HALF_UP)
# a rate is stored with 12 decimals of a minor unit: a unit price never needs more than this
MAX_UNIT_PRICE_PLACES = 14


def currency_places(currency: str) -> int:
    """Fraction digits of the currency's minor unit: USD 2, JPY 0, KWD 3."""
    sub_unit = int(get_currency(str(currency)).sub_unit or 1)
    return len(str(sub_unit)) - 1


def _signed(value: Decimal, text: str) -> str:
    return f"{MINUS}{text}" if value < 0 else text


def _rounded(value: Decimal, places: int) -> Decimal:
    return EXACT.quantize(Decimal(value), Decimal(1).scaleb(-places))


def number(value, places: int = 2) -> str:
    """A quantity or meter value: at most `places` fraction digits, trailing zeros trimmed."""
    if value is None:
        return "—"
    rounded = _rounded(Decimal(value), places)
    if rounded == 0:
        return "0"
    text = f"{EXACT.normalize(rounded.copy_abs()):,f}"
    return _signed(rounded, text)


def money(amount, currency: str | None = None) -> str:
    """A Money, or a Decimal amount in major units with its currency: "1,234.50 USD"."""
    if amount is None:
        return "—"
    if isinstance(amount, Money):
        amount, currency = amount.amount, str(amount.currency)
    places = currency_places(currency)
    rounded = _rounded(Decimal(amount), places)
    return _signed(rounded, f"{rounded.copy_abs():,.{places}f} {currency}")


def money_minor(minor: int, currency: str) -> str:
    """An amount given in minor units (cents): 123450, "USD" -> "1,234.50 USD"."""
    return money(EXACT.scaleb(Decimal(int(minor)), -currency_places(currency)), currency)


def unit_price(minor_rate, currency: str) -> str:
    """A rate per unit given in minor units (a Price's or invoice line's unit_amount) as an
    amount of the currency: 0.5 cents -> "0.005 USD", 2 -> "0.02 USD", 150 -> "1.50 USD"."""
    if minor_rate is None:
        return "—"
    places = currency_places(currency)
    major = EXACT.scaleb(Decimal(minor_rate), -places)
    exact = EXACT.normalize(_rounded(major, MAX_UNIT_PRICE_PLACES))
    shown = max(places, -exact.as_tuple().exponent)
    return _signed(exact, f"{exact.copy_abs():,.{shown}f} {currency}")


def plain(value) -> str:
    """A decimal as staff type it: its significant digits, no exponent, no separators, exact:
    0.200000000000 -> "0.2", 1E+3 -> "1000", 0E-12 -> "0"."""
    if value is None:
        return ""
    value = Decimal(value)
    if value == 0:
        return "0"
    return f"{EXACT.normalize(value):f}"


def money_input(amount, currency: str) -> str:
    """An amount as a form field shows it: the currency's places ("29.00", JPY "1000"); more
    only if the stored amount has them (never rounded: saving unchanged keeps the value)."""
    amount = Decimal(amount)
    rounded = _rounded(amount, currency_places(currency))
    return f"{rounded:f}" if rounded == amount else plain(amount)


def percent(basis_points) -> str:
    """A rate in basis points: 2000 -> "20 %", 887 -> "8.87 %"."""
    if basis_points is None:
        return "—"
    return f"{plain(Decimal(basis_points).scaleb(-2))} %"


def day(moment: datetime | None) -> str:
    """A date in a list's column: "Dec 5, 2026" (the time is in the tooltip or on the page)."""
    return "—" if moment is None else f"{moment:%b %-d, %Y}"
