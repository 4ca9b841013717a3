"""A `once` discount is used once: sending the same discount again does not bring it back."""

import pytest

from billing import cycles, discounts, subscriptions
from billing.models import Discount
from tests.billing.conftest import at, fixed_price

pytestmark = pytest.mark.django_db


def discount_cents(subscription):
    return [
        int(invoice.discount_amount.amount * 100)
        for invoice in subscription.invoices.order_by("sequence")
    ]


def test_patching_the_same_once_discount_does_not_reset_it(org, api, make_product, customer):
    product = make_product(fixed_price(2000), name="Pro")
    five_off = discounts.create_discount(
        organization=org,
        name="$5 off once",
        type="fixed",
        amount=500,
        currency="USD",
        duration="once",
    )
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00"), discount=five_off
    )
    assert discount_cents(subscription) == [500]
    response = api.patch(
        f"/v1/subscriptions/{subscription.pk}", {"discount_id": str(five_off.pk)}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["discount_id"] == str(five_off.pk)
    upcoming = api.get(f"/v1/subscriptions/{subscription.pk}/upcoming").json()
    assert (upcoming["discount_amount"], upcoming["total_amount"]) == (0, 2000)
    cycles.close_due(as_of=at("2024-03-01T02:00:00"))
    assert discount_cents(subscription) == [500, 0, 0]  # one −500 only
    assert Discount.objects.get(pk=five_off.pk).redemptions_count == 1


def test_a_different_discount_is_a_new_redemption_and_applies(org, api, make_product, customer):
    product = make_product(fixed_price(2000), name="Pro")
    first, second = (
        discounts.create_discount(
            organization=org, name=name, type="fixed", amount=500, currency="USD", duration="once"
        )
        for name in ("first", "second")
    )
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00"), discount=first
    )
    response = api.patch(
        f"/v1/subscriptions/{subscription.pk}", {"discount_id": str(second.pk)}, format="json"
    )
    assert response.status_code == 200, response.json()
    cycles.close_due(as_of=at("2024-03-01T02:00:00"))
    assert discount_cents(subscription) == [500, 500, 0]
    assert [d.redemptions_count for d in Discount.objects.order_by("name")] == [1, 1]
