"""core.display: how the back office writes money, unit prices and meter values."""

from decimal import Decimal

from moneyed import Money

from core.display import money, money_minor, number, unit_price


def test_money_has_its_currencys_places_separators_and_a_real_minus():
    assert money(Decimal("63063921"), "USD") == "63,063,921.00 USD"
    assert money(Money("-5.5", "EUR")) == "\u22125.50 EUR"
    assert money(Decimal("1234.4"), "JPY") == "1,234 JPY"
    assert money(Decimal("1.2345"), "KWD") == "1.235 KWD"  # half away from zero
    assert money_minor(50, "USD") == "0.50 USD"
    # far beyond the default 28 digits: still exact, never an error page
    assert money_minor(10**39 + 7, "USD") == f"{10**37:,}.07 USD"


def test_unit_prices_keep_their_significant_digits():
    assert unit_price(Decimal("0.500000000000"), "USD") == "0.005 USD"
    assert unit_price(Decimal("2"), "USD") == "0.02 USD"
    assert unit_price(Decimal("150"), "USD") == "1.50 USD"
    assert unit_price(Decimal("0.0002"), "USD") == "0.000002 USD"
    assert unit_price(Decimal("5"), "JPY") == "5 JPY"
    assert unit_price(None, "USD") == "—"


def test_meter_values_are_trimmed():
    assert number(Decimal("82.69206145966709346991037131882202304738")) == "82.69"
    assert number(Decimal("0E-12")) == "0"
    assert number(Decimal("872358.000")) == "872,358"
    assert number(Decimal("-0.5")) == "\u22120.5"
    assert number(Decimal("1E+3")) == "1,000"
    assert number(Decimal("2.345"), places=4) == "2.345"
