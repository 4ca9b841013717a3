"""Units billed are stored exactly: a fraction billed in one period never shifts a later period
across a tier bound. The tiers are the contract's examples (docs/billing.md):

- graduated: 0–10 @ 1000 + 200 flat, 11–20 @ 500 + 300 flat, 21+ @ 500 + 300 flat (10 → 10200);
- volume: 0–100 @ 200 + 1000 flat, 101–200 @ 100, 201+ @ 50 + 5000 flat (100 → 21000)."""

from decimal import Decimal

import pytest

from billing import cycles, subscriptions
from billing.catalog import PriceSpec
from billing.models import SubscriptionPrice
from tests.billing.conftest import at

pytestmark = pytest.mark.django_db

GRADUATED = {
    "type": "graduated",
    "tiers": [
        {"bound": 10, "unit_amount": "1000", "flat_amount": 200},
        {"bound": 20, "unit_amount": "500", "flat_amount": 300},
        {"bound": None, "unit_amount": "500", "flat_amount": 300},
    ],
}
VOLUME = {
    "type": "volume",
    "tiers": [
        {"bound": 100, "unit_amount": "200", "flat_amount": 1000},
        {"bound": 200, "unit_amount": "100"},
        {"bound": None, "unit_amount": "50", "flat_amount": 5000},
    ],
}
FRACTION = "0.30000000000000004"


@pytest.mark.parametrize(
    ("tiers", "september_units", "august_cents", "september_cents"),
    [(GRADUATED, 10, 500, 10200), (VOLUME, 100, 1060, 21000)],
    ids=["graduated", "volume"],
)
def test_a_fraction_billed_in_august_does_not_move_september_across_a_bound(
    make_product, customer, tokens, send, tiers, september_units, august_cents, september_cents
):
    product = make_product(
        PriceSpec(amount_type="metered_tiers", meter_id=tokens.pk, tiers=tiers), name="Tokens"
    )
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-08-01T00:00:00")
    )
    send("llm", "ada", "2024-08-10T00:00:00", tokens=Decimal(FRACTION))
    (august,) = cycles.close_due(as_of=at("2024-09-01T02:00:00")).invoices
    assert int(august.total.amount * 100) == august_cents
    billed = SubscriptionPrice.objects.get(subscription=subscription).billed_units
    assert billed == Decimal(FRACTION)  # exactly, not 0.300000000000
    send("llm", "ada", "2024-09-10T00:00:00", tokens=september_units)
    (september,) = cycles.close_due(as_of=at("2024-10-01T02:00:00")).invoices
    (line,) = september.lines.all()
    assert line.quantity == september_units
    assert int(september.total.amount * 100) == september_cents
