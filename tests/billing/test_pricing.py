"""The pricing math with the scenario numbers (cents), and properties that hold for all inputs."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import round_minor
from billing.pricing import billable_units, metered_amount

# Lago's graduated example: 0–10 @ $10 + $2 flat, 11–20 @ $5 + $3, 21+ @ $5 + $3
GRADUATED = {
    "type": "graduated",
    "tiers": [
        {"bound": 10, "unit_amount": "1000", "flat_amount": 200},
        {"bound": 20, "unit_amount": "500", "flat_amount": 300},
        {"bound": None, "unit_amount": "500", "flat_amount": 300},
    ],
}
# volume: 0–100 @ $2 + $10 flat, 101–200 @ $1, 201+ @ $0.5 + $50
VOLUME = {
    "type": "volume",
    "tiers": [
        {"bound": 100, "unit_amount": "200", "flat_amount": 1000},
        {"bound": 200, "unit_amount": "100"},
        {"bound": None, "unit_amount": "50", "flat_amount": 5000},
    ],
}


@pytest.mark.parametrize(
    ("units", "cents"), [(0, 200), (1, 1200), (10, 10200), (11, 11000), (21, 16300)]
)
def test_graduated_tiers_with_flat_amounts(units, cents):
    assert metered_amount(tiers=GRADUATED, units=Decimal(units)) == cents


@pytest.mark.parametrize(("units", "cents"), [(0, 1000), (100, 21000), (101, 10100), (300, 20000)])
def test_volume_tiers_with_flat_amounts(units, cents):
    assert metered_amount(tiers=VOLUME, units=Decimal(units)) == cents


def test_half_cent_unit_price_rounds_once_per_line_half_away_from_zero():
    # 7 × 0.5 = 3.5 cents → 4 (rounded once on the line, not per unit: per unit would give 7)
    assert metered_amount(unit_amount=Decimal("0.5"), units=Decimal(7)) == 4
    assert metered_amount(unit_amount=Decimal("0.5"), units=Decimal(5)) == 3
    assert metered_amount(unit_amount=Decimal("0.25"), units=Decimal(1)) == 0


def test_cap_applies_after_rounding():
    assert metered_amount(unit_amount=Decimal("10"), units=Decimal(1000), cap_amount=5000) == 5000
    assert metered_amount(unit_amount=Decimal("10"), units=Decimal(3), cap_amount=5000) == 30
    assert metered_amount(tiers=GRADUATED, units=Decimal(21), cap_amount=12345) == 12345


def test_negative_usage_bills_nothing_and_credits_come_first():
    assert metered_amount(unit_amount=Decimal("3"), units=Decimal(-5)) == 0
    assert billable_units(consumed=Decimal(250), credited=100) == 150
    assert billable_units(consumed=Decimal(50), credited=100) == 0


def test_round_minor_is_half_away_from_zero():
    assert [round_minor(Decimal(x)) for x in ("2.5", "-2.5", "2.4999", "0.5")] == [3, -3, 2, 1]


units = st.integers(min_value=0, max_value=10_000).map(Decimal)


@given(units, units)
def test_graduated_never_decreases_with_usage(a, b):
    low, high = sorted((a, b))
    assert metered_amount(tiers=GRADUATED, units=low) <= metered_amount(tiers=GRADUATED, units=high)


@given(units)
def test_graduated_equals_the_sum_over_tiers(n):
    expected = Decimal(200) + min(n, 10) * 1000
    if n > 10:
        expected += 300 + (min(n, 20) - 10) * 500
    if n > 20:
        expected += 300 + (n - 20) * 500
    assert metered_amount(tiers=GRADUATED, units=n) == expected


@given(units)
def test_volume_prices_all_units_at_the_reached_tier(n):
    if n <= 100:
        expected = n * 200 + 1000
    elif n <= 200:
        expected = n * 100
    else:
        expected = n * 50 + 5000
    assert metered_amount(tiers=VOLUME, units=n) == expected


@given(
    st.decimals(min_value=0, max_value=1000, places=12, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=10**6).map(Decimal),
    st.one_of(st.none(), st.integers(min_value=0, max_value=10**7)),
)
def test_unit_line_is_rounded_exact_price_capped(rate, n, cap):
    amount = metered_amount(unit_amount=rate, units=n, cap_amount=cap)
    exact = rate * n
    rounded = round_minor(exact)
    assert abs(rounded - exact) <= Decimal("0.5")
    assert amount == (rounded if cap is None else min(rounded, cap))
