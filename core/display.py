"""How the back office writes numbers. One rule per kind of number, so no page shows a stored
value raw (`82.69206145966709346991037131882202304738`, `0.000000000000`):

- money: to its currency's minor units (2 for USD, 0 for JPY, 3 for KWD), thousands separated,
  the ISO code after it ("1,234.50 USD"), a real minus sign for credits;
- unit prices: at least the currency's places and as many more as the rate has significant
  digits, no trailing zeros beyond those ("0.005 USD" a unit, not "0.500000000000" cents);
- meter values and quantities: at most `places` fraction digits (2 by default: averages),
  trailing zeros trimmed, thousands separated ("872,358", "81.83", "0.5").

Rounding is half away from zero, like billing's."""

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
