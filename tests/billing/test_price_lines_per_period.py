"""One line per price per period, and late units of a replaced price at their marginal cost.

The price: graduated, up to 10 units at 100 ¢ with a 500 ¢ flat amount, then 50 ¢ — so 8 units
cost 1300, 9 cost 1400, 16 cost 1800 (500 + 10 × 100 + 6 × 50)."""

from datetime import timedelta

import pytest

from billing import catalog, cycles, plan_changes, pricing, subscriptions
from billing.catalog import PriceSpec
from tests.billing.conftest import at, unit_price

pytestmark = pytest.mark.django_db

START = at("2024-04-01T00:00:00")  # monthly: April 1 → May 1
TIERS = {
    "type": "graduated",
    "tiers": [
        {"bound": 10, "unit_amount": "100", "flat_amount": 500},
        {"bound": None, "unit_amount": "50"},
    ],
}


def graduated(meter) -> PriceSpec:
    return PriceSpec(amount_type="metered_tiers", meter_id=meter.pk, tiers=TIERS)


def metered_lines(invoice):
    return [
        (line.label, int(line.quantity), int(line.amount.amount * 100), int(line.late_units))
        for line in invoice.lines.all()
        if line.meter_id is not None
    ]


@pytest.fixture
def plans(make_product, api_calls):
    return (
        make_product(graduated(api_calls), name="A"),
        make_product(unit_price(api_calls, 1), name="B"),
    )


def test_a_price_that_leaves_and_returns_within_a_period_is_one_line(
    plans, customer, send, api_calls
):
    a, b = plans
    subscription = subscriptions.create_subscription(
        customer=customer, product=a, started_at=START
    )
    send("api.call", "ada", "2024-04-03T10:00:00", count=8)  # under A
    plan_changes.change_product(subscription, b, at=at("2024-04-10T00:00:00"))
    send("api.call", "ada", "2024-04-12T10:00:00", count=2)  # under B
    plan_changes.change_product(subscription, a, at=at("2024-04-20T00:00:00"))
    send("api.call", "ada", "2024-04-25T10:00:00", count=8)  # under A again
    (april,) = cycles.close_due(as_of=at("2024-05-01T02:00:00")).invoices
    assert metered_lines(april) == [("A — API calls", 16, 1800, 0), ("B — API calls", 2, 2, 0)]


def test_late_units_of_a_replaced_price_cost_what_they_add_to_their_own_period(
    plans, customer, send, api_calls
):
    a, b = plans
    subscription = subscriptions.create_subscription(
        customer=customer, product=a, started_at=START
    )
    send("api.call", "ada", "2024-04-03T10:00:00", count=8)
    plan_changes.change_product(subscription, b, at=at("2024-04-10T00:00:00"))
    (april,) = cycles.close_due(as_of=at("2024-05-01T02:00:00")).invoices
    assert metered_lines(april)[0] == ("A — API calls", 8, 1300, 0)
    # one event of A's part of April arrives after April closed: the 9th unit of that period,
    # in the first tier whose flat amount April's invoice already charged
    send("api.call", "ada", "2024-04-05T10:00:00")
    (may,) = cycles.close_due(as_of=at("2024-06-01T02:00:00")).invoices
    assert metered_lines(may) == [("A — API calls", 1, 100, 1), ("B — API calls", 0, 0, 0)]
    # and the next one after that: the 10th unit, again 100, never a flat amount twice
    send("api.call", "ada", "2024-04-06T10:00:00")
    (june,) = cycles.close_due(as_of=at("2024-07-01T02:00:00")).invoices
    assert metered_lines(june) == [("A — API calls", 1, 100, 1), ("B — API calls", 0, 0, 0)]
    # the 11th and 12th cross into the second tier: 50 each
    send("api.call", "ada", "2024-04-07T10:00:00", count=2)
    (july,) = cycles.close_due(as_of=at("2024-08-01T02:00:00")).invoices
    assert metered_lines(july) == [("A — API calls", 2, 100, 2), ("B — API calls", 0, 0, 0)]
    assert sum(line[2] for inv in (april, may, june, july) for line in metered_lines(inv)) == (
        500 + 10 * 100 + 2 * 50
    )


def test_late_units_of_a_returned_price_join_its_current_period(plans, customer, send):
    """A → B in April, B → A in May: April's late A units join May's A line (A applies again)."""
    a, b = plans
    subscription = subscriptions.create_subscription(
        customer=customer, product=a, started_at=START
    )
    send("api.call", "ada", "2024-04-03T10:00:00", count=8)
    plan_changes.change_product(subscription, b, at=at("2024-04-10T00:00:00"))
    cycles.close_due(as_of=at("2024-05-01T02:00:00"))
    plan_changes.change_product(subscription, a, at=at("2024-05-10T00:00:00"))
    send("api.call", "ada", "2024-04-05T10:00:00")  # late, April's A part
    send("api.call", "ada", "2024-05-20T10:00:00", count=3)
    (may,) = cycles.close_due(as_of=at("2024-06-01T02:00:00") + timedelta(hours=1)).invoices
    assert metered_lines(may) == [("B — API calls", 0, 0, 0), ("A — API calls", 4, 900, 1)]


def test_catalog_price_spec_is_unchanged(api_calls, org):
    # guards the fixture's arithmetic: 8 → 1300, 16 → 1800 on a fresh product
    product = catalog.create_product(organization=org, name="C", prices=[graduated(api_calls)])
    price = product.prices.get()
    assert [pricing.metered_amount(tiers=price.tiers, units=u) for u in (8, 9, 16)] == [
        1300,
        1400,
        1800,
    ]
